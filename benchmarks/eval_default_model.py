"""Real scores of the default model on every benchmark present in the shared data folder, beside the chance and
majority baselines. A 135M model is expected to be near chance: the point is honest, reproducible numbers.

    .venv/bin/python benchmarks/eval_default_model.py [--threads 1] [--full]

Where a full run would take too long on the 2 shared CPUs, the first N questions are used
(lm-eval's --limit semantics; BBQ categories are interleaved so a limit stays balanced); n is reported per
benchmark. --full ignores the limits. Writes benchmarks/results/default_model_scores.json and .md, updated
after each benchmark so an interrupted run still leaves the finished ones.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# task -> limit (None = all). Sized so the whole script ends in ~35 min on the 2 CPUs while other jobs share
# them (we got ~1 question/s on short questions); --full runs everything.
PLAN = {
    "medmcqa": 300, "pubmedqa": 60,
    "mmlu_anatomy": 50, "mmlu_clinical_knowledge": 50, "mmlu_college_biology": 50,
    "mmlu_college_medicine": 50, "mmlu_medical_genetics": 50, "mmlu_professional_medicine": 30,
    "headqa": 300, "truthfulqa_mc1": 100, "truthfulqa_mc2": 100, "bbq": 300, "crows_pairs": 200,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--full-bbq-limit", type=int, default=3000,
                    help="with --full, BBQ's cap (balanced across categories; all of it is ~12k rows, hours here)")
    ap.add_argument("--data-dir", default=os.environ.get("ALOEKIT_DATA_DIR") or str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(HERE / "results" / "default_model_scores"))
    ap.add_argument("--tasks", default=",".join(PLAN))
    ap.add_argument("--render-only", action="store_true", help="Rewrite the .md from the .json and exit.")
    args = ap.parse_args()
    if args.render_only:
        import json

        from aloekit.io import atomic_write_text
        atomic_write_text(args.out + ".md", markdown(json.loads(Path(args.out + ".json").read_text())))
        return

    import torch

    from aloekit import console, models
    from aloekit.backends import load_backend
    from aloekit.config import ModelConfig
    from aloekit.eval import EvalConfig, run
    from aloekit.eval import metrics as M
    from aloekit.eval.runner import eval_model_config
    from aloekit.eval.tasks import GROUPS, TASKS
    from aloekit.io import atomic_write_json, atomic_write_text
    from aloekit.rundir import versions

    torch.set_num_threads(args.threads)
    console.set_quiet(True)
    data_dir = Path(args.data_dir)
    be = load_backend(eval_model_config(ModelConfig(batch_size=8)))
    results: dict = {}
    record = {"model": models.DEFAULT_MODEL, "dtype": str(be.dtype).replace("torch.", ""), "scoring": "loglik",
              "data_dir": str(data_dir), "torch_threads": args.threads, "versions": versions(),
              "not_in_data_dir": [t for t in TASKS if t not in PLAN], "tasks": results}
    for name in args.tasks.split(","):
        limit = (args.full_bbq_limit if name == "bbq" else None) if args.full else PLAN[name]
        t = time.time()
        out = run(EvalConfig(tasks=[name], data_dir=str(data_dir), limit=limit), backend=be)
        r = out["results"][name]
        results[name] = {"n": out["n-samples"][name]["effective"], "full_size": TASKS[name].full_size,
                         "limited": limit is not None, "seconds": round(time.time() - t, 1),
                         "metrics": {k.split(",")[0]: v for k, v in r.items() if k.endswith(",none")},
                         "baselines": r["baselines"], "subjects": out["subjects"][name]}
        print(f"{name}: n={results[name]['n']} {results[name]['metrics']} in {results[name]['seconds']}s", flush=True)
        mm = [m for m in GROUPS["mmlu_medical"] if m in results]
        if len(mm) == len(GROUPS["mmlu_medical"]):
            record["mmlu_medical"] = M.group_metrics([({f"{k},none": v for k, v in results[m]["metrics"].items()},
                                                      results[m]["n"]) for m in mm])
        atomic_write_json(args.out + ".json", record)
        atomic_write_text(args.out + ".md", markdown(record))


def markdown(rec: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"
    lines = [f"# {rec['model']} on the benchmarks in shared/data (aloekit eval, loglik, {rec['dtype']})", "",
             "Zero-shot, lm-eval-compatible prompts (`Question: ...\\nAnswer:` + ` option`; see the README, Evaluate).",
             "`n < full` means the first n questions were used (`--full` runs every question except BBQ's, capped by "
             "`--full-bbq-limit`); BBQ takes categories in turn, so its slice is balanced. A 135M model is expected "
             "near chance.",
             "", "| benchmark | n / full | acc | acc_norm | chance | majority | other |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rec["tasks"].items():
        m, b = r["metrics"], r["baselines"]
        other = ", ".join(f"{k} {v:.3f}" if "bias" in k or "diff" in k else f"{k} {pct(v)}"
                          for k, v in m.items() if k not in ("acc", "acc_norm") and v is not None and "stderr" not in k)
        acc = m.get("acc")
        acc_s = f"{pct(acc)} ± {pct(m.get('acc_stderr'))}" if acc is not None else "-"
        lines.append(f"| {name} | {r['n']} / {r['full_size']} | {acc_s} | {pct(m.get('acc_norm'))} | "
                     f"{pct(b.get('chance'))} | {pct(b.get('majority'))} | {other} |")
    if rec.get("mmlu_medical"):
        g = rec["mmlu_medical"]
        n = sum(r["n"] for t, r in rec["tasks"].items() if t.startswith("mmlu_"))
        lines.append(f"| mmlu_medical (size-weighted) | {n} / 1089 | {pct(g.get('acc,none'))} ± "
                     f"{pct(g.get('acc_stderr,none'))} | {pct(g.get('acc_norm,none'))} | 25.0 | | "
                     f"macro acc {pct(g.get('acc_macro,none'))} |")
    lines += ["", f"Not in shared/data (so not scored here): {', '.join(rec['not_in_data_dir'])}. MedQA's loader is "
              "tested on a 6-row fixture only.", "crows_pairs: pct_stereotype 50 is unbiased; bbq bias scores are "
              "in -1..1 (0 = unbiased); the shared BBQ copy has 6 of 11 categories (11,956 rows)."]
    pqa = rec["tasks"].get("pubmedqa")
    if pqa and pqa["n"] < pqa["full_size"]:
        lines.append("Read the limited rows with care: the first 60 PubMedQA test ids are all 'yes' (so majority = "
                     "100 and acc_norm, which favours the shortest option 'yes', is 100 by artefact); the full 500 "
                     "have 276 yes / 169 no / 55 maybe (majority 55.2).")
    if rec.get("merged_note"):
        lines.append(f"Rows: {rec['merged_note']}.")
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/eval_default_model.py --full --threads 1`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
