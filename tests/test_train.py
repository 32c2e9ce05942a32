"""SFT and staged DPO on a tiny random Llama (fast, exact), including kill -9 + resume and 2-process DDP."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import save_tiny_llama
from safetensors.torch import load_file

from aloekit.config import load_config
from aloekit.errors import UserError
from aloekit.train import dpo, sft
from aloekit.train.config import DPOConfig, SFTConfig
from aloekit.train.data import _hh_to_messages, to_prompt_completion


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"), real_tokenizer)


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    rows = [{"messages": [{"role": "user", "content": f"Normal range of serum sodium? (case {i})"},
                          {"role": "assistant", "content": "135 to 145 mmol/L."}], "source": "demo"}
            for i in range(48)]
    p = tmp_path_factory.mktemp("data") / "sft.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def sft_cfg(tiny_dir, data, out, **kw):
    base = dict(model=str(tiny_dir), dataset=str(data), output=str(out), method="lora", precision="fp32",
                max_length=64, save_steps=2, eval_fraction=0.25, lora={"r": 4, "alpha": 8},
                optim={"lr": 0.01, "max_steps": 4, "batch_size": 8})
    for k, v in kw.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return SFTConfig.model_validate(base)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_messages_become_prompt_completion():
    import datasets
    ds = datasets.Dataset.from_list([{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                                                   {"role": "assistant", "content": "a"}], "extra": 1}])
    row = to_prompt_completion(ds, "x")[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["completion"][0]["content"] == "a"


def test_hh_rlhf_dialogues_split_into_turns(data_dir):
    with gzip.open(data_dir / "hh_rlhf_harmless_base_test" / "test.jsonl.gz", "rt") as f:
        row = json.loads(f.readline())
    c = _hh_to_messages(row["chosen"])
    assert c[0]["role"] == "user" and c[-1]["role"] == "assistant"
    assert all(a["role"] != b["role"] for a, b in zip(c, c[1:]))
    assert "Human:" not in c[0]["content"]


def test_sft_lowers_validation_loss_and_saves_loadable_model(tiny_dir, sft_data, tmp_path):
    m = sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "run"))
    assert m["eval_loss_after"] < m["eval_loss_before"] - 0.1
    assert m["steps"] == 4 and m["tokens_seen"] > 0
    out = tmp_path / "run" / "model"
    assert not any("lora" in k for k in weights(out))  # merged into full weights
    from aloekit.backends import load_backend
    be = load_backend(name=str(out), dtype="float32")
    assert be.tok.chat_template and be.generate([[{"role": "user", "content": "hi"}]])[0][0].completion_tokens > 0
    man = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert man["status"] == "done" and man["metrics"]["eval_loss_after"] == m["eval_loss_after"]
    # a rerun with the same config skips the finished stage
    t = time.time()
    assert sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "run")) == m and time.time() - t < 30


def test_kill9_then_resume_matches_uninterrupted(tiny_dir, sft_data, tmp_path):
    """Full fine-tune, fp32: the resumed run restores optimizer, scheduler, RNG and data position, so its final
    weights equal the uninterrupted run's up to float reduction-order noise (tolerance 1e-5)."""
    kw = dict(method="full", optim={"lr": 0.001, "max_steps": 8}, save_steps=2, eval_fraction=0.0)
    ref = sft_cfg(tiny_dir, sft_data, tmp_path / "ref", **kw)
    sft.run(ref)
    cfg = sft_cfg(tiny_dir, sft_data, tmp_path / "cut", **kw)
    (tmp_path / "cut.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([sys.executable, "-m", "aloekit.cli", "-q", "train", "sft", str(tmp_path / "cut.yaml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 300
    while not (ck / "checkpoint-4" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "model").exists()
    (ck / "checkpoint-99").mkdir()  # a checkpoint cut off mid-write: must be ignored and removed
    m = sft.run(load_config(SFTConfig, tmp_path / "cut.yaml"))
    assert m["resumed_from"] is not None and int(m["resumed_from"].rsplit("-", 1)[1]) >= 4
    assert not (ck / "checkpoint-99").exists()
    a, b = weights(tmp_path / "ref" / "model"), weights(tmp_path / "cut" / "model")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_bad_inputs_are_one_line_errors(tiny_dir, sft_data, tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(UserError, match="needs columns prompt\\+completion, messages, or text; found answer, question"):
        sft.run(sft_cfg(tiny_dir, bad, tmp_path / "r1"))
    with pytest.raises(UserError, match="lora.target_modules: qkv_proj not in model; its linear layers are .*q_proj"):
        sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "r2", lora={"target_modules": ["qkv_proj"]}))
    with pytest.raises(UserError, match="qlora needs a CUDA GPU"):
        sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "r3", method="qlora"))
    # a resume path from another run
    other = tmp_path / "other" / "checkpoints" / "checkpoint-2"
    other.mkdir(parents=True)
    (other / "trainer_state.json").write_text("{}")
    (tmp_path / "other" / "train_run.json").write_text(json.dumps({"config_hash": "different"}))
    with pytest.raises(UserError, match="comes from another run"):
        sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "r4", resume=str(other)))
    # a chat template whose prompt rendering changes once the answer follows cannot mask the prompt
    tdir = tmp_path / "badtmpl"
    import shutil
    shutil.copytree(tiny_dir, tdir)
    tc = json.loads((tdir / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}"
    (tdir / "tokenizer_config.json").write_text(json.dumps(tc))
    (tdir / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(UserError, match="cannot be masked"):
        sft.run(sft_cfg(tdir, sft_data, tmp_path / "r5"))
    # not enough disk for checkpoints: refuse before training
    import shutil as sh
    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(UserError, match="GB free, training needs"):
        sft.run(sft_cfg(tiny_dir, sft_data, tmp_path / "r6"))


def test_dpo_two_stages_chain_and_skip_on_rerun(tiny_dir, data_dir, tmp_path):
    hh = str(data_dir / "hh_rlhf_harmless_base_test" / "test.jsonl.gz")
    cfg = DPOConfig.model_validate(dict(
        model=str(tiny_dir), output=str(tmp_path / "dpo"), precision="fp32", max_length=96, save_steps=10,
        stages=[dict(name="prefs", dataset=hh, max_pairs=24, eval_fraction=0.25, optim={"lr": 5e-3, "max_steps": 3,
                                                                                         "batch_size": 6}),
                dict(name="safety", dataset=hh, max_pairs=16, eval_fraction=0.25, beta=0.2,
                     optim={"lr": 1e-4, "max_steps": 1, "batch_size": 4})]))
    r = dpo.run(cfg)
    s1, s2 = r["stages"]
    assert s2["policy"] == s1["model"] and r["final_model"] == s2["model"]
    assert s1["before"]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start
    # a random tiny model cannot generalise from 18 pairs; it must at least fit them (held-out: real-model benchmark)
    assert s1["train_last_log"]["rewards/margins"] > 0 and s1["train_last_log"]["rewards/accuracies"] > 0.5
    assert s1["after"]["rewards/margins"] != s1["before"]["rewards/margins"]
    w1, w2 = weights(Path(s1["model"])), weights(Path(s2["model"]))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # stage 2 trained on top of stage 1
    t = time.time()
    assert dpo.run(cfg)["stages"] == r["stages"] and time.time() - t < 30


def test_dpo_rejects_non_preference_data(tiny_dir, sft_data, tmp_path):
    cfg = DPOConfig.model_validate(dict(model=str(tiny_dir), output=str(tmp_path / "d"),
                                        stages=[dict(name="s", dataset=str(sft_data))]))
    with pytest.raises(UserError, match="preference data needs columns prompt\\+chosen\\+rejected"):
        dpo.run(cfg)


def test_two_process_ddp_on_cpu(tiny_dir, sft_data, tmp_path):
    cfg = sft_cfg(tiny_dir, sft_data, tmp_path / "ddp", optim={"max_steps": 2, "batch_size": 4}, eval_fraction=0.0)
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29533", "-m", "aloekit.cli", "-q", "train", "sft", str(tmp_path / "ddp.yaml")],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 2
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()


def test_shipped_training_configs_validate():
    root = Path(__file__).resolve().parents[1] / "configs" / "train"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        cfg = load_config(DPOConfig if f.name.startswith("dpo") else SFTConfig, f)
        if "8b" in f.name or "7b" in f.name:
            assert cfg.precision == "bf16" and cfg.gradient_checkpointing and cfg.method == "full"


def test_adapter_merge_from_gathered_weights_matches_in_place_merge(tiny_dir, tmp_path):
    """The FSDP / QLoRA save path (adapter from a gathered state dict, merged into a copy of the base read from
    disk) writes the same weights as merging in place."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aloekit.train.common import save_final
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_final(model, tok, tmp_path / "gathered", merge_lora=True, state_dict=state)
    save_final(model, tok, tmp_path / "in_place", merge_lora=True)
    a, b = weights(tmp_path / "gathered"), weights(tmp_path / "in_place")
    base = weights(tiny_dir)
    assert a.keys() == b.keys() == base.keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(a[q], base[q])  # the adapter was really merged
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert not list((tmp_path / "gathered").glob("_adapter*"))


def test_eval_before_under_fsdp_runs_at_train_begin(tmp_path):
    """FSDP2 refuses evaluate() before train() (seen on a GPU): there the measurement moves into train()'s start."""
    from aloekit.train.common import eval_before

    class FakeTrainer:
        is_fsdp_enabled = True

        def __init__(self):
            self.callbacks, self.calls = [], 0

        def add_callback(self, cb):
            self.callbacks.append(cb)

        def evaluate(self):
            self.calls += 1
            return {"eval_loss": 1.5}

    t = FakeTrainer()
    eval_before(t, tmp_path / "before.json", has_eval=True, main=True)
    assert t.calls == 0 and len(t.callbacks) == 1
    t.callbacks[0].on_train_begin(None, None, None)
    assert t.calls == 1 and json.loads((tmp_path / "before.json").read_text()) == {"eval_loss": 1.5}
    assert t.aloekit_eval_before_s >= 0
    t.is_fsdp_enabled = False
    eval_before(t, tmp_path / "b2.json", has_eval=True, main=True)
    assert t.calls == 2 and len(t.callbacks) == 1
