"""Peak RSS of merging three copies of the default model: aloekit (streamed engine) vs mergekit's executor vs naive.

Target: aloekit's merge peaks at <= 1.5x one model's size; the naive peer (load every state dict, merge,
save) is measured beside it. Each measurement runs in its own fresh subprocess, so its ru_maxrss is its own
peak and nothing is shared between them. Imports-only subprocesses show how much of each peak is the Python +
torch (+ transformers) runtime rather than tensors.

The three inputs are the default model and two deterministic perturbations of it (seeded Gaussian noise,
0.01 x each tensor's std): real-size, real-layout checkpoints, merged with dare_ties over the default model.

    python benchmarks/merge_memory.py            # writes benchmarks/results/merge_memory.{json,md}
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

DENSITY, WEIGHTS, SEED = 0.5, (0.5, 0.5), 0


def bench_home() -> Path:
    from aloekit.models import aloekit_home
    return aloekit_home() / "merge_bench"


def make_copies() -> tuple[Path, list[Path]]:
    """The default model plus two perturbed copies (cached: they are deterministic)."""
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from aloekit import models
    base = Path(models.prepare(models.DEFAULT_MODEL))
    copies = []
    for i in (1, 2):
        out = bench_home() / f"perturbed_{i}"
        copies.append(out)
        if (out / "model.safetensors").is_file():
            continue
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(base, tmp)
        g = torch.Generator().manual_seed(1000 + i)
        tensors = {}
        with safe_open(str(base / "model.safetensors"), framework="pt") as f:
            meta = f.metadata()
            for k in sorted(f.keys()):
                t = f.get_tensor(k)
                noise = torch.randn(t.shape, generator=g, dtype=torch.float32) * (0.01 * t.float().std())
                tensors[k] = (t.float() + noise).to(t.dtype)
        save_file(tensors, str(tmp / "model.safetensors"), metadata=meta)
        tmp.rename(out)
    return base, copies


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class RssSampler:
    """Peaks of /proc/self/status RssAnon (heap: tensors, python) and RssFile (mapped file pages, e.g.
    safetensors mmaps, which the kernel can drop and re-read) every 20 ms; ru_maxrss counts both."""

    def __init__(self) -> None:
        import threading
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                k, _, v = line.partition(":")
                if k in self.peak:
                    self.peak[k] = max(self.peak[k], int(v.split()[0]))
            self._stop.wait(0.02)

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        return {"peak_anon_mb": round(self.peak["RssAnon"] / 1024, 1), "peak_file_mb": round(self.peak["RssFile"] / 1024, 1)}


def child_imports_lean(out: str) -> dict:
    """What the streamed engine itself imports: torch, safetensors, mergekit's merge functions (no transformers)."""
    import safetensors.torch  # noqa: F401
    import torch  # noqa: F401
    from mergekit.merge_methods import api  # noqa: F401

    import aloekit.merge.stream  # noqa: F401
    return {}


def child_imports_validate(out: str) -> dict:
    """`aloekit merge` just before its first tensor: the imports plus the input checks (transformers tokenizers)."""
    from aloekit.merge.config import MergeConfig
    from aloekit.merge.run import validate
    validate(MergeConfig(**_cfg(out)))
    return {}


def child_imports_mergekit(out: str) -> dict:
    """The imports of mergekit's own executor (mergekit.merge pulls in most of transformers)."""
    import mergekit.merge  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import aloekit.merge  # noqa: F401
    return {}


def _cfg(out: str, **extra) -> dict:
    base, (a, b) = make_copies()
    return dict(method="dare_ties", base_model=str(base), output=out, seed=SEED,
                models=[{"model": str(a), "weight": WEIGHTS[0], "density": DENSITY},
                        {"model": str(b), "weight": WEIGHTS[1], "density": DENSITY}], **extra)


def _aloekit_merge(out: str, **extra) -> dict:
    """The merge step of `aloekit merge` (validate, merge, tokenizer + card), without the post-merge checks."""
    from aloekit.merge.config import MergeConfig
    from aloekit.merge.run import merge_to, mergekit_yaml, validate
    cfg = MergeConfig(**_cfg(out, **extra))
    resolved = validate(cfg)
    engine = merge_to(Path(out), cfg, mergekit_yaml(cfg, resolved), resolved["tokenizer"])
    return {"engine": engine}


def child_aloekit(out: str) -> dict:
    return _aloekit_merge(out)  # defaults: engine auto (= streamed for dare_ties), fp32 compute, 2^18-entry blocks


def child_aloekit_mergekit(out: str) -> dict:
    # mergekit's executor as aloekit drives it: fp32, 20 MB output shards, inputs unmapped every 0.25 s
    return _aloekit_merge(out, engine="mergekit")


def child_streamed_lean(out: str, block_log2: int = 18) -> dict:
    """The streamed engine alone in a process that never imports transformers: what a merge subprocess would cost,
    and (at other block sizes) what the block size costs."""
    from aloekit.merge.stream import merge_streamed
    cfg = _cfg(out)
    mk = {"merge_method": "dare_ties", "base_model": cfg["base_model"],
          "models": [{"model": m["model"], "parameters": {"weight": m["weight"], "density": m["density"]}}
                     for m in cfg["models"]], "dtype": "float32"}
    return merge_streamed(Path(out), mk, seed=SEED, shard_bytes=20_000_000, block_elems=1 << block_log2)


def child_aloekit_full(out: str) -> dict:
    """The whole `aloekit merge` run, post-merge checks included (they load the merged model and generate)."""
    from aloekit.merge import MergeConfig, run
    return {"engine": run(MergeConfig(**_cfg(out)))["engine"]}


def child_naive(out: str) -> dict:
    """The peer everyone writes first: load all three state dicts, DARE-TIES them in memory, save."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    base, (a, b) = make_copies()
    sd_base = load_file(str(base / "model.safetensors"))
    sds = [load_file(str(p / "model.safetensors")) for p in (a, b)]
    g = torch.Generator().manual_seed(SEED)
    merged = {}
    for k, t0 in sd_base.items():
        deltas = torch.stack([(sd[k] - t0) * w for sd, w in zip(sds, WEIGHTS)])
        keep = torch.rand(deltas.shape, generator=g) < DENSITY
        deltas = deltas * keep / DENSITY
        sign = torch.where(deltas.sum(0) >= 0, 1.0, -1.0)
        merged[k] = t0 + (deltas * (deltas.sign() == sign)).sum(0)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_file(merged, str(Path(out) / "model.safetensors"))
    shutil.copy(base / "config.json", Path(out) / "config.json")
    return {}


# mode -> (label, the imports-only row it is compared with)
RUNS = {
    "imports_lean": ("imports: torch + safetensors + mergekit merge functions (streamed engine)", None),
    "imports_validate": ("imports + input checks (transformers tokenizers): `aloekit merge` before its first tensor",
                         None),
    "imports_mergekit": ("imports: + mergekit.merge + transformers (mergekit's executor)", None),
    "aloekit": ("**aloekit merge, default** (streamed engine, fp32)", "imports_validate"),
    "streamed_lean": ("streamed engine alone, no transformers (a merge subprocess)", "imports_lean"),
    "aloekit_mergekit": ("aloekit merge, `engine: mergekit` (fp32, 20 MB shards, inputs unmapped every 0.25 s)",
                         "imports_mergekit"),
    "naive": ("naive peer: load 3 state dicts, DARE-TIES in memory, save", "imports_lean"),
    "aloekit_full": ("whole `aloekit merge` run incl. post-merge checks (loads the merged model)", "imports_validate"),
}
CHILDREN = {m: globals()[f"child_{m}"] for m in RUNS}
BLOCK_SWEEP = (16, 20, 22)  # the default 2^18 is the streamed_lean row
for b in BLOCK_SWEEP:
    RUNS[f"streamed_lean_b{b}"] = (f"streamed engine alone, `block_size: 2^{b}`", "imports_lean")
    CHILDREN[f"streamed_lean_b{b}"] = lambda out, b=b: child_streamed_lean(out, b)


def measure(mode: str, out: Path) -> dict:
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(out)], capture_output=True, text=True,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_s"] = round(time.time() - t, 1)
    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> None:
    from _common import write
    base, copies = make_copies()
    model_mb = (base / "model.safetensors").stat().st_size / 2**20
    work = bench_home() / "out"
    rows = {}
    for m in RUNS:
        rows[m] = measure(m, work / m)
        print(m, rows[m], flush=True)
    limit = 1.5 * model_mb
    for m, r in rows.items():
        r["label"] = RUNS[m][0]
        r["x_model"] = round(r["peak_rss_mb"] / model_mb, 2)
        if RUNS[m][1]:  # what the merge itself adds on top of the libraries that run pays for anyway
            r["runtime"] = RUNS[m][1]
            r["net_of_runtime_mb"] = round(r["peak_rss_mb"] - rows[RUNS[m][1]]["peak_rss_mb"], 1)
            r["net_x_model"] = round(r["net_of_runtime_mb"] / model_mb, 2)
    merges = [m for m in rows if not m.startswith("imports")]
    payload = {
        "what": "peak RSS merging 3 copies of the default model (dare_ties, density 0.5), each in a fresh subprocess",
        "model_mb": round(model_mb, 1), "target_mb": round(limit, 1), "results": rows,
        "meets_target": {m: rows[m]["peak_rss_mb"] <= limit for m in merges},
        "naive_over_aloekit": round(rows["naive"]["peak_rss_mb"] / rows["aloekit"]["peak_rss_mb"], 2),
        "mergekit_engine_over_aloekit": round(rows["aloekit_mergekit"]["peak_rss_mb"] / rows["aloekit"]["peak_rss_mb"],
                                              2),
    }
    md = [
        "# Merge memory (3 copies of SmolLM2-135M-Instruct, fp32 on disk, dare_ties)", "",
        f"One model: {model_mb:.0f} MB on disk; target peak RSS <= 1.5x = {limit:.0f} MB. Each row is a fresh "
        "subprocess; peak RSS = ru_maxrss; anon/file = sampled peaks of RssAnon (heap) and RssFile (mapped files: "
        "shared libraries, safetensors mappings). Net = peak minus the imports-only row named in brackets.",
        "", "| run | peak RSS (MB) | x one model | net of runtime (MB) | net x model | peak anon | peak file | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.values():
        net = f"{r['net_of_runtime_mb']} [{r['runtime']}]" if "runtime" in r else "-"
        md.append(f"| {r['label']} | {r['peak_rss_mb']:.0f} | {r['x_model']} | {net} | {r.get('net_x_model', '-')} | "
                  f"{r['peak_anon_mb']:.0f} | {r['peak_file_mb']:.0f} | {r['wall_s']} |")
    a, lean, full = rows["aloekit"], rows["streamed_lean"], rows["aloekit_full"]
    md += ["", f"Target (<= {limit:.0f} MB) met: " + ", ".join(f"{m}: **{ok}**" for m, ok in
                                                           payload["meets_target"].items()) + ".",
           f"Naive / aloekit default peak: **{payload['naive_over_aloekit']}x**; mergekit's executor / aloekit "
           f"default: **{payload['mergekit_engine_over_aloekit']}x**.", "",
           f"The default merge adds {a['net_of_runtime_mb']:.0f} MB ({a['net_x_model']}x one model) to the "
           f"{rows['imports_validate']['peak_rss_mb']:.0f} MB that `aloekit merge` holds before its first tensor "
           "(torch, mergekit's merge functions, and transformers for the tokenizer checks). The streamed engine "
           f"alone, in a process that never imports transformers, peaks at {lean['peak_rss_mb']:.0f} MB: a merge "
           "subprocess would cost that on top of the parent's memory, so the merge runs in-process. The whole run "
           f"with its post-merge checks peaks at {full['peak_rss_mb']:.0f} MB ({full['x_model']}x): the checks load "
           "the merged model with transformers to generate from it, after the merge has finished.",
           "", "Block size (streamed engine alone, net of its imports): " + ", ".join(
               f"2^{b}: +{rows[m]['net_of_runtime_mb']:.0f} MB in {rows[m]['wall_s']} s" for b, m in sorted(
                   [(18, "streamed_lean")] + [(b, f"streamed_lean_b{b}") for b in BLOCK_SWEEP])) + "."]
    write("merge_memory", payload, "\n".join(md))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, out = sys.argv[2], sys.argv[3]
        sampler = RssSampler()
        extra = CHILDREN[mode](out)
        print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1), **sampler.stop(), **extra,
                          "transformers_imported": "transformers" in sys.modules}))
    else:
        main()
