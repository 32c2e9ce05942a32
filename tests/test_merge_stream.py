"""The streamed merge engine: same bits as mergekit's whole-tensor executor where the math is elementwise, the same
weights at any block size, and mergekit's executor wherever streaming does not apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_llama
from safetensors.torch import load_file

from aloekit.errors import UserError
from aloekit.merge import MergeConfig, run
from aloekit.merge.stream import TopK, _bits, row_blocks, topk_apply, topk_finish, topk_pass1, topk_pass2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, real_tokenizer):
    """base + two 'fine-tunes' (independent random inits), as in test_merge.py; the embedding (49152 x 64 = 3.1M
    entries) spans several blocks at the block sizes used here."""
    root = tmp_path_factory.mktemp("tiny_stream")
    out = {}
    for name, seed in (("base", 0), ("ft1", 1), ("ft2", 2)):
        out[name] = save_tiny_llama(root / name, real_tokenizer, seed)
    return out


def cfg_for(tiny, method: str, **kw) -> dict:
    models = [{"model": str(tiny["ft1"]), "weight": 0.7}, {"model": str(tiny["ft2"]), "weight": 0.5}]
    if method in ("ties", "dare_ties", "dare_linear"):
        for m in models:
            m["density"] = 0.4
    return {"method": method, "base_model": None if method == "linear" else str(tiny["base"]), "models": models,
            **kw}


def merge(tmp_path: Path, name: str, cfg: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    out = tmp_path / name
    res = run(MergeConfig(output=str(out), **cfg))
    folder = out / "model"
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [
        "model.safetensors"]
    weights = {}
    for f in files:
        weights.update(load_file(str(folder / f)))
    return res, weights


def assert_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


@pytest.mark.parametrize("method,extra", [("linear", {}), ("task_arithmetic", {}), ("ties", {}),
                                          ("task_arithmetic", {"dtype": "bfloat16",
                                                               "parameters": {"int8_mask": True}})])
def test_streamed_equals_mergekit_executor_bit_for_bit(tiny, tmp_path, method, extra):
    res_mk, whole = merge(tmp_path, "mk", {**cfg_for(tiny, method), **extra, "engine": "mergekit"})
    assert res_mk["engine"] == "mergekit"
    base = load_file(str(tiny["base"] / "model.safetensors"))
    fts = [load_file(str(tiny[m] / "model.safetensors")) for m in ("ft1", "ft2")]
    for block in (1 << 16, 1 << 20, 1 << 24):  # many blocks, a few, one for every tensor
        res, got = merge(tmp_path, f"s{block}", {**cfg_for(tiny, method), **extra, "block_size": block})
        assert res["engine"] == "streamed"
        if method != "ties":
            assert_equal(got, whole)
            continue
        # TIES: the same bits except where an input's |delta| ties at its k-th largest magnitude: mergekit's
        # unstable argsort keeps an arbitrary subset of those, the streamed engine the first ones in flat order
        assert got.keys() == whole.keys()
        for k in whole:
            differ = got[k] != whole[k]
            if not differ.any():
                continue
            at_cut = torch.zeros_like(differ)
            for ft in fts:
                mag = (ft[k] - base[k]).abs()
                kth = mag.flatten().kthvalue(mag.numel() - int(0.4 * mag.numel()) + 1).values
                at_cut |= mag == kth
            assert not (differ & ~at_cut).any(), k


@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear"])
def test_same_weights_at_any_block_size(tiny, tmp_path, method):
    """TIES's cut and DARE's L1 factor are whole-tensor statistics, and DARE draws per fixed chunk of rows, so the
    block size changes memory, not weights."""
    _, first = merge(tmp_path, "a", {**cfg_for(tiny, method), "block_size": 1 << 16})
    for block in (300_000, 1 << 24):
        _, again = merge(tmp_path, f"b{block}", {**cfg_for(tiny, method), "block_size": block})
        assert_equal(again, first)


def test_dare_streamed_is_seeded_and_keeps_density(tiny, tmp_path):
    _, a = merge(tmp_path, "a", {**cfg_for(tiny, "dare_linear", seed=3), "block_size": 1 << 16})
    _, b = merge(tmp_path, "b", {**cfg_for(tiny, "dare_linear", seed=4), "block_size": 1 << 16})
    assert any(not torch.equal(a[k], b[k]) for k in a)
    base = load_file(str(tiny["base"] / "model.safetensors"))
    # dare_linear (no sign election) with one input: the kept fraction of the delta is the density
    one = {"method": "dare_linear", "base_model": str(tiny["base"]), "block_size": 1 << 16,
           "models": [{"model": str(tiny["ft1"]), "weight": 1.0, "density": 0.3}]}
    _, got = merge(tmp_path, "one", one)
    emb = "model.embed_tokens.weight"
    kept = ((got[emb] - base[emb]) != 0).float().mean().item()
    assert abs(kept - 0.3) < 0.003, kept  # 3.1M Bernoulli(0.3) draws: std ~0.0003


def test_topk_ties_are_kept_in_flat_order_across_blocks():
    """Many equal magnitudes (as bf16 weights give): exactly k kept, the tied ones first in flat order."""
    g = torch.Generator().manual_seed(0)
    delta = (torch.randint(-20, 21, (1000, 37), generator=g) / 16).float()
    for density in (0.1, 0.37, 0.9):
        k = int(density * delta.numel())
        want = torch.zeros(delta.numel(), dtype=torch.bool)
        want[delta.flatten().abs().argsort(descending=True, stable=True)[:k]] = True
        for rows in (7, 100, 1000):
            t = TopK(k=k)
            blocks = [delta[r:r + rows] for r in range(0, 1000, rows)]
            for step in (topk_pass1, topk_pass2):
                for b in blocks:
                    step(t, b, False)
            topk_finish(t, False)
            got = torch.cat([topk_apply(t, b) for b in blocks])
            assert torch.equal(got.flatten() != 0, want & (delta.flatten() != 0))
            assert int((_bits(delta) > t.threshold).sum()) + t.ties_kept == k


def test_topk_rescale_keeps_the_l1_norm():
    g = torch.Generator().manual_seed(1)
    delta = torch.randn(500, 20, generator=g)
    t = TopK(k=3000)
    for step in (topk_pass1, topk_pass2):
        for r in range(0, 500, 64):
            step(t, delta[r:r + 64], True)
    topk_finish(t, True)
    got = torch.cat([topk_apply(t, delta[r:r + 64]) for r in range(0, 500, 64)])
    assert int((got != 0).sum()) == 3000
    torch.testing.assert_close(got.abs().sum(), delta.abs().sum(), rtol=1e-5, atol=0)


def test_blocks_are_whole_draw_chunks():
    rows, chunk = row_blocks((49152, 576), 1 << 20)
    assert chunk == 113 and all((r1 - r0) % chunk == 0 for r0, r1 in rows[:-1])
    assert rows[0] == (0, 1808) and rows[-1][1] == 49152
    assert row_blocks((576,), 1 << 20)[0] == [(0, 576)]


def test_sharded_output_matches_one_file_and_loads(tiny, tmp_path):
    _, one = merge(tmp_path, "one", cfg_for(tiny, "task_arithmetic"))
    res, many = merge(tmp_path, "many", {**cfg_for(tiny, "task_arithmetic"), "out_shard_size": "100K"})
    folder = tmp_path / "many" / "model"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3 and not (folder / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in many.values())
    assert_equal(many, one)
    assert res["checks"]["generates"]  # transformers loaded the sharded folder and generated


def test_auto_runs_slerp_and_per_layer_values_on_mergekit(tiny, tmp_path):
    slerp = {"method": "slerp", "base_model": str(tiny["base"]), "parameters": {"t": 0.3},
             "models": [{"model": str(tiny["base"])}, {"model": str(tiny["ft1"])}]}
    res, _ = merge(tmp_path, "slerp", slerp)
    assert res["engine"] == "mergekit"
    gradient = {**cfg_for(tiny, "task_arithmetic"), "parameters": {"lambda": [0.5, 1.0]}}
    res, _ = merge(tmp_path, "grad", gradient)
    assert res["engine"] == "mergekit"
    card = (tmp_path / "grad" / "model" / "README.md").read_text()
    assert "Computed by mergekit's executor." in card
    with pytest.raises(UserError, match="engine: the streamed engine cannot run this merge: method 'slerp'"):
        run(MergeConfig(output=str(tmp_path / "bad"), engine="streamed", **slerp))
    assert not (tmp_path / "bad").exists()
