"""aloekit eval vs lm-evaluation-harness 0.4 (hf backend) on the same MedMCQA questions, file, prompt and dtype.

Both run in this process on the converted default model folder. Reports questions/s for the scoring phase
(lm-eval: time inside its `loglikelihood`; aloekit: the task's scoring time) and for the whole evaluation
(model load + data + scoring + metrics), per-question agreement and the accuracy gap.

    .venv/bin/python benchmarks/eval_speed.py [--limit 500] [--dtype float32] [--batch-size 8] [--threads 1]
        [--runs 3] [--out results/eval_speed]

`--runs` paired runs (ours, lm-eval, ours, lm-eval ...), median (min-max). Writes benchmarks/results/<out>.json
and .md. Goal: >= 3x lm-eval; >= 99% identical predictions and accuracy within 0.1 pt. In bf16, each disagreement
is classified against an untimed lm-eval fp32 run: inside lm-eval's own bf16 rounding or not.

    .venv/bin/python benchmarks/eval_speed.py --via lm-eval [--runs 3] [--dtype float32|bfloat16]

The lm-eval path: lm-eval itself runs our shipped task `aloe_medmcqa` (its `--include_path` folder) through
`simple_evaluate` (what the `lm_eval` command calls) with `--model aloekit-hf` and with its own `--model hf`,
same dtype and batch size, alternating (ours, peer) for `--runs` pairs. Writes eval_speed_lmeval_<dtype>.
"""

from __future__ import annotations

import argparse
import os
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


def via_lm_eval(model: str, model_dir: Path, limit: int, batch_size: int, dtype: str) -> dict:
    """One lm-eval run of aloe_medmcqa with `model` ("aloekit-hf" or "hf"): acc, per-question log-likelihoods,
    seconds (total: model load + simple_evaluate; scoring: inside the model's loglikelihood)."""
    import lm_eval
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    import aloekit.lmeval as ak
    t = time.time()
    tm = TaskManager(include_path=str(ak.TASKS_DIR))
    args = f"pretrained={model_dir},dtype={dtype},batch_size={batch_size}"
    lm = get_model(model).create_from_arg_string(args + (",device=cpu" if model == "hf" else ""))
    from lm_eval_peer import time_loglikelihood
    scoring = time_loglikelihood(lm)
    res = lm_eval.simple_evaluate(model=lm, tasks=["aloe_medmcqa"], task_manager=tm, limit=limit, log_samples=True,
                                  bootstrap_iters=0)
    total = time.time() - t
    samples = sorted(res["samples"]["aloe_medmcqa"], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return {"acc": res["results"]["aloe_medmcqa"]["acc,none"], "lls": lls,
            "preds": [max(range(len(x)), key=x.__getitem__) for x in lls],
            "seconds": {"total": total, "scoring": scoring[0]}}


def main_lm_eval(args) -> None:
    import statistics

    import torch
    from _common import write

    from aloekit import console, models
    torch.set_num_threads(args.threads)
    console.set_quiet(True)
    os.environ["ALOEKIT_DATA_DIR"] = str(Path(args.data_dir).resolve())  # where the aloe_* tasks read their files
    model_dir = models.prepare(models.DEFAULT_MODEL)
    runs = []
    for _ in range(args.runs):  # paired and alternating, so a change of machine load hits both sides
        runs.append((via_lm_eval("aloekit-hf", model_dir, args.limit, args.batch_size, args.dtype),
                     via_lm_eval("hf", model_dir, args.limit, args.batch_size, args.dtype)))
    ours, peer = runs[0]
    n = len(peer["preds"])
    same = sum(int(x == y) for x, y in zip(ours["preds"], peer["preds"]))
    max_dll = max(abs(x - y) for u, v in zip(ours["lls"], peer["lls"]) for x, y in zip(u, v))
    # a disagreement inside the dtype's rounding: the peer's own top-2 gap is smaller than the largest ll difference
    close = sum(1 for u, v, a, b in zip(ours["lls"], peer["lls"], ours["preds"], peer["preds"])
                if a != b and abs(v[a] - v[b]) <= max(abs(x - y) for x, y in zip(u, v)))
    ratios = {ph: [p["seconds"][ph] / o["seconds"][ph] for o, p in runs] for ph in ("scoring", "total")}

    def spread(xs):
        return f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})"
    qps = {who: {ph: [round(n / r[i]["seconds"][ph], 2) for r in runs] for ph in ("scoring", "total")}
           for i, who in enumerate(("aloekit-hf", "hf"))}
    md = f"""# lm-eval with `--model aloekit-hf` vs `--model hf` (same lm-eval task, dtype, batch size)

lm-eval {_versions().get('lm-eval')} runs aloekit's shipped task `aloe_medmcqa` (MedMCQA dev, first {n} questions,
`--include_path $(aloekit eval --lm-eval-tasks-path)`) through `simple_evaluate`, the function the `lm_eval` command
calls, once with our model and once with its own HF model: {args.dtype}, batch size {args.batch_size},
{args.threads} torch thread(s), {args.runs} paired runs (ours, peer, ours, peer ...), median (min-max).

| phase | aloekit-hf q/s | hf q/s | speed-up |
|---|---|---|---:|
| scoring (inside loglikelihood) | {qps['aloekit-hf']['scoring']} | {qps['hf']['scoring']} | **{spread(ratios['scoring'])}** |
| whole run (model load + evaluate) | {qps['aloekit-hf']['total']} | {qps['hf']['total']} | {spread(ratios['total'])} |

Agreement: {same}/{n} identical predictions; acc {100 * ours['acc']:.2f} vs {100 * peer['acc']:.2f}; max |log-lik
diff| {max_dll:.2e}; disagreements within that difference (rounding of {args.dtype}): {close} of {n - same}.
Goal (issue 23): >= 3x on scoring with identical predictions in fp32: speed {'met' if min(ratios['scoring']) >= 3 else
'NOT met'}, predictions {'identical' if same == n else 'not identical'}.
"""
    write(f"eval_speed_lmeval_{args.dtype}", {
        "task": "aloe_medmcqa", "questions": n, "dtype": args.dtype, "batch_size": args.batch_size,
        "torch_threads": args.threads, "runs": args.runs, "ratios": ratios, "q_per_s": qps,
        "agreement": {"identical": same, "n": n, "max_abs_loglik_diff": max_dll, "within_rounding": close,
                      "acc": {"aloekit-hf": ours["acc"], "hf": peer["acc"]}},
        "seconds": [[o["seconds"], p["seconds"]] for o, p in runs], "versions": _versions()}, md)


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
    ap.add_argument("--via", choices=["aloekit", "lm-eval"], default="aloekit",
                    help="lm-eval: lm-eval runs our task with --model aloekit-hf vs --model hf")
    ap.add_argument("--runs", type=int, default=3, help="paired runs (ours, peer, ...)")
    args = ap.parse_args()
    if args.via == "lm-eval":
        main_lm_eval(args)
        return

    import statistics

    import torch
    from _common import fmt, spread, write
    from lm_eval_peer import run_lm_eval

    from aloekit import console, models
    torch.set_num_threads(args.threads)
    console.set_quiet(True)
    data_dir = Path(args.data_dir)
    model_dir = models.prepare(models.DEFAULT_MODEL)

    runs = []
    for _ in range(args.runs):  # paired and alternating, so a change of machine load hits both sides
        runs.append((ours(data_dir, args.limit, args.dtype, args.batch_size),
                     run_lm_eval(model_dir, data_dir, limit=args.limit, batch_size=args.batch_size, dtype=args.dtype)))
    a, peer = runs[0]
    assert all(o["lls"] == a["lls"] for o, _ in runs), "aloekit is not deterministic across runs"
    n = len(peer["preds"])
    same = sum(int(x == y) for x, y in zip(a["preds"], peer["preds"]))
    max_dll = max(abs(x - y) for u, v in zip(a["lls"], peer["lls"]) for x, y in zip(u, v))
    ratio = {ph: spread([p["seconds"][ph] / o["seconds"][ph] for o, p in runs]) for ph in ("scoring", "total")}
    qps = {who: {ph: spread([n / r[i]["seconds"][ph] for r in runs]) for ph in ("scoring", "total")}
           for i, who in enumerate(("aloekit", "lm_eval"))}

    # bf16: is a disagreement inside lm-eval's own bf16 rounding? The reference is lm-eval in fp32 (untimed): a
    # disagreement is inside when the fp32 gap between the two predicted options is no larger than lm-eval's own
    # bf16 error on that question (its largest |bf16 - fp32| log-likelihood), i.e. lm-eval's rounding alone could
    # flip it; for each, which side agrees with fp32
    classified = None
    if args.dtype != "float32" and same < n:
        ref = run_lm_eval(model_dir, data_dir, limit=args.limit, batch_size=args.batch_size, dtype="float32")
        rows = []
        for q, (v, r, x, y) in enumerate(zip(peer["lls"], ref["lls"], a["preds"], peer["preds"])):
            if x == y:
                continue
            err = max(abs(i - j) for i, j in zip(v, r))
            rows.append({"question": q, "aloekit": x, "lm_eval": y, "fp32": ref["preds"][q],
                         "fp32_gap": round(abs(r[x] - r[y]), 4), "lm_eval_bf16_error": round(err, 4),
                         "inside": abs(r[x] - r[y]) <= err})
        classified = {"rows": rows, "inside": sum(r["inside"] for r in rows),
                      "aloekit_matches_fp32": sum(r["aloekit"] == r["fp32"] for r in rows),
                      "lm_eval_matches_fp32": sum(r["lm_eval"] == r["fp32"] for r in rows),
                      "acc_fp32": ref["acc"]}
    goals = {"speed_ratio>=3": ratio["scoring"]["median"] >= 3, "identical>=0.99": same / n >= 0.99,
             "acc_diff<=0.1pt": abs(a["acc"] - peer["acc"]) <= 0.001}
    load = [round(x, 2) for x in os.getloadavg()]
    md = f"""# eval speed: aloekit vs lm-evaluation-harness ({args.dtype})

MedMCQA dev, first {n} questions, same local file and prompt (`Question: ...\nAnswer:` + ` option`), default model
{models.DEFAULT_MODEL}, {args.dtype}, batch size {args.batch_size} on both, {args.threads} torch thread(s), same
process. Peer: lm-eval {_versions().get('lm-eval')}'s `hf` model (`HFLM`, same dtype and batch size) through
`simple_evaluate` on the same questions (tests/lm_eval_peer.py). {args.runs} paired runs (ours, peer, ours, peer
...), median (min-max). Load average at the end: {load[0]}.

| phase | aloekit q/s | lm-eval q/s | ratio |
|---|---:|---:|---:|
| scoring | {fmt(qps['aloekit']['scoring'])} | {fmt(qps['lm_eval']['scoring'])} | **{fmt(ratio['scoring'], 'x')}** |
| whole evaluation (load model + data + score) | {fmt(qps['aloekit']['total'])} | {fmt(qps['lm_eval']['total'])} | {fmt(ratio['total'], 'x')} |

Agreement: {same}/{n} identical predictions ({100 * same / n:.1f} %); acc {100 * a['acc']:.2f} vs
{100 * peer['acc']:.2f} (diff {100 * abs(a['acc'] - peer['acc']):.2f} pt); acc_norm {100 * a['acc_norm']:.2f} vs
{100 * peer['acc_norm']:.2f}; max |log-lik diff| {max_dll:.2e}.
"""
    if classified is not None:
        c = classified
        md += f"""
The {n - same} disagreements against lm-eval in fp32 (untimed reference run, acc {100 * c['acc_fp32']:.2f}):
{c['inside']} are inside lm-eval's own {args.dtype} rounding (the fp32 gap between the two predicted options is no
larger than lm-eval's own |{args.dtype} - fp32| error on that question), {len(c['rows']) - c['inside']} are not;
aloekit's prediction is the fp32 one in {c['aloekit_matches_fp32']}, lm-eval's in {c['lm_eval_matches_fp32']}.
"""
    md += f"""
Goals: speed >= 3x (median): {goals['speed_ratio>=3']}; >= 99 % identical: {goals['identical>=0.99']}; acc within
0.1 pt: {goals['acc_diff<=0.1pt']}.

Reproduce: `.venv/bin/python benchmarks/eval_speed.py {' '.join(sys.argv[1:])}`
"""
    write(Path(args.out).name, {
        "benchmark": "aloekit eval vs lm-evaluation-harness hf backend, MedMCQA dev (local dev.json), loglik",
        "questions": n, "dtype": args.dtype, "batch_size": args.batch_size, "torch_threads": args.threads,
        "runs": args.runs, "model": models.DEFAULT_MODEL, "ratio": ratio, "q_per_s": qps,
        "agreement": {"identical_predictions": same, "identical_fraction": round(same / n, 4),
                      "acc": {"aloekit": a["acc"], "lm_eval": peer["acc"]},
                      "acc_norm": {"aloekit": a["acc_norm"], "lm_eval": peer["acc_norm"]},
                      "max_abs_loglik_diff": max_dll, "bf16_disagreements": classified},
        "seconds": [[o["seconds"], p["seconds"]] for o, p in runs],
        "median_scoring_s": {"aloekit": statistics.median(o["seconds"]["scoring"] for o, _ in runs),
                             "lm_eval": statistics.median(p["seconds"]["scoring"] for _, p in runs)},
        "versions": _versions(), "goals": goals}, md)


def _versions() -> dict:
    from aloekit.rundir import versions
    return versions()


if __name__ == "__main__":
    main()
