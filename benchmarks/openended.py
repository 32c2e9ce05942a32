"""Open-ended medical QA on the default model: `aloekit eval --tasks open_medmcqa` with the model answering and
judging itself twice (JSON verdicts, and the most likely verdict word), plus both judges on the bundled labelled
answers (resources/judge_calibration/open_qa.jsonl).

What it reports: the rewrite filter's kept/dropped counts, accuracy by judge, unparsed replies, Cohen's kappa
between the judges, ROUGE-L, each judge's agreement with the human labels, and the time per question of each
step. Each run starts from an empty run directory (no cache); the runs must give identical numbers (seeded,
greedy), which the script checks. There is no peer: no maintained tool runs this pipeline (lm-eval has no LLM
judge), so this measures our cost only.

    python benchmarks/openended.py [--limit 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from _common import data_dir, write

from aloekit.config import ModelConfig
from aloekit.eval.runner import EvalConfig, run

TASK = "open_medmcqa"


def once(limit: int, calibrate: bool) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as tmp:
        m = ModelConfig()
        cfg = EvalConfig(model=m, tasks=[TASK], limit=limit, data_dir=str(data_dir()), output=tmp,
                         judges=[m, m], judge_mode="generate,likelihood", max_new_tokens=256, calibrate=calibrate)
        t = time.time()
        res = run(cfg)
        return res, time.time() - t


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    # the calibration set is scored in the first run only: its verdicts are deterministic and it is a fixed cost
    runs = [once(args.limit, calibrate=i == 0) for i in range(args.runs)]
    first = runs[0][0]
    identical = all(r["results"][TASK] == first["results"][TASK] for r, _ in runs)
    info = first["open_ended"]
    task = info["tasks"][TASK]
    n = task["rewrite"]["kept"]
    labels = [j["label"] for j in info["judges"]]
    steps = list(task["seconds"])
    per_q = {s: [r["open_ended"]["tasks"][TASK]["seconds"][s] / n for r, _ in runs] for s in steps}
    totals = [w for _, w in runs]
    res = first["results"][TASK]

    md = [f"# Open-ended QA ({TASK}, first {n} questions kept) on the default model",
          "", f"Answerer and both judges: smollm2-135m-instruct ({first['config']['dtype']}, batch "
          f"{first['config']['batch_size']}), greedy, answers up to 256 tokens. {len(runs)} runs from empty run "
          f"folders; identical results across runs: {'yes' if identical else 'NO'}.",
          "", "## Rewrite filter", "",
          f"{task['rewrite']['examined']} questions examined, {n} kept, {task['rewrite']['dropped']} dropped:",
          *[f"- {k}: {v}" for k, v in task["rewrite"]["dropped_by_reason"].items()],
          "", "## Scores", "", "| judge | correct % | partial | incorrect | refused | unparsed | retried |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for lab in labels:
        s = task["judges"][lab]
        md.append(f"| {lab} | {100 * s['acc']:.1f} | {s['partial']} | {s['incorrect']} | {s['refused']} | "
                  f"{s['unparsed']} | {s['retried']} |")
    md += ["", f"Cohen's kappa between the two judges: {task.get('kappa')}. ROUGE-L F1 vs the gold option: "
           f"{res['rouge_l,none']:.3f} (recall {res['rouge_l_recall,none']:.3f}).",
           "", "## Judges vs the human labels (72 written answers: 28 correct, 18 partial, 18 incorrect, 8 refused)",
           "", "| judge | agreement % | kappa | correct-vs-rest agreement % | unparsed |", "|---|---:|---:|---:|---:|"]
    for lab in labels:
        c = info["calibration"][lab]
        md.append(f"| {lab} | {100 * c['agreement']:.1f} | {c['kappa']} | {100 * c['correct_vs_rest_agreement']:.1f}"
                  f" | {c['unparsed']} |")
    md += ["", "A 135M judge is at chance: it copies the JSON schema instead of choosing (generate) or calls almost "
           "everything correct (likelihood). These numbers show the mechanics, not the model; use a strong judge "
           "(`--judge openai:<model>@<url>` or a local 8B+ model) for real measurements.",
           "", "## Time per question (seconds; median and min-max of the runs)", "", "| step | s/question |",
           "|---|---:|"]
    md += [f"| {s} | {spread(v)} |" for s, v in per_q.items()]
    if len(totals) > 1:
        md += [f"| whole run incl. model load ({n} q) | {spread([t / n for t in totals[1:]])} |"]
    md += ["", f"The first run also scored both judges on the 72 calibration answers: {totals[0]:.0f} s in all."]
    write("openended", {"task": TASK, "limit": args.limit, "runs": len(runs), "identical_across_runs": identical,
                        "results": res, "open_ended": info, "seconds_per_question": per_q, "wall_s": totals},
          "\n".join(md))


if __name__ == "__main__":
    main()
