"""Red-team benchmark on the real default model.

1. The demo red team (configs/redteam_demo.yaml): ASR overall / per source / per family, XSTest over-refusal,
   MedSafetyBench refusal rate. Resumes from the run dir if it was already (partly) run.
2. Throughput, in the same process and dtype: our batched generation + judging vs transformers generate() on
   batches of the same size (the loop a user writes with transformers), and one prompt at a time (what most
   red-team scripts do), paired runs. Reports attempts/s and the ratios.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/redteam.py [--speed-n 16] [--speed-tokens 64] [--skip-run]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, data_dir, fmt, spread, write  # noqa: E402


def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(REPO / "configs" / "redteam_demo.yaml"))
    ap.add_argument("--output", default=str(REPO / "runs" / "redteam_demo"))
    ap.add_argument("--speed-n", type=int, default=16, help="attempts timed each way")
    ap.add_argument("--speed-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3, help="paired throughput runs")
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

    import torch
    from generation import Peer

    from aloekit import models
    from aloekit.prompts import resolve_system_prompt
    system = resolve_system_prompt(scfg.system, "system")
    chats = [_chat(p, system) for p in prompts]
    peer = Peer(models.prepare(cfg.model.name), str(backend.dtype).removeprefix("torch."))
    bs = cfg.model.batch_size
    peer.run(chats[:2], 4, 2)  # warm-up

    def ours() -> tuple[float, list[str], list]:
        t = time.perf_counter()
        out = generate_all(backend, prompts, scfg, store=None, desc="batched")
        texts = [g["response"] for g in out]
        labels = [judge.refusal(x, p) for x, p in zip(texts, prompts)]
        return time.perf_counter() - t, texts, labels

    def transformers_batched() -> tuple[float, list[str], list]:
        # the loop a user writes with transformers: batches of the same size in file order, generate(), judge
        t = time.perf_counter()
        texts = [x.strip() for x in peer.run(chats, args.speed_tokens, bs)["texts"]]
        labels = [judge.refusal(x, p) for x, p in zip(texts, prompts)]
        return time.perf_counter() - t, texts, labels

    def one_at_a_time() -> tuple[float, list[str], list]:
        t = time.perf_counter()
        texts = [x.strip() for x in peer.run(chats, args.speed_tokens, 1)["texts"]]
        labels = [judge.refusal(x, p) for x, p in zip(texts, prompts)]
        return time.perf_counter() - t, texts, labels

    runs: dict[str, list] = {"ours": [], "peer": [], "one_at_a_time": []}
    for _ in range(args.runs):
        runs["ours"].append(ours())
        runs["peer"].append(transformers_batched())
        runs["one_at_a_time"].append(one_at_a_time())
    n = len(prompts)
    o_texts, o_labels = runs["ours"][0][1:]
    th = {"attempts": n, "max_new_tokens": args.speed_tokens, "batch_size": bs, "runs": args.runs,
          "peer": f"transformers generate(), batches of {bs} in file order, same dtype, marker judge",
          "requests_sample": len(set(requests)),
          "torch_threads": torch.get_num_threads()}
    for k, rs in runs.items():
        th[k] = {"attempts_per_s": spread([n / r[0] for r in rs], 3), "seconds": spread([r[0] for r in rs]),
                 "identical_outputs": round(sum(a == b for a, b in zip(o_texts, rs[0][1])) / n, 3),
                 "identical_judgements": round(sum(a == b for a, b in zip(o_labels, rs[0][2])) / n, 3)}
    th["speedup_vs_peer"] = spread([p[0] / o[0] for o, p in zip(runs["ours"], runs["peer"])])
    th["speedup_vs_one_at_a_time"] = spread([p[0] / o[0] for o, p in zip(runs["ours"], runs["one_at_a_time"])])
    payload["throughput"] = th

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
    md += ["## Throughput", "",
           f"{th['attempts']} attempts, {th['max_new_tokens']} new tokens, same dtype and process, marker judge; "
           f"torch threads {th['torch_threads']}; {th['runs']} paired runs (ours, peer, one-at-a-time, ...): "
           "median (min–max). Peer: transformers `generate()` on batches of the same size in file order, the "
           "loop a user writes; one-at-a-time: the same with batch 1, as most red-team scripts do.",
           "", "| | attempts/s | seconds | identical outputs / judgements vs ours |", "|---|---:|---:|---:|"]
    for k, label in (("ours", f"aloekit (length-sorted batches of {th['batch_size']})"),
                     ("peer", f"transformers generate(), batch {th['batch_size']}"),
                     ("one_at_a_time", "transformers generate(), one prompt at a time")):
        md.append(f"| {label} | {fmt(th[k]['attempts_per_s'])} | {fmt(th[k]['seconds'])} | "
                  f"{pct(th[k]['identical_outputs'])} / {pct(th[k]['identical_judgements'])} |")
    md += ["", f"Speedup vs the batched peer: **{fmt(th['speedup_vs_peer'], 'x')}**; vs one at a time: "
           f"{fmt(th['speedup_vs_one_at_a_time'], 'x')}. Outputs differ where bf16 rounding of another batch "
           "shape changes a near-tie; judgements are what the ASR counts."]
    write("redteam", payload, "\n".join(md))


if __name__ == "__main__":
    main()
