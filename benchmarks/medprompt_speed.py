"""Medprompt ensemble cost: a naive ensemble (how prompt_engine runs: 5 independent calls per question, one
prompt per call, no shared-prefix reuse, no early stop) vs aloekit's engine (rounds batched across questions,
adaptive stopping) on the same questions, the same kNN examples and the same option orders per member.

    .venv/bin/python benchmarks/medprompt_speed.py --db /tmp/medprompt_real/db_headqa --limit 40

Both run in this process on the default model. Reports the wall-time ratio, the generated-token ratio and the
accuracy of each. Goal: >= 2.5x less wall time, >= 2x fewer generated tokens, accuracy within 1 point.
Writes benchmarks/results/medprompt_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def naive(backend, docs, cfg, db) -> dict:
    """One generate call per member and question, every member run: the baseline."""
    from aloekit.config import SamplingConfig
    from aloekit.eval.scoring import parse_answer
    from aloekit.medprompt import vote as V
    from aloekit.medprompt.engine import member_prompt, member_seed, prepare
    qs = prepare(docs, cfg, db)  # same retrieval and option orders as ours (retrieval time not counted here)
    t0 = time.perf_counter()
    correct, gen, prompt = 0, 0, 0
    answers_all, preds = [], []
    for q in qs:
        answers = []
        for m in range(cfg.members):
            # the member's own seed, as in ours: the two runs draw the same chain for a member (up to the rounding
            # of a different batch shape), so the accuracies are comparable question by question
            s = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                               seeds=[member_seed(cfg, q.doc, m)])
            c = backend.generate([member_prompt(q, m, cfg)], s, n=1)[0][0]
            answers.append(V.map_back(parse_answer(c.text, len(q.doc.options)), q.perms[m]))
            gen += c.completion_tokens
            prompt += c.prompt_tokens
        pred, _ = V.vote(answers, len(q.doc.options), V.seeded_rng(cfg.seed, "tie", q.doc.doc_id, q.doc.question))
        correct += pred == q.doc.gold
        answers_all.append(answers)
        preds.append(pred)
    wall = time.perf_counter() - t0
    n = len(qs)
    return {"accuracy": correct / n, "wall_seconds": wall, "generated_tokens": gen, "prompt_tokens": prompt,
            "generated_tokens_per_question": gen / n, "answers": answers_all, "preds": preds}


def ours(backend, docs, cfg, db) -> dict:
    from aloekit.medprompt import evaluate, summarize
    from aloekit.medprompt.engine import prepare
    prepare(docs, cfg, db)  # warm the embedder, as naive() does, so neither pays the load
    t0 = time.perf_counter()
    res = evaluate(backend, docs, cfg, db)
    wall = time.perf_counter() - t0
    s = summarize(res)
    from aloekit.eval.data import LETTERS
    answers = [[LETTERS.index(c["answer"]) if c["answer"] else -1 for c in sorted(r["chains"], key=lambda c: c["member"])]
               for r in res]
    return {"answers": answers, "preds": [LETTERS.index(r["pred"]) if r["pred"] else -1 for r in res],
            "accuracy": s["accuracy"], "wall_seconds": wall, "generated_tokens": sum(r["generated_tokens"] for r in res),
            "prompt_tokens": sum(r["prompt_tokens"] for r in res),
            "generated_tokens_per_question": s["generated_tokens_per_question"],
            "members_per_question": s["members_per_question"], "early_stopped": s["early_stopped"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--task", default="headqa")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--order", default="ours,naive", help="which runs first (the machine is shared)")
    ap.add_argument("--reuse-naive", action="store_true",
                    help="take the naive run from the last results file (same settings) and run ours only")
    ap.add_argument("--dtype", default="auto", help="model dtype for both runs (auto: bf16 on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--name", default="medprompt_speed", help="results file name under benchmarks/results")
    ap.add_argument("--note", default="The machine's 2 cores were shared with other jobs: wall times are noisy; "
                    "the token ratio is not.", help="how the run was made (goes into the markdown)")
    args = ap.parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    from _common import data_dir, write

    from aloekit.backends import load_backend
    from aloekit.config import ModelConfig
    from aloekit.medprompt import StrategyConfig
    from aloekit.medprompt.db import ExampleDB
    from aloekit.medprompt.runner import load_task_docs

    backend = load_backend(ModelConfig(batch_size=args.batch_size, dtype=args.dtype))
    docs = load_task_docs(args.task, str(data_dir()), False, False, args.limit).docs
    db = ExampleDB.load(args.db)
    cfg = StrategyConfig(strategy="medprompt", members=args.members, shots=args.shots,
                         max_new_tokens=args.max_new_tokens)
    runs = {}
    previous = None
    order = args.order.split(",")
    if args.reuse_naive:
        import json

        from _common import RESULTS
        last = json.loads((RESULTS / f"{args.name}.json").read_text())
        same = ("task", "members", "shots", "max_new_tokens")
        if any(last[k] != v for k, v in zip(same, (args.task, args.members, args.shots, args.max_new_tokens))) \
                or last["n"] != len(docs):
            raise SystemExit("--reuse-naive: the last results file was made with other settings")
        if "answers" not in last["naive"]:
            raise SystemExit("--reuse-naive: the last naive run predates per-member seeds; run both")
        runs["naive"] = {**last["naive"], "reused_from": last["machine"]["date"]}
        previous = {**last["ours"], "batch_size": last["batch_size"], "date": last["machine"]["date"]}
        order = ["ours"]
    for name in order:
        runs[name] = (ours if name == "ours" else naive)(backend, docs, cfg, db)
        print(name, runs[name], flush=True)
    a, b = runs["naive"], runs["ours"]
    # the members ours ran are the first members of the naive run: how many wrote the same answer
    run = [(x, y) for xs, ys in zip(a["answers"], b["answers"]) for x, y in zip(xs, ys)]
    agreement = {"members_compared": len(run), "same_answer": sum(x == y for x, y in run),
                 "same_prediction": sum(x == y for x, y in zip(a["preds"], b["preds"])), "questions": len(docs)}
    ratios = {"wall_time": a["wall_seconds"] / b["wall_seconds"],
              "generated_tokens": a["generated_tokens"] / max(1, b["generated_tokens"]),
              "accuracy_points": 100 * (b["accuracy"] - a["accuracy"])}
    goal = {"wall_time>=2.5": ratios["wall_time"] >= 2.5, "generated_tokens>=2": ratios["generated_tokens"] >= 2,
            "accuracy_within_1pt": abs(ratios["accuracy_points"]) <= 1.0}
    payload = {"task": args.task, "n": len(docs), "members": args.members, "shots": args.shots,
               "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "dtype": str(backend.dtype), "threads": args.threads, "db": args.db,
               "naive": a, "ours": b, "ratios": ratios, "goal_met": goal, "agreement": agreement,
               "previous_ours": previous}
    md = f"""# Medprompt ensemble: naive vs aloekit ({args.task}, n={len(docs)}, default model, CPU)

Same questions, same {args.shots} kNN examples and the same option order for each of the {args.members} members
(T=0.7, chains up to {args.max_new_tokens} tokens). Naive: one generate call per member and question, all
members run (prompt_engine's way; its retries of unparsed answers are not mirrored). Ours: rounds batched across
questions, shared prefixes, adaptive stopping (tie-rule aware).

| | accuracy | wall s | generated tokens | generated tok/q | prompt tokens |
|---|---|---|---|---|---|
| naive | {100 * a['accuracy']:.1f} | {a['wall_seconds']:.1f} | {a['generated_tokens']} | {a['generated_tokens_per_question']:.1f} | {a['prompt_tokens']} |
| aloekit | {100 * b['accuracy']:.1f} | {b['wall_seconds']:.1f} | {b['generated_tokens']} | {b['generated_tokens_per_question']:.1f} | {b['prompt_tokens']} |

Wall time {ratios['wall_time']:.2f}x less (goal 2.5x: {'met' if goal['wall_time>=2.5'] else 'NOT met'}),
generated tokens {ratios['generated_tokens']:.2f}x fewer (goal 2x: {'met' if goal['generated_tokens>=2'] else 'NOT met'}),
accuracy {ratios['accuracy_points']:+.1f} points (goal within 1: {'met' if goal['accuracy_within_1pt'] else 'NOT met'}).
Members run per question (ours): {b['members_per_question']}; questions stopped early: {b['early_stopped']}/{len(docs)}.
Each member samples from its own seed in both runs: of the {agreement['members_compared']} members ours ran,
{agreement['same_answer']} gave the naive run's answer (the rest: the rounding of another batch shape changed a
draw); {agreement['same_prediction']}/{len(docs)} questions got the same prediction.
Both runs in {backend.dtype}, {args.threads or 'default'} torch thread(s), backend batch size {args.batch_size}.
{args.note}
"""
    if previous:
        md += (f"\nThe naive run is the one measured at {a['reused_from']} (same questions and settings); ours was "
               f"re-measured with backend batch size {args.batch_size}. The earlier run of ours (batch size "
               f"{previous['batch_size']}, at {previous['date']}, overlapping a test run) took "
               f"{previous['wall_seconds']:.1f} s.\n")
    write(args.name, payload, md)


if __name__ == "__main__":
    main()
