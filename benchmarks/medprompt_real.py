"""The default model end to end with Medprompt-style inference: PubMedQA test with an example database built
from the 500 non-test PubMedQA questions, HEAD-QA test with a database built from HEAD-QA train;
zeroshot vs cot vs sc-cot vs medprompt, accuracy and tokens per question.

    .venv/bin/python benchmarks/medprompt_real.py --pool-limit 64 --limit 40 [--work /tmp/medprompt_real]

Builds (or resumes) both databases under --work, runs `aloekit.medprompt.run` for each benchmark (run dirs with
samples and the accuracy-vs-tokens plot under --work), writes benchmarks/results/medprompt_real.{json,md}.
The recorded numbers came from one process per task, merged:

    ... --tasks headqa --limit 100 --pool-limit 400 --threads 1 --name medprompt_real_headqa
    ... --tasks pubmedqa --limit 40 --pool-limit 200 --threads 1 --name medprompt_real_pubmedqa
    ... --name medprompt_real --merge medprompt_real_pubmedqa medprompt_real_headqa
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=40, help="test questions per benchmark")
    ap.add_argument("--pool-limit", type=int, default=64, help="pool questions per database")
    ap.add_argument("--work", default="/tmp/medprompt_real")
    ap.add_argument("--strategies", default="zeroshot,cot,sc-cot,medprompt")
    ap.add_argument("--tasks", default="pubmedqa,headqa")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (1 is fastest on a shared machine)")
    ap.add_argument("--name", default="medprompt_real", help="results file name (per-task runs are merged with "
                    "--merge a b)")
    ap.add_argument("--merge", nargs="*", help="merge these results files into --name and exit")
    args = ap.parse_args()
    if args.merge:
        return merge(args.name, args.merge)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    from _common import data_dir, write

    from aloekit.backends import load_backend
    from aloekit.config import ModelConfig
    from aloekit.medprompt import DBConfig, MedpromptEvalConfig, StrategyConfig, run
    from aloekit.medprompt.db import ExampleDB, build_db
    from aloekit.medprompt.pools import load_pool

    work = Path(args.work)
    model = ModelConfig(batch_size=args.batch_size)
    backend = load_backend(model)
    root = data_dir()
    out: dict = {"model": model.name, "dtype": str(backend.dtype), "limit": args.limit, "pool_limit": args.pool_limit,
                 "max_new_tokens": args.max_new_tokens, "members": args.members, "shots": args.shots,
                 "batch_size": args.batch_size, "tasks": {}}
    for task in args.tasks.split(","):
        t0 = time.time()
        pool = load_pool(task, root, limit=out['pool_limit'])
        dbcfg = DBConfig(pool=task, limit=out['pool_limit'], output=str(work / f"db_{task}"),
                         max_new_tokens=out['max_new_tokens'], retry_temperatures=[0.0, 0.7])
        meta = build_db(backend, pool.docs, dbcfg, model_name=model.name, pool_source=pool.source)
        db = ExampleDB.load(dbcfg.output)
        t_db = time.time() - t0
        cfg = MedpromptEvalConfig(model=model, task=task, strategies=args.strategies.split(","), limit=out['limit'],
                                  data_dir=str(root), db=dbcfg.output, output=str(work / f"run_{task}"),
                                  params=StrategyConfig(max_new_tokens=out['max_new_tokens'], members=out['members'],
                                                        shots=out['shots']))
        res = run(cfg, backend=backend, db=db)
        out["tasks"][task] = {"db": {k: meta[k] for k in ("pool_size", "examples", "kept_fraction",
                                                          "tries_histogram", "generated_tokens")},
                              "db_seconds": round(t_db, 1), "strategies": res["strategies"],
                              "run_dir": cfg.output}
    write(args.name, out, render(out))


def render(out: dict) -> str:
    md = [f"# Medprompt strategies on {out['model']} ({out['dtype']}, CPU)", "",
          "The first n test questions of each benchmark. Databases from the first pool questions (PubMedQA: "
          "non-test ids; HEAD-QA: train), a greedy try + one retry at T=0.7, only chains reaching the gold answer "
          f"kept; chains capped at {out['max_new_tokens']} tokens; {out['shots']} nearest examples; ensembles of "
          f"{out['members']} at T=0.7 with adaptive stopping; tokens and seconds are per question.", ""]
    for task, r in out["tasks"].items():
        d = r["db"]
        n = next(iter(r["strategies"].values()))["n"]
        md += [f"## {task} (n = {n})", "", f"database: {d['examples']} of {d['pool_size']} pool questions kept "
               f"(kept at try: {d['tries_histogram']})", "",
               "| strategy | accuracy | generated tok/q | prompt tok/q | members/q | s/q |", "|---|---|---|---|---|---|"]
        for name, s in r["strategies"].items():
            md.append(f"| {name} | {100 * s['accuracy']:.1f} | {s['generated_tokens_per_question']} | "
                      f"{s['prompt_tokens_per_question']} | {s['members_per_question']} | "
                      f"{s['seconds_per_question']} |")
        md.append("")
    return "\n".join(md)


def merge(name: str, parts: list[str]) -> None:
    import json

    from _common import RESULTS, write
    outs = [json.loads((RESULTS / f"{p}.json").read_text()) for p in parts]
    out = {k: v for k, v in outs[0].items() if k not in ("machine", "tasks")}
    out["tasks"] = {t: r for o in outs for t, r in o["tasks"].items()}
    write(name, out, render(out))


if __name__ == "__main__":
    main()
