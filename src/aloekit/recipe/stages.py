"""Running one planned stage through its `Stage` object (aloekit/stage.py, looked up in registry.py): recipe
config dict -> the stage's own Config -> `run(cfg, inputs, out)` -> the run directory's manifest metrics.

Nothing here knows a particular kind: each stage reads and writes the same artifacts as its own CLI verb, so a
recipe run can be inspected, resumed or redone stage by stage with the stage commands.
"""

from __future__ import annotations

import subprocess
import sys
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


def run_stage(stage: Stage, obj: Any, inputs: dict[str, Path], out: Path, launch=None) -> dict[str, float]:
    """Run one stage into `out`; returns the metrics map of the run directory's manifest."""
    if launched(stage, launch):
        _launch(stage, obj, out, launch)
    else:
        out = Path(stage.run(obj, inputs, out))
    return metrics(out)


def _launch(stage: Stage, obj: Any, out: Path, launch) -> None:
    """A distributed stage: the same `aloekit` verb under `accelerate launch`."""
    from ..io import atomic_write_text
    cfg_file = out / "stage_config.yaml"
    atomic_write_text(cfg_file, dump_config(obj))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes),
           "--num_machines", str(launch.num_machines)]
    if launch.accelerate_config:
        cmd += ["--config_file", launch.accelerate_config]
    cmd += ["-m", "aloekit.cli", *stage.command, str(cfg_file)]
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{stage.kind} stage: `{' '.join(cmd)}` exited with {r.returncode}")
