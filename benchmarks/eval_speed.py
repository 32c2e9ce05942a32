"""aloekit eval vs lm-evaluation-harness 0.4 (hf backend) on the same MedMCQA questions, file, prompt and dtype.

Both run in this process on the converted default model folder. Reports questions/s for the scoring phase
(lm-eval: time inside its `loglikelihood`; aloekit: the task's scoring time) and for the whole evaluation
(model load + data + scoring + metrics), per-question agreement and the accuracy gap.

    .venv/bin/python benchmarks/eval_speed.py [--limit 500] [--dtype float32] [--batch-size 8] [--threads 1]

Writes benchmarks/results/eval_speed.json and .md. Goal: >= 3x lm-eval; >= 99% identical predictions and
accuracy within 0.1 pt.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# the lm-eval peer is a test helper (tests/lm_eval_peer.py, shared with tests/test_eval_real.py): import it from there
sys.path.insert(0, str(HERE.parent / "tests"))


def ours(data_dir: Path, limit: int, dtype: str, batch_size: int) -> dict:
    from aloekit.config import ModelConfig
    from aloekit.eval import EvalConfig, run
    cfg = EvalConfig(tasks=["medmcqa"], data_dir=str(data_dir), limit=limit,
                     model=ModelConfig(dtype=dtype, batch_size=batch_size))
    t = time.time()
    out = run(cfg)  # loads the model itself, like the command does
    total = time.time() - t
    samples = out["samples"]["medmcqa"]
    return {"acc": out["results"]["medmcqa"]["acc,none"], "acc_norm": out["results"]["medmcqa"]["acc_norm,none"],
            "preds": [s["pred"] for s in samples], "lls": [s["scores"] for s in samples],
            "seconds": {"total": total, "scoring": out["timings_s"]["scoring"]["medmcqa"]}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both (1: the CPUs are shared with other jobs; OpenMP spin-waits "
                         "collapse when oversubscribed)")
    ap.add_argument("--data-dir", default=os.environ.get("ALOEKIT_DATA_DIR") or str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "eval_speed"))
    args = ap.parse_args()

    import torch
    from lm_eval_peer import run_lm_eval

    from aloekit import console, models
    from aloekit.io import atomic_write_json, atomic_write_text
    torch.set_num_threads(args.threads)
    console.set_quiet(True)
    data_dir = Path(args.data_dir)
    model_dir = models.prepare(models.DEFAULT_MODEL)
    load0 = os.getloadavg()

    # ours twice around the peer, so a change in machine load shows up as a spread instead of a bias
    a = ours(data_dir, args.limit, args.dtype, args.batch_size)
    peer = run_lm_eval(model_dir, data_dir, limit=args.limit, batch_size=args.batch_size, dtype=args.dtype)
    b = ours(data_dir, args.limit, args.dtype, args.batch_size)
    assert a["lls"] == b["lls"], "aloekit is not deterministic across runs"

    n = len(peer["preds"])
    same = sum(int(x == y) for x, y in zip(a["preds"], peer["preds"]))
    max_dll = max(abs(x - y) for u, v in zip(a["lls"], peer["lls"]) for x, y in zip(u, v))

    def qps(phase: str) -> dict:
        o = [n / r["seconds"][phase] for r in (a, b)]
        p = n / peer["seconds"][phase]
        return {"aloekit_q_per_s": [round(x, 2) for x in o], "lm_eval_q_per_s": round(p, 2),
                "ratio": round(sum(o) / len(o) / p, 2), "ratio_min": round(min(o) / p, 2)}

    res = {
        "benchmark": "aloekit eval vs lm-evaluation-harness hf backend, MedMCQA dev (local dev.json), loglik",
        "questions": n, "dtype": args.dtype, "batch_size": args.batch_size, "torch_threads": args.threads,
        "model": models.DEFAULT_MODEL,
        "agreement": {"identical_predictions": same, "identical_fraction": round(same / n, 4),
                      "acc": {"aloekit": a["acc"], "lm_eval": peer["acc"],
                              "diff_pt": round(100 * abs(a["acc"] - peer["acc"]), 3)},
                      "acc_norm": {"aloekit": a["acc_norm"], "lm_eval": peer["acc_norm"],
                                   "diff_pt": round(100 * abs(a["acc_norm"] - peer["acc_norm"]), 3)},
                      "max_abs_loglik_diff": max_dll},
        "scoring_phase": qps("scoring"), "whole_evaluation": qps("total"),
        "seconds": {"aloekit": [a["seconds"], b["seconds"]], "lm_eval": peer["seconds"]},
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load0],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": _versions(),
        "goals": {"speed_ratio>=3": qps("scoring")["ratio_min"] >= 3, "identical>=0.99": same / n >= 0.99,
                  "acc_diff<=0.1pt": abs(a["acc"] - peer["acc"]) <= 0.001},
    }
    atomic_write_json(args.out + ".json", res)
    sp, wh, ag = res["scoring_phase"], res["whole_evaluation"], res["agreement"]
    md = f"""# eval speed: aloekit vs lm-evaluation-harness

MedMCQA dev, first {n} questions, same local file and prompt (`Question: ...\\nAnswer:` + ` option`), default model
{models.DEFAULT_MODEL}, {args.dtype}, batch size {args.batch_size}, {args.threads} torch thread(s), same process.
Machine: {res['machine']['cpus']} shared CPUs, load average {res['machine']['loadavg_before'][0]} before /
{res['machine']['loadavg_after'][0]} after (other jobs were running: absolute numbers are noisy, the ratio less so).

| phase | aloekit q/s (run 1, run 2) | lm-eval q/s | ratio |
|---|---:|---:|---:|
| scoring | {sp['aloekit_q_per_s'][0]}, {sp['aloekit_q_per_s'][1]} | {sp['lm_eval_q_per_s']} | **{sp['ratio']}x** (min {sp['ratio_min']}x) |
| whole evaluation (load model + data + score) | {wh['aloekit_q_per_s'][0]}, {wh['aloekit_q_per_s'][1]} | {wh['lm_eval_q_per_s']} | **{wh['ratio']}x** (min {wh['ratio_min']}x) |

Agreement: {ag['identical_predictions']}/{n} identical predictions ({100 * ag['identical_fraction']:.1f} %);
acc {100 * ag['acc']['aloekit']:.2f} vs {100 * ag['acc']['lm_eval']:.2f} (diff {ag['acc']['diff_pt']} pt);
acc_norm {100 * ag['acc_norm']['aloekit']:.2f} vs {100 * ag['acc_norm']['lm_eval']:.2f}; max |log-lik diff| {ag['max_abs_loglik_diff']:.2e}.

Goals: speed >= 3x: {res['goals']['speed_ratio>=3']}; >= 99 % identical: {res['goals']['identical>=0.99']};
acc within 0.1 pt: {res['goals']['acc_diff<=0.1pt']}.

Reproduce: `.venv/bin/python benchmarks/eval_speed.py --limit {n} --dtype {args.dtype} --threads {args.threads}`
"""
    atomic_write_text(args.out + ".md", md)
    print(md)


def _versions() -> dict:
    from aloekit.rundir import versions
    return versions()


if __name__ == "__main__":
    main()
