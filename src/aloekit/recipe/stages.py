"""Running one planned stage through its `Stage` object (aloekit/stage.py, looked up in registry.py): recipe
config dict -> the stage's own Config -> `run(cfg, inputs, out)` -> the run directory's manifest metrics.

Nothing here knows a particular kind: each stage reads and writes the same artifacts as its own CLI verb, so a
recipe run can be inspected, resumed or redone stage by stage with the stage commands.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import dump_config
from ..extras import require
from ..stage import Stage, metrics


def build_config(stage: Stage, cfg: dict, where: str, output: Path | None) -> Any:
    """Validate a stage's config with its own class; `output` None validates only (dry run). A config with an
    `output` field writes there: the stage's directory."""
    data = dict(cfg)
    if "output" in stage.config.model_fields:
        data["output"] = str(output) if output else "<stage dir>"
    return stage.validate(data, where)


def validate_static(stage: Stage, obj: Any, where: str) -> None:
    """Checks that need no model and no data: unknown sources, tasks, strategies."""
    if stage.check is not None:
        stage.check(obj, where)


def require_extras(stage: Stage, obj: Any, launch, where: str) -> None:
    """What a stage needs beyond the core install; the recipe checks its stages before the first one runs."""
    if stage.requires is not None:
        stage.requires(obj, f"{where} ({stage.kind})")
    if launched(stage, launch) and launch.accelerate_config and _deepspeed(launch.accelerate_config):
        require("gpu", "deepspeed", what=f"{where}.launch.accelerate_config {launch.accelerate_config}")


def launched(stage: Stage, launch) -> bool:
    """Whether the stage runs as a distributed job (its command under `accelerate launch`)."""
    return (launch is not None and stage.command is not None
            and (launch.num_processes > 1 or bool(launch.accelerate_config)))


def _deepspeed(accelerate_config: str) -> bool:
    import yaml
    cfg = yaml.safe_load(Path(accelerate_config).read_text(encoding="utf-8"))
    return isinstance(cfg, dict) and cfg.get("distributed_type") == "DEEPSPEED"


def run_stage(stage: Stage, obj: Any, inputs: dict[str, Path], out: Path, launch=None,
              key: str | None = None) -> dict[str, float]:
    """Run one stage into `out`; returns the metrics map of the run directory's manifest. `key`: the stage key,
    named in the launch file that machines of rank > 0 wait for."""
    if launched(stage, launch):
        _launch(stage, obj, out, launch, key)
    else:
        out = Path(stage.run(obj, inputs, out))
    return metrics(out)


LAUNCH_FILE = "launch.json"  # in the stage directory while machine 0's launch of a multi-machine stage runs
CONFIG_FILE = "stage_config.yaml"


def launch_command(stage: Stage, cfg_file: Path, launch) -> list[str]:
    """The `accelerate launch` command line of one machine: the stage's own verb on `cfg_file`."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes),
           "--num_machines", str(launch.num_machines)]
    if launch.accelerate_config:
        cmd += ["--config_file", launch.accelerate_config]
        if launch.num_machines > 1 and _deepspeed(launch.accelerate_config):
            # every machine runs its own launcher (a recipe worker, an srun task); DeepSpeed's default, pdsh, would
            # have machine 0 start the others over ssh a second time
            cmd += ["--deepspeed_multinode_launcher", "standard"]
    else:
        # without it accelerate picks its simple launcher whenever it sees fewer than two GPUs (a CPU host, one
        # GPU per node) and that starts ONE process whatever num_processes says; --multi_gpu is its torchrun
        # launcher, whose processes fall back to CPU and gloo on a host without GPUs
        cmd += ["--multi_gpu"]
    if launch.num_machines > 1:
        cmd += ["--machine_rank", str(launch.machine_rank), "--main_process_ip", str(launch.main_process_ip)]
    if launch.main_process_port is not None:
        cmd += ["--main_process_port", str(launch.main_process_port)]
    return cmd + ["-m", "aloekit.cli", *stage.command, str(cfg_file)]


def _launch(stage: Stage, obj: Any, out: Path, launch, key: str | None) -> None:
    """A distributed stage: the same `aloekit` verb under `accelerate launch`. On several machines, the launch
    file tells the other machines' `aloekit run --machine-rank K` that this stage's job is starting now."""
    from ..io import atomic_write_json, atomic_write_text
    cfg_file = out / CONFIG_FILE
    atomic_write_text(cfg_file, dump_config(obj))
    cmd = launch_command(stage, cfg_file, launch)
    announce = launch.num_machines > 1
    if announce:
        atomic_write_json(out / LAUNCH_FILE, {
            "key": key, "kind": stage.kind, "written": time.time(), "config": CONFIG_FILE,
            "num_processes": launch.num_processes, "num_machines": launch.num_machines,
            "main_process_ip": launch.main_process_ip, "main_process_port": launch.main_process_port})
    try:
        r = subprocess.run(cmd)
    finally:
        if announce:  # a finished (or failed) launch is nothing to join: a rerun writes a fresh file
            (out / LAUNCH_FILE).unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(f"{stage.kind} stage: `{' '.join(cmd)}` exited with {r.returncode}")


def join_launch(stage: Stage, out: Path, launch) -> None:
    """A machine of rank > 0: the launch machine 0 announced in `out`, with this machine's rank."""
    cmd = launch_command(stage, out / CONFIG_FILE, launch)
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{stage.kind} stage (machine {launch.machine_rank}): `{' '.join(cmd)}` exited with "
                           f"{r.returncode}")
