"""Multi-node training: the `launch:` fields of a recipe stage, the `accelerate launch` line each machine runs, and
two "machines" on localhost (two `aloekit run` launchers, machine ranks 0 and 1, one CPU process each, gloo)
whose SFT equals a single-process run with the same global batch and seed."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, one_line_error, save_tiny_llama
from pydantic import ValidationError
from safetensors.torch import load_file

from aloekit.errors import UserError
from aloekit.recipe import RecipeConfig, registry
from aloekit.recipe.config import Launch
from aloekit.recipe.plan import build_plan
from aloekit.recipe.run import JoinFailed, Machine, apply_machine, wait_for_launch
from aloekit.recipe.stages import LAUNCH_FILE, launch_command

CLI = [sys.executable, "-m", "aloekit.cli"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_multinode"), real_tokenizer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(tiny_dir, out, launch=None, batch_size=2) -> dict:
    """data -> sft on the tiny model, sft launched on two machines of one process each. No dropout: each process
    draws its own masks, so a 2-process run could not equal a 1-process one with it."""
    return {
        "name": "multinode", "output": str(out), "seed": 0, "models": {"base": str(tiny_dir)},
        "stages": {
            "data": {"kind": "data", "config": {"sources": [{"name": "demo_qa"}], "cot": {"enabled": False},
                                                "decontam": {"enabled": False}}},
            "sft": {"kind": "sft", "config": {
                "model": "base", "dataset": "@data", "method": "lora", "precision": "fp32", "max_length": 64,
                "save_steps": 100, "eval_fraction": 0.0, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                "optim": {"lr": 0.003, "max_steps": 3, "batch_size": batch_size}},
                "launch": launch if launch is not None else {"num_processes": 2, "num_machines": 2}},
        },
        "evaluation": {"models": []},
        "report": False,
    }


def write(path: Path, r: dict) -> Path:
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def cli(*args, timeout=300):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)


# --- the accelerate command line -------------------------------------------------------------------------------

def test_launch_command_of_each_machine():
    sft = registry.get("sft")
    two = Launch(num_processes=16, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
                 main_process_port=29600)
    cmd = launch_command(sft, Path("/runs/x/stage_config.yaml"), two)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    flags = cmd[3:cmd.index("-m", 3)]
    assert flags == ["--num_processes", "16", "--num_machines", "2", "--multi_gpu", "--machine_rank", "1",
                     "--main_process_ip", "10.0.0.1", "--main_process_port", "29600"]
    assert cmd[cmd.index("-m", 3):] == ["-m", "aloekit.cli", "train", "sft", "/runs/x/stage_config.yaml"]

    # a config file names the launcher itself: no --multi_gpu, which would override DeepSpeed or FSDP
    ds = str(REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml")
    cmd = launch_command(registry.get("dpo"), Path("c.yaml"), two.model_copy(update={"accelerate_config": ds}))
    assert "--multi_gpu" not in cmd and cmd[cmd.index("--config_file") + 1] == ds
    assert cmd[cmd.index("--deepspeed_multinode_launcher") + 1] == "standard"
    assert cmd[-3:] == ["train", "dpo", "c.yaml"]

    # one machine: no rank or address (accelerate's own defaults), and a plain DDP launch still starts
    # num_processes processes on a host with fewer than two GPUs
    one = launch_command(sft, Path("c.yaml"), Launch(num_processes=2))
    assert "--machine_rank" not in one and "--main_process_ip" not in one and "--multi_gpu" in one
    fsdp = str(REPO / "configs" / "accelerate" / "fsdp.yaml")
    cmd = launch_command(sft, Path("c.yaml"), Launch(accelerate_config=fsdp, num_processes=16, num_machines=2,
                                                     main_process_ip="n0"))
    assert "--deepspeed_multinode_launcher" not in cmd and "--multi_gpu" not in cmd
    assert cmd[cmd.index("--machine_rank") + 1] == "0" and "--main_process_port" not in cmd


@pytest.mark.parametrize("fields, fragment", [
    ({"num_processes": 3, "num_machines": 2}, "num_processes: 3 processes do not split evenly over num_machines 2"),
    ({"num_processes": 1, "num_machines": 2}, "num_processes: 1 processes do not split evenly"),
    ({"num_processes": 4, "num_machines": 2, "machine_rank": 2}, "machine_rank: 2 is not below num_machines 2"),
    ({"num_processes": 2, "main_process_port": 70000}, "main_process_port"),
])
def test_launch_validation(fields, fragment):
    with pytest.raises(ValidationError, match=fragment):
        Launch(**fields)


def test_where_machines_meet_is_not_part_of_the_stage_key(tiny_dir, tmp_path):
    """Every machine, and every job, must find the same stage directories; old runs keep their keys."""
    def keys(launch):
        cfg = RecipeConfig.model_validate(recipe(tiny_dir, tmp_path / "o", launch))
        return [s.key for s in build_plan(cfg).stages]

    base = keys({"num_processes": 2, "num_machines": 2})
    assert keys({"num_processes": 2, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.1.2.3",
                 "main_process_port": 29999}) == base
    assert keys({"num_processes": 4, "num_machines": 2}) != base  # a different global batch is different work
    assert Launch(num_processes=2, num_machines=2, machine_rank=1, main_process_ip="h").model_dump() == {
        "accelerate_config": None, "num_processes": 2, "num_machines": 2}


def test_command_line_machine_flags(tiny_dir, tmp_path):
    cfg = RecipeConfig.model_validate(recipe(tiny_dir, tmp_path / "o"))
    plan = build_plan(cfg)
    assert apply_machine(plan, Machine(rank=1, main_process_ip="10.0.0.9", main_process_port=29700)) == 1
    sft = plan.by_name()["sft"].launch
    assert (sft.machine_rank, sft.main_process_ip, sft.main_process_port) == (1, "10.0.0.9", 29700)
    assert plan.by_name()["data"].launch is None
    with pytest.raises(UserError, match="stages.sft.launch with --machine-rank 2: machine_rank: 2 is not below"):
        apply_machine(build_plan(cfg), Machine(rank=2))
    with pytest.raises(UserError, match="machine_rank: Input should be greater than or equal to 0"):
        apply_machine(build_plan(cfg), Machine(rank=-1))
    single = RecipeConfig.model_validate(recipe(tiny_dir, tmp_path / "o", {"num_processes": 2}))
    with pytest.raises(UserError, match="--main-process-ip: no stage of this recipe runs on more than one machine"):
        apply_machine(build_plan(single), Machine(main_process_ip="h"))


def test_bad_multinode_input_is_one_line_before_any_work(tiny_dir, tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path / "r.yaml", recipe(tiny_dir, out))
    one_line_error(cli("run", path), "stages.sft.launch.main_process_ip: needed with num_machines 2",
                   "--main-process-ip")
    one_line_error(cli("run", path, "--machine-rank", "2", "--main-process-ip", "h"),
                   "machine_rank: 2 is not below num_machines 2")
    one_line_error(cli("run", path, "--join-timeout", "0"), "--join-timeout")
    bad = write(tmp_path / "bad.yaml", recipe(tiny_dir, out, {"num_processes": 3, "num_machines": 2}))
    one_line_error(cli("run", bad), "stages.sft.launch", "num_processes: 3 processes do not split evenly")
    assert not out.exists()
    # the address is known only when the job starts: a dry run plans without it
    r = cli("run", path, "--dry-run")
    assert r.returncode == 0, r.stderr[-2000:]


# --- a machine of rank > 0 waiting for machine 0 ---------------------------------------------------------------

def test_worker_waits_for_a_fresh_launch_file_and_stops_when_machine_0_ends(tiny_dir, tmp_path):
    out = tmp_path / "out"
    plan = build_plan(RecipeConfig.model_validate(recipe(tiny_dir, out)))
    apply_machine(plan, Machine(rank=1, main_process_ip="127.0.0.1"))
    st = plan.by_name()["sft"]
    st.dir.mkdir(parents=True)
    # a launch file left by a run of machine 0 killed long ago is no launch of this run
    (st.dir / LAUNCH_FILE).write_text(json.dumps({"key": st.key, "written": time.time() - 7200}))
    with pytest.raises(JoinFailed, match=r"did not launch sft within 0.3 s .*same filesystem"):
        wait_for_launch(plan, st, timeout=0.3, poll=0.05)

    # a manifest that had ended before the worker began is an earlier run's; one that ends later is machine 0's
    (out / "manifest.json").write_text(json.dumps({"status": "failed", "started": "earlier"}))

    def machine_0_fails():
        time.sleep(0.4)
        (out / "manifest.json").write_text(json.dumps({"status": "running", "started": "now"}))
        time.sleep(0.2)
        (out / "manifest.json").write_text(json.dumps({"status": "failed", "started": "now"}))

    t = threading.Thread(target=machine_0_fails)
    t.start()
    t0 = time.time()
    with pytest.raises(JoinFailed, match=r"machine 1: machine 0's run ended \(failed\) before it launched sft"):
        wait_for_launch(plan, st, timeout=30, poll=0.05)
    t.join()
    assert 0.5 < time.time() - t0 < 10

    (out / "manifest.json").write_text(json.dumps({"status": "running", "started": "later"}))
    fresh = {"key": st.key, "written": time.time(), "main_process_port": None}
    (st.dir / LAUNCH_FILE).write_text(json.dumps(fresh))
    assert wait_for_launch(plan, st, timeout=5, poll=0.05) == fresh


# --- two machines on localhost ----------------------------------------------------------------------------------

def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_two_machines_on_localhost_equal_one_process_with_the_same_global_batch(tiny_dir, tmp_path):
    """Machine 1 starts first and waits; machine 0 runs the data stage alone, then both launch sft (one process
    each, gloo). The saved model equals one process with batch 2 x 2, the same seed and the same data order."""
    out = tmp_path / "out"
    path = write(tmp_path / "recipe.yaml", recipe(tiny_dir, out))
    where = ["--main-process-ip", "127.0.0.1", "--main-process-port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    worker = subprocess.Popen([*CLI, "run", str(path), "--machine-rank", "1", *where], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        main = subprocess.run([*CLI, "run", str(path), *where], capture_output=True, text=True, timeout=400, env=env)
        w_out, w_err = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
    seconds = time.time() - t0
    assert main.returncode == 0, main.stderr[-4000:]
    assert worker.returncode == 0, w_err[-4000:]

    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "done" and [s["status"] for s in m["stages"]] == ["done", "done"]
    sft_dir = out / next(s["dir"] for s in m["stages"] if s["name"] == "sft")
    metrics = json.loads((sft_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert not (sft_dir / LAUNCH_FILE).exists()  # a finished launch leaves nothing for a later worker to join
    # machine 1 joined sft only: it waited, never ran the data stage, wrote no recipe files
    assert "waiting for machine 0 to launch sft" in w_err and "joined sft" in w_err, w_err[-3000:]
    assert "(data) ->" not in w_err and "(data) ->" in main.stderr

    # the same stage config on one process, with the global batch (2 machines x 2) in one batch
    cfg = yaml.safe_load((sft_dir / "stage_config.yaml").read_text())
    cfg["optim"]["batch_size"] = 4
    cfg["output"] = str(tmp_path / "single")
    from aloekit.train.config import SFTConfig
    from aloekit.train.sft import run as sft_run
    single = sft_run(SFTConfig.model_validate(cfg))
    assert single["world_size"] == 1 and single["steps"] == 3 and single["tokens_seen"] == metrics["tokens_seen"]

    two, one, start = weights(sft_dir / "model"), weights(tmp_path / "single" / "model"), weights(tiny_dir)
    assert two.keys() == one.keys()
    diff = max((two[k] - one[k]).abs().max().item() for k in two)
    moved = max((two[k] - start[k]).abs().max().item() for k in two if k in start)
    print(f"two machines vs one process: max |diff| {diff:.2e}, training moved weights by up to {moved:.2e}; "
          f"{seconds:.0f} s for both machines")
    assert moved > 100 * 1e-5  # training changed the model far more than the tolerance below
    for k in two:
        assert torch.allclose(two[k], one[k], rtol=0, atol=1e-5), k


def test_slurm_examples_pass_every_machine_flag():
    train = (REPO / "configs" / "slurm" / "train_sft.sbatch").read_text()
    for flag in ("--num_machines", "--machine_rank $SLURM_NODEID", "--main_process_ip", "--main_process_port",
                 "--num_processes", "--deepspeed_multinode_launcher standard"):
        assert flag in train, flag
    job = (REPO / "configs" / "slurm" / "recipe_multinode.sbatch").read_text()
    for flag in ("--machine-rank $SLURM_NODEID", "--main-process-ip", "--main-process-port"):
        assert flag in job, flag
    assert "written, unrun" in train.lower() and "written, unrun" in job.lower()
