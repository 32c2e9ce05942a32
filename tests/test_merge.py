"""Merging on tiny random Llamas: results equal an independent torch computation of each formula."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import save_tiny_llama
from safetensors.torch import load_file

from aloekit.errors import UserError
from aloekit.merge import MergeConfig, run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, real_tokenizer):
    """base + two 'fine-tunes' (independent random inits: arbitrary deltas) sharing the real tokenizer."""
    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for name, seed in (("base", 0), ("ft1", 1), ("ft2", 2)):
        out[name] = save_tiny_llama(root / name, real_tokenizer, seed)
    return out


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def merged(cfg: dict, tmp_path: Path, name: str = "run", **kw) -> dict[str, torch.Tensor]:
    out = tmp_path / name
    run(MergeConfig(output=str(out), **cfg), **kw)
    return weights(out / "model")


def assert_close(got: dict, want: dict, tol: float = 1e-6) -> None:
    assert got.keys() == want.keys()
    worst = max((got[k].float() - want[k].float()).abs().max().item() for k in want)
    assert worst <= tol, f"max abs difference {worst:.3g} > {tol}"


def trim_top(delta: torch.Tensor, density: float) -> torch.Tensor:
    """TIES trim: keep the density fraction of entries with the largest magnitude, zero the rest.

    Entries tied at the k-th largest magnitude are kept in flat order (a stable sort). TIES leaves that choice open;
    these fixtures do have such a tie (two equal |delta| at the cut in ft2's embedding), so the rule matters."""
    k = int(density * delta.numel())
    flat = delta.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().argsort(descending=True, stable=True)[:k]] = True
    return (flat * keep).view_as(delta)


def test_linear_matches_weighted_average(tiny, tmp_path):
    w = [0.7, 0.3]
    got = merged({"method": "linear", "base_model": None,
                  "models": [{"model": str(tiny["ft1"]), "weight": w[0]}, {"model": str(tiny["ft2"]), "weight": w[1]}]},
                 tmp_path)
    a, b = weights(tiny["ft1"]), weights(tiny["ft2"])
    assert_close(got, {k: (w[0] * a[k] + w[1] * b[k]) / sum(w) for k in a})


def test_task_arithmetic_matches_base_plus_weighted_deltas(tiny, tmp_path):
    w = [0.6, 0.4]
    got = merged({"method": "task_arithmetic", "base_model": str(tiny["base"]),
                  "models": [{"model": str(tiny["ft1"]), "weight": w[0]}, {"model": str(tiny["ft2"]), "weight": w[1]}]},
                 tmp_path)
    base, a, b = weights(tiny["base"]), weights(tiny["ft1"]), weights(tiny["ft2"])
    assert_close(got, {k: base[k] + w[0] * (a[k] - base[k]) + w[1] * (b[k] - base[k]) for k in base})


def test_ties_matches_trim_elect_disjoint_merge(tiny, tmp_path):
    w, d = [0.7, 0.5], 0.4
    got = merged({"method": "ties", "base_model": str(tiny["base"]),
                  "models": [{"model": str(tiny["ft1"]), "weight": w[0], "density": d},
                             {"model": str(tiny["ft2"]), "weight": w[1], "density": d}]}, tmp_path)
    base, fts = weights(tiny["base"]), [weights(tiny["ft1"]), weights(tiny["ft2"])]
    want = {}
    for k, t0 in base.items():
        # TIES (Yadav et al. 2023): trim each task vector, elect a sign per entry by the weighted sum, then
        # average only the entries that agree with it (normalized by their weights)
        deltas = torch.stack([wi * trim_top(ft[k] - t0, d) for ft, wi in zip(fts, w)])
        elected = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        agree = (deltas.sign() == elected).float()
        wsum = (torch.tensor(w).view(-1, *[1] * t0.dim()) * agree).sum(0)
        want[k] = t0 + (deltas * agree).sum(0) / torch.where(wsum == 0, torch.ones_like(wsum), wsum)
    assert_close(got, want)


def dare_cfg(tiny, seed, density=0.3, models=("ft1", "ft2")):
    return {"method": "dare_ties", "base_model": str(tiny["base"]), "seed": seed,
            "models": [{"model": str(tiny[m]), "weight": 1.0 / len(models), "density": density} for m in models]}


def test_dare_ties_is_deterministic_per_seed(tiny, tmp_path):
    first = merged(dare_cfg(tiny, seed=7), tmp_path, "a")
    again = merged(dare_cfg(tiny, seed=7), tmp_path, "b")
    other = merged(dare_cfg(tiny, seed=8), tmp_path, "c")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_dare_ties_sparsity_matches_density(tiny, tmp_path):
    d = 0.3
    got = merged(dare_cfg(tiny, seed=0, density=d, models=("ft1",)), tmp_path)
    base, ft = weights(tiny["base"]), weights(tiny["ft1"])
    kept = total = 0
    for k, t0 in base.items():
        delta = got[k] - t0
        nz = delta != 0
        kept += nz.sum().item()
        total += delta.numel()
        # DARE rescales what it keeps by ~1/density; mergekit 0.1.5 uses the exact factor that keeps the task
        # vector's L1 norm, so every kept entry is the original delta times one per-tensor constant
        full = ft[k] - t0
        if not full.any():  # e.g. norm weights both initialised to ones: nothing to drop or rescale
            assert not nz.any()
            continue
        scale = full.abs().sum() / full[nz].abs().sum()
        # ~1/density, to within the sampling noise of how many (and which) entries survived
        assert abs(scale.item() * d - 1) < (0.05 if full.numel() > 100_000 else 0.3)
        torch.testing.assert_close(delta[nz], full[nz] * scale, rtol=1e-5, atol=1e-6)
    # 3.2M Bernoulli(0.3) draws: the kept fraction's std is ~0.0003
    assert abs(kept / total - d) < 0.005, kept / total


def test_output_folder_has_card_tokenizer_and_checks(tiny, tmp_path, real_tokenizer):
    out = tmp_path / "run"
    res = run(MergeConfig(output=str(out), **dare_cfg(tiny, seed=0)))
    assert all(res["checks"].values())
    card = (out / "model" / "README.md").read_text()
    mk = yaml.safe_load(card.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert mk == yaml.safe_load((out / "merge.yaml").read_text())
    assert mk["merge_method"] == "dare_ties" and mk["base_model"] == str(tiny["base"])
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert tok.get_vocab() == real_tokenizer.get_vocab() and tok.chat_template == real_tokenizer.chat_template
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["outputs"]["model"] == "model"
    assert json.loads((out / "checks.json").read_text())["generation"]["tokens"] > 0


def test_lora_adapter_is_folded_into_full_weights_first(tiny, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    monkeypatch.setenv("ALOEKIT_HOME", str(tmp_path / "home"))
    model = AutoModelForCausalLM.from_pretrained(tiny["base"], dtype=torch.float32)
    torch.manual_seed(3)
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lcfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    # merge LoRA (folded) with itself-free partner: task_arithmetic with weight 1 over base = the folded model
    got = merged({"method": "task_arithmetic", "base_model": str(tiny["base"]),
                  "models": [{"model": str(tmp_path / "adapter"), "weight": 1.0}]}, tmp_path)
    base = weights(tiny["base"])
    sd = {k: v for k, v in peft_model.state_dict().items() if "lora_" in k}
    want = dict(base)
    for k in base:
        if k.endswith(("q_proj.weight", "v_proj.weight")):
            stem = "base_model.model." + k[: -len(".weight")]
            A, B = sd[f"{stem}.lora_A.default.weight"], sd[f"{stem}.lora_B.default.weight"]
            want[k] = base[k] + (8 / 4) * B @ A
    assert_close(got, want, tol=1e-5)


def test_search_picks_the_best_scoring_candidate(tiny, tmp_path):
    ft1 = weights(tiny["ft1"])

    def closeness_to_ft1(folder, cand):
        w = weights(folder)
        return -sum((w[k] - ft1[k]).pow(2).sum().item() for k in ft1)

    out = tmp_path / "search"
    cfg = {"method": "linear", "base_model": None,
           "models": [{"model": str(tiny["ft1"])}, {"model": str(tiny["ft2"])}],
           "search": {"weights": [[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]}}
    res = run(MergeConfig(output=str(out), **cfg), scorer=closeness_to_ft1)
    table = json.loads((out / "search.json").read_text())
    assert [r["weights"] for r in table["candidates"]] == [[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]]
    assert res["best"]["weights"] == [0.9, 0.1] and res["candidates"] == 3
    assert "| 1 | c01 | [0.9, 0.1]" in (out / "search.md").read_text()
    b = weights(tiny["ft2"])
    assert_close(weights(out / "model"), {k: 0.9 * ft1[k] + 0.1 * b[k] for k in ft1})
    assert not (out / "candidates").exists()


def test_search_with_the_builtin_dev_scorer(tiny, tmp_path, data_dir):
    from aloekit.merge.scoring import dev_accuracy
    out = tmp_path / "search"
    cfg = MergeConfig(output=str(out), method="linear", base_model=None,
                      models=[{"model": str(tiny["ft1"])}, {"model": str(tiny["ft2"])}],
                      search={"weights": [[0.5, 0.5]], "data_dir": str(data_dir),
                              "dev_sets": [{"name": "mmlu_medical_dev", "limit": 6}]})
    res = run(cfg)
    # the recorded score is the dev accuracy of the model that was kept
    assert res["best"]["score"] == dev_accuracy(out / "model", cfg)
    assert res["best"]["score"] in {i / 6 for i in range(7)}


# --- bad input: one-line UserError, nothing written -------------------------------------------------------


def _copy_with_config(src: Path, dst: Path, **changes) -> Path:
    import shutil
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize("case", ["architecture", "layers", "vocab_size", "tokenizer", "no_base", "weights_sum",
                                  "unknown_method", "slerp_t"])
def test_bad_input_is_a_user_error_and_writes_nothing(tiny, tmp_path, case):
    ft2 = str(tiny["ft2"])
    cfg = {"method": "ties", "base_model": str(tiny["base"]),
           "models": [{"model": str(tiny["ft1"]), "weight": 0.5, "density": 0.5}, {"model": ft2, "weight": 0.5}]}
    if case == "architecture":
        cfg["models"][1]["model"] = str(_copy_with_config(tiny["ft2"], tmp_path / "m", architectures=["MistralForCausalLM"],
                                                          model_type="mistral"))
        msg = "architecture"
    elif case == "layers":
        cfg["models"][1]["model"] = str(_copy_with_config(tiny["ft2"], tmp_path / "m", num_hidden_layers=3))
        msg = "num_hidden_layers"
    elif case == "vocab_size":
        cfg["models"][1]["model"] = str(_copy_with_config(tiny["ft2"], tmp_path / "m", vocab_size=50000))
        msg = "vocabulary size"
    elif case == "tokenizer":
        from transformers import AutoTokenizer
        d = _copy_with_config(tiny["ft2"], tmp_path / "m")
        tok = AutoTokenizer.from_pretrained(d)
        tok.add_tokens(["<new_medical_token>"])
        tok.save_pretrained(d)
        cfg["models"][1]["model"] = str(d)
        msg = "tokenizer vocabulary"
    elif case == "no_base":
        cfg.update(method="dare_ties", base_model=None)
        msg = "base_model"
    elif case == "weights_sum":
        cfg = {"method": "linear", "base_model": None, "parameters": {"normalize": False},
               "models": [{"model": str(tiny["ft1"]), "weight": 0.7}, {"model": ft2, "weight": 0.7}]}
        msg = "sum to 1.4"
    elif case == "unknown_method":
        cfg["method"] = "frankenmerge"
        msg = "unknown merge method"
    else:
        cfg = {"method": "slerp", "base_model": str(tiny["base"]), "parameters": {"t": 1.5},
               "models": [{"model": str(tiny["base"])}, {"model": ft2}]}
        msg = re.escape("outside [0, 1]")
    out = tmp_path / "out"
    with pytest.raises(UserError, match=msg) as e:
        run(MergeConfig(output=str(out), **cfg))
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_failure_after_merging_leaves_no_output(tiny, tmp_path, monkeypatch):
    run_mod = sys.modules["aloekit.merge.run"]  # the module: `aloekit.merge.run` the attribute is the function

    def broken_checks(*a, **k):
        raise UserError("merge: the merged model failed its checks: generates")
    monkeypatch.setattr(run_mod, "post_checks", broken_checks)
    out = tmp_path / "out"
    with pytest.raises(UserError):
        run(MergeConfig(output=str(out), **dare_cfg(tiny, seed=0)))
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_cli_merges_and_exits_2_on_bad_input(tiny, tmp_path):
    exe = [sys.executable, "-m", "aloekit.cli"]
    cfg = {"method": "slerp", "base_model": str(tiny["base"]), "parameters": {"t": 0.3},
           "models": [{"model": str(tiny["base"])}, {"model": str(tiny["ft1"])}], "output": str(tmp_path / "ok")}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(exe + ["--quiet", "merge", str(tmp_path / "m.yaml")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["checks"]["generates"] is True
    assert (tmp_path / "ok" / "model" / "model.safetensors").is_file()
    r = subprocess.run(exe + ["merge", str(tmp_path / "m.yaml"), "--set", "method=frankenmerge",
                              "--set", f"output={tmp_path / 'bad'}"], capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: method: unknown merge method")
    assert not (tmp_path / "bad").exists()
