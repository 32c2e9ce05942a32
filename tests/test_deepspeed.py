"""DeepSpeed ZeRO on the CPU (DeepSpeed's cpu accelerator, gloo, 2 processes): the final model that SFT, DPO stages
and a recipe stage save is complete and loadable. ZeRO-3 partitions every large parameter across the ranks, so a
plain `save_pretrained` on rank 0 writes zero-sized tensors (it did, before train/common.py gathered them); ZeRO-2
keeps whole parameters and must keep saving as before.

The saved weights are compared with what DeepSpeed itself holds: the fp32 master weights that deepspeed's
zero_to_fp32 rebuilds from the run's last checkpoint (the model computes in bf16 copies of them), or the LoRA
adapter that the Trainer's own checkpoint gathered.

DeepSpeed is not imported in the pytest process (its import sets up accelerator state); everything that needs it
runs in subprocesses.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, save_tiny_llama
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="deepspeed is not installed (extras gpu, dev): pip install deepspeed")

ZERO3 = REPO / "configs" / "accelerate" / "deepspeed_zero3.yaml"
ZERO2 = REPO / "configs" / "accelerate" / "deepspeed_zero2.yaml"
STEPS = 3

# On the CPU accelerate sets up torch.distributed itself and leaves DeepSpeed's own communication layer for
# deepspeed.initialize to start. A second model built before that (TRL's DPO reference model, under
# deepspeed.zero.Init) then sees a world of one process and fails DeepSpeed's batch-size check. On GPUs accelerate
# starts DeepSpeed's layer first, so this entry point is for the CPU test only.
CPU_ENTRY = """import runpy, sys
import deepspeed.comm
deepspeed.comm.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
sys.argv = ["aloekit", *sys.argv[1:]]
runpy.run_module("aloekit.cli", run_name="__main__")
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_ds"), real_tokenizer)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    rows = [{"messages": [{"role": "user", "content": f"Normal range of serum sodium? (case {i})"},
                          {"role": "assistant", "content": "135 to 145 mmol/L."}]} for i in range(48)]
    p = tmp_path_factory.mktemp("ds_data") / "sft.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def pref_data(tmp_path_factory):
    rows = [{"prompt": [{"role": "user", "content": f"Can I double my dose of drug {i}?"}],
             "chosen": [{"role": "assistant", "content": "No. Ask your doctor or pharmacist first."}],
             "rejected": [{"role": "assistant", "content": "Yes, take as much as you like."}]} for i in range(24)]
    p = tmp_path_factory.mktemp("ds_prefs") / "prefs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_config(tmp_path: Path, shipped: Path, **deepspeed_overrides) -> Path:
    """The shipped config, on the CPU with 2 processes (everything else as users get it)."""
    cfg = yaml.safe_load(shipped.read_text())
    cfg.update(num_processes=2, use_cpu=True, main_process_port=free_port())
    cfg["deepspeed_config"].update(deepspeed_overrides)
    p = tmp_path / f"accelerate_{shipped.stem}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def ds_env() -> dict:
    return {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}


def launch(tmp_path: Path, acc: Path, verb: str, cfg: dict, entry: list[str] | None = None):
    f = tmp_path / f"{verb}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    if entry is None:
        entry = ["-m", "aloekit.cli"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc), *entry,
           "-q", "train", verb, str(f)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ds_env())
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def sft_cfg(tiny_dir, data, out, **kw) -> dict:
    base = dict(model=str(tiny_dir), dataset=str(data), output=str(out), method="full", precision="bf16",
                max_length=64, save_steps=STEPS, eval_fraction=0.0, optim={"lr": 0.01, "max_steps": STEPS,
                                                                           "batch_size": 4})
    base.update(kw)
    return base


def fp32_masters(checkpoint: Path) -> dict:
    """DeepSpeed's own reconstruction of the full fp32 weights from a checkpoint's partitions."""
    out = checkpoint.parent / f"{checkpoint.name}_fp32.pt"
    code = ("import sys, torch\nfrom deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint\n"
            "torch.save(get_fp32_state_dict_from_zero_checkpoint(sys.argv[1]), sys.argv[2])")
    r = subprocess.run([sys.executable, "-c", code, str(checkpoint), str(out)], capture_output=True, text=True,
                       timeout=300, env=ds_env())
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out)


def assert_complete(folder: Path, tiny_dir: Path) -> dict:
    """A plain HF folder whose every weight has the base model's shape (none left partitioned), and that loads."""
    from transformers import AutoModelForCausalLM
    w = load_file(str(folder / "model.safetensors"))
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert w.keys() == base.keys()
    assert {k: tuple(v.shape) for k, v in w.items()} == {k: tuple(v.shape) for k, v in base.items()}
    model = AutoModelForCausalLM.from_pretrained(folder)
    ref = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    return w


@pytest.mark.parametrize("gather_flag", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_zero3_full_sft_saves_the_gathered_weights(tiny_dir, sft_data, tmp_path, gather_flag):
    """Full fine-tune: the saved weights are DeepSpeed's trained fp32 masters in the engine's bf16, whether or not
    the config asks the Trainer to gather 16-bit weights for its checkpoints (`zero3_save_16bit_model`)."""
    acc = accelerate_config(tmp_path, ZERO3, zero3_save_16bit_model=gather_flag)
    out = tmp_path / "sft"
    launch(tmp_path, acc, "sft", sft_cfg(tiny_dir, sft_data, out))
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    w = assert_complete(out / "model", tiny_dir)
    masters = fp32_masters(out / "checkpoints" / f"checkpoint-{STEPS}")
    base = load_file(str(tiny_dir / "model.safetensors"))
    for k, v in w.items():
        assert v.dtype == torch.bfloat16
        assert torch.equal(v, masters[k].to(torch.bfloat16)), k
    big = "model.embed_tokens.weight"  # above ZeRO-3's persistence threshold: partitioned, hence gathered
    assert not torch.equal(w[big].float(), base[big])


@pytest.mark.parametrize("merge_lora", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_zero3_lora_sft_saves_the_trained_adapter(tiny_dir, sft_data, tmp_path, merge_lora):
    """LoRA: the adapter gathered for the final save equals the one the Trainer's last checkpoint gathered; merged,
    it goes into a copy of the base read from disk by rank 0 alone (which must not wait on the other ranks)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    acc = accelerate_config(tmp_path, ZERO3)
    out = tmp_path / "lora"
    launch(tmp_path, acc, "sft", sft_cfg(tiny_dir, sft_data, out, method="lora", lora={"r": 4, "alpha": 8},
                                         merge_lora=merge_lora))
    ckpt = out / "checkpoints" / f"checkpoint-{STEPS}"
    trained = load_file(str(ckpt / "adapter_model.safetensors"))
    assert all(v.numel() > 0 for v in trained.values())
    if not merge_lora:
        saved = load_file(str(out / "model" / "adapter_model.safetensors"))
        assert saved.keys() == trained.keys()
        assert all(torch.equal(saved[k], trained[k]) for k in saved)
        return
    w = assert_complete(out / "model", tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="auto")
    want = PeftModel.from_pretrained(base, ckpt).merge_and_unload().state_dict()
    for k, v in w.items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=0)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(w[q], load_file(str(tiny_dir / "model.safetensors"))[q])


@pytest.mark.slow
def test_zero2_full_sft_still_saves_whole_weights(tiny_dir, sft_data, tmp_path):
    """ZeRO-2 partitions only optimizer state and gradients: the model saves itself, as the Trainer's checkpoint."""
    acc = accelerate_config(tmp_path, ZERO2)
    out = tmp_path / "z2"
    launch(tmp_path, acc, "sft", sft_cfg(tiny_dir, sft_data, out))
    w = assert_complete(out / "model", tiny_dir)
    ck = load_file(str(out / "checkpoints" / f"checkpoint-{STEPS}" / "model.safetensors"))
    assert all(torch.equal(w[k], ck[k]) for k in w)
    masters = fp32_masters(out / "checkpoints" / f"checkpoint-{STEPS}")
    assert all(torch.equal(w[k], masters[k].to(w[k].dtype)) for k in w)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["full", "lora"])
def test_zero3_dpo_stages_chain_on_complete_models(tiny_dir, pref_data, tmp_path, method):
    """Two DPO stages: stage 2 loads stage 1's saved model (as its policy and reference) on every rank, so the save
    must be complete and finished before the other ranks read it."""
    acc = accelerate_config(tmp_path, ZERO3)
    entry = tmp_path / "ds_cpu_entry.py"
    entry.write_text(CPU_ENTRY)
    out = tmp_path / "dpo"
    stage = {"dataset": str(pref_data), "eval_fraction": 0.25}
    cfg = dict(model=str(tiny_dir), output=str(out), method=method, precision="bf16", max_length=64, save_steps=10,
               lora={"r": 4, "alpha": 8},
               stages=[{**stage, "name": "prefs", "optim": {"lr": 5e-3, "max_steps": 2, "batch_size": 4}},
                       {**stage, "name": "safety", "beta": 0.2, "optim": {"lr": 1e-3, "max_steps": 1,
                                                                          "batch_size": 4}}])
    launch(tmp_path, acc, "dpo", cfg, entry=[str(entry)])
    m = json.loads((out / "metrics.json").read_text())
    s1, s2 = m["stages"]
    assert s2["policy"] == s1["model"]
    w1, w2 = assert_complete(Path(s1["model"]), tiny_dir), assert_complete(Path(s2["model"]), tiny_dir)
    base = load_file(str(tiny_dir / "model.safetensors"))
    assert any(not torch.equal(w1[k].float(), base[k].float()) for k in w1)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.slow
def test_recipe_sft_stage_under_zero3(tiny_dir, tmp_path):
    """A recipe stage with `launch: {accelerate_config: <ZeRO-3>}` runs the same verb under accelerate launch."""
    acc = accelerate_config(tmp_path, ZERO3)
    recipe = {
        "name": "zero3", "output": str(tmp_path / "run"), "seed": 0, "models": {"base": str(tiny_dir)},
        "stages": {
            "data": {"kind": "data", "config": {"sources": [{"name": "demo_qa"}], "cot": {"enabled": False},
                                                "decontam": {"enabled": False}}},
            "sft": {"kind": "sft", "config": {
                "model": "base", "dataset": "@data", "method": "lora", "precision": "bf16", "max_length": 64,
                "save_steps": 100, "eval_fraction": 0.0, "lora": {"r": 4, "alpha": 8},
                "optim": {"lr": 0.003, "max_steps": 2, "batch_size": 2}},
                "launch": {"accelerate_config": str(acc), "num_processes": 2}},
        },
        "evaluation": {"models": []},
        "report": False,
    }
    f = tmp_path / "recipe.yaml"
    f.write_text(yaml.safe_dump(recipe, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "aloekit.cli", "-q", "run", str(f)], capture_output=True, text=True,
                       timeout=900, env=ds_env())
    assert r.returncode == 0, r.stderr[-4000:]
    models = [p for p in (tmp_path / "run").rglob("model.safetensors") if p.parent.name == "model"]
    assert len(models) == 1, models
    assert_complete(models[0].parent, tiny_dir)
