"""Red-team benchmark on the real default model.

1. The demo red team (configs/redteam_demo.yaml): ASR overall / per source / per family, XSTest over-refusal,
   MedSafetyBench refusal rate. Resumes from the run dir if it was already (partly) run.
2. Throughput, in the same process on the same backend: our batched generation + judging vs the naive loop most
   red-team scripts use (one prompt -> generate -> judge, then the next). Reports attempts/s and the ratio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/redteam.py [--speed-n 16] [--speed-tokens 64] [--skip-run]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, data_dir, write  # noqa: E402


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs" / "redteam_demo.yaml"))
    ap.add_argument("--output", default=str(REPO / "runs" / "redteam_demo"))
    ap.add_argument("--speed-n", type=int, default=16, help="attempts timed each way")
    ap.add_argument("--speed-tokens", type=int, default=64)
    ap.add_argument("--skip-run", action="store_true", help="only the throughput comparison")
    ap.add_argument("--resume", action="store_true", help="reuse generations already in the run dir "
                    "(default: start fresh, so the timings are real)")
    args = ap.parse_args()

    from aloekit.backends import load_backend
    from aloekit.config import load_config
    from aloekit.redteam import RedteamConfig, run
    from aloekit.redteam.judges import MarkerJudge
    from aloekit.redteam.run import _chat, generate_all, load_attacks, load_requests, plan_attempts

    cfg = load_config(RedteamConfig, args.config, [f"data_dir={data_dir()}", f"output={args.output}"])
    backend = load_backend(cfg.model)
    payload: dict = {"model": cfg.model.name, "backend": cfg.model.backend, "dtype": str(backend.dtype),
                     "config": Path(args.config).name}

    if not args.skip_run:
        if not args.resume:
            import shutil
            shutil.rmtree(Path(args.output) / ".partial", ignore_errors=True)
        t = time.perf_counter()
        s = run(cfg, backend=backend, output=args.output)
        payload["redteam"] = {
            "wall_s": round(time.perf_counter() - t, 1), "attempts": s["attacks"]["n"], "budget": cfg.budget,
            "max_new_tokens": cfg.sampling.max_new_tokens, "judges": cfg.judges, "asr": s["attacks"]["asr"],
            "judge_asr": s["judge_asr"], "judge_labels": s["judge_labels"], "agreement": s.get("agreement"),
            "refusal_rate_under_attack": s["attacks"]["refusal_rate"],
            "unclear_rate_under_attack": s["attacks"]["unclear_rate"],
            "per_source": s["attacks"]["per_source"], "per_family": s["attacks"]["per_family"],
            "per_attack": s["attacks"]["per_attack"],
            "xstest_over_refusal": s.get("over_refusal"), "medsafety_refusal": s.get("medsafety_refusal"),
            "pairs": s.get("pairs"), "throughput": s["throughput"]}

    # throughput: the same attempts, the same backend and sampling, both ways
    root = data_dir()
    plan = plan_attempts(load_requests(cfg, root), load_attacks(cfg, root), args.speed_n, cfg.seed + 1)
    prompts = [a(r.text) for r, a in plan]
    requests = [r.text for r, _ in plan]
    scfg = cfg.model_copy(deep=True)
    scfg.sampling.max_new_tokens = args.speed_tokens
    judge = MarkerJudge()

    t = time.perf_counter()
    batched = generate_all(backend, prompts, scfg, store=None, desc="batched")
    labels_b = [judge.refusal(g["response"], p) for g, p in zip(batched, prompts)]
    t_batched = time.perf_counter() - t

    t = time.perf_counter()
    naive, labels_n = [], []
    for p in prompts:  # what a typical red-team loop does
        out = backend.generate([_chat(p, scfg.system)], scfg.sampling)[0][0]
        naive.append(out.text.strip())
        labels_n.append(judge.refusal(out.text.strip(), p))
    t_naive = time.perf_counter() - t
    same_text = sum(a["response"] == b for a, b in zip(batched, naive)) / len(prompts)
    same_label = sum(a == b for a, b in zip(labels_b, labels_n)) / len(prompts)
    payload["throughput"] = {
        "attempts": len(prompts), "max_new_tokens": args.speed_tokens, "batch_size": cfg.model.batch_size,
        "ours_attempts_per_s": round(len(prompts) / t_batched, 3), "naive_attempts_per_s": round(len(prompts) / t_naive, 3),
        "ours_s": round(t_batched, 2), "naive_s": round(t_naive, 2), "speedup": round(t_naive / t_batched, 2),
        "identical_outputs": round(same_text, 3), "identical_judgements": round(same_label, 3),
        "generated_tokens_ours": sum(g["completion_tokens"] for g in batched), "requests_sample": len(set(requests)),
        "torch_threads": __import__("torch").get_num_threads()}

    th = payload["throughput"]
    md = [f"# Red-team benchmark: {cfg.model.name} ({payload['dtype']}, CPU)", ""]
    if "redteam" in payload:
        r = payload["redteam"]
        tr = r["throughput"]
        md += [f"Demo red team: {r['attempts']} attempts, max_new_tokens {r['max_new_tokens']}, judges "
               f"{', '.join(r['judges'])} (first decides ASR); greedy decoding, seed {cfg.seed}. "
               f"{tr['prompts']} generations ({tr['resumed']} resumed from an earlier run) in {tr['generate_s']} s, "
               f"judging {tr['judge_s']} s, {r['wall_s']} s in all.", "",
               "| metric | value |", "|---|---:|",
               f"| ASR ({r['judges'][0]} judge, primary) | {pct(r['asr'])} |"]
        for k, v in r["judge_asr"].items():
            labels = ", ".join(f"{a} {b}" for a, b in sorted(r["judge_labels"][k].items()))
            md.append(f"| ASR by `{k}` judge ({labels}) | {pct(v)} |")
        md += [f"| refusal rate under attack | {pct(r['refusal_rate_under_attack'])} |",
               f"| empty / degenerate / echoed answers | {pct(r['unclear_rate_under_attack'])} |"]
        if r["xstest_over_refusal"]:
            md.append(f"| XSTest safe-prompt over-refusal ({r['xstest_over_refusal']['n']}) | "
                      f"{pct(r['xstest_over_refusal']['refusal_rate'])} |")
        if r["medsafety_refusal"]:
            md.append(f"| MedSafetyBench test refusal, no attack ({r['medsafety_refusal']['n']}) | "
                      f"{pct(r['medsafety_refusal']['refusal_rate'])} |")
        for k, v in (r["agreement"] or {}).items():
            md.append(f"| judge agreement {k} | {pct(v['agreement'])} (kappa {v['kappa']}) |")
        if r["pairs"]:
            md.append(f"| safety DPO pairs (train-split + general sources) | {r['pairs']['n']} |")
        md += ["", "| source | n | ASR |", "|---|---:|---:|"]
        md += [f"| {k} | {v['n']} | {pct(v['rate'])} |" for k, v in r["per_source"].items()]
        md += ["", "| attack family | n | ASR |", "|---|---:|---:|"]
        md += [f"| {k} | {v['n']} | {pct(v['rate'])} |" for k, v in r["per_family"].items()]
        md += [""]
    md += ["## Throughput: batched vs one-at-a-time", "",
           f"{th['attempts']} attempts, {th['max_new_tokens']} new tokens, same backend and process, marker judge; "
           f"torch threads {th['torch_threads']} (run with OMP_NUM_THREADS=1: on this shared 2-core machine two "
           "spinning threads per process ran ~10x slower).",
           "", "| | attempts/s | seconds |", "|---|---:|---:|",
           f"| aloekit (length-sorted batches of {th['batch_size']}) | {th['ours_attempts_per_s']} | {th['ours_s']} |",
           f"| naive loop (one prompt at a time) | {th['naive_attempts_per_s']} | {th['naive_s']} |",
           f"| **speedup** | **{th['speedup']}x** | |", "",
           f"Identical greedy outputs: {pct(th['identical_outputs'])}; identical judgements: "
           f"{pct(th['identical_judgements'])} (bf16 batched vs unbatched kernels can differ in late tokens)."]
    write("redteam", payload, "\n".join(md))


if __name__ == "__main__":
    main()
