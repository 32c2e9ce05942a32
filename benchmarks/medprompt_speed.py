"""Medprompt ensemble cost: a naive ensemble written with transformers' batched `generate()` vs aloekit's engine, and
the opt-in risky stop (`stop_risk`) against the full ensemble.

    .venv/bin/python benchmarks/medprompt_speed.py --db runs/db_headqa [--limit 100] [--runs 3]
        [--stop-risk 0.01,0.05,0.2] [--risk-limit 200] [--risk-mode engine|replay]

1. Speed (`--limit` questions, `--runs` paired runs, order alternating: ours, peer / peer, ours ...; median (min–max)).
   Peer: the naive ensemble a transformers user writes: the same model folder in the same dtype
   (`generation.Peer`: `from_pretrained`, left padding), one `generate()` call per question holding all K member
   prompts (the same prompts: same kNN examples, same option order per member), every member run, majority vote
   with the same tie rule. Sampling (`--peer-sampling`): `seeded` (default) passes transformers' own temperature
   and top-p warpers plus aloekit's per-row Gumbel processor (`RowGumbel`, seeded with each member's seed) to
   `generate(do_sample=False, logits_processor=...)`, which is how our members sample, so each member draws the
   same tokens as ours up to the rounding of another batch shape; `native` uses `generate(do_sample=True)` with
   one `torch.manual_seed` per question, which cannot match our per-member draws token for token (compare
   accuracy, tokens and time only). Ours: `evaluate()` with the default exact adaptive stop (rounds batched across
   questions, shared prefixes). Retrieval: the peer gets its examples before its clock starts; ours retrieves inside
   `evaluate()`, on its clock.
2. Stop rules (`--risk-limit` questions, once; the quantities are deterministic up to bf16 rounding): the full
   ensemble (all K members, `adaptive=False`), the exact rule and `stop_risk=δ` for each δ of `--stop-risk`:
   generated tokens saved against the full ensemble, accuracy, the share of questions whose answer differs from the
   full ensemble's, and the model's own expectation of that share (the mean overturn risk at the stop). `engine`
   runs the engine for each rule; `replay` (and, in engine mode, the cross-check) replays each rule on the full
   run's member answers (`vote.members_run`; members sample from their own seeds).

Writes benchmarks/results/<--name>.{json,md} (default medprompt_speed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def member_answers(r: dict) -> list[int]:
    from aloekit.benchmarks import LETTERS
    return [LETTERS.index(c["answer"]) if c["answer"] else -1 for c in sorted(r["chains"], key=lambda c: c["member"])]


def letter_index(x: str | None) -> int:
    from aloekit.benchmarks import LETTERS
    return LETTERS.index(x) if x else -1


def run_peer(peer, qs, cfg, mode: str, device) -> dict:
    """All K members of a question in one batched generate() call; every member runs."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    from aloekit.backends.hf import RowGumbel
    from aloekit.benchmarks import parse_answer
    from aloekit.medprompt import vote as V
    from aloekit.medprompt.engine import member_prompt, member_seed, tie_rng
    K = cfg.members
    correct = gen = prompt = 0
    answers_all, texts_all, preds, calls = [], [], [], 0
    t0 = time.perf_counter()
    for q in qs:
        enc = peer.tok.apply_chat_template([member_prompt(q, m, cfg) for m in range(K)], add_generation_prompt=True,
                                           return_tensors="pt", padding=True, return_dict=True)
        enc = {k: v.to(device) for k, v in enc.items()}
        kw = dict(max_new_tokens=cfg.max_new_tokens, pad_token_id=peer.tok.pad_token_id, repetition_penalty=1.0)
        if mode == "seeded":
            procs = [TemperatureLogitsWarper(cfg.temperature), TopPLogitsWarper(cfg.top_p),
                     RowGumbel([member_seed(cfg, q.doc, m) for m in range(K)])]
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                      logits_processor=LogitsProcessorList(procs))
        else:
            torch.manual_seed(member_seed(cfg, q.doc, 0))
            kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
        with torch.inference_mode():
            out = peer.model.generate(**enc, **kw)
        calls += 1
        prompt += int(enc["attention_mask"].sum())
        answers, texts = [], []
        for m, row in enumerate(out[:, enc["input_ids"].shape[1]:].tolist()):
            cut = next((k for k, t in enumerate(row) if t in peer.eos), None)
            row = row[:cut + 1] if cut is not None else row
            gen += len(row)
            text = peer.tok.decode(row, skip_special_tokens=True)
            answers.append(V.map_back(parse_answer(text, len(q.doc.options)), q.perms[m]))
            texts.append(text)
        pred = V.vote(answers, len(q.doc.options), tie_rng(cfg, q.doc)())[0]
        correct += pred == q.doc.gold
        answers_all.append(answers)
        texts_all.append(texts)
        preds.append(pred)
    n = len(qs)
    return {"accuracy": correct / n, "wall_seconds": time.perf_counter() - t0, "generated_tokens": gen,
            "prompt_tokens": prompt, "generate_calls": calls, "members_per_question": float(K),
            "answers": answers_all, "texts": texts_all, "preds": preds}


def run_ours(backend, docs, cfg, db) -> tuple[dict, list[dict]]:
    from aloekit.medprompt import evaluate, summarize
    t0 = time.perf_counter()
    res = evaluate(backend, docs, cfg, db)
    wall = time.perf_counter() - t0
    s = summarize(res)
    return {"accuracy": s["accuracy"], "wall_seconds": wall, "generated_tokens": sum(r["generated_tokens"] for r in res),
            "prompt_tokens": sum(r["prompt_tokens"] for r in res), "members_per_question": s["members_per_question"],
            "early_stopped": s["early_stopped"], "stop_rule": s["stop_rule"],
            "answers": [member_answers(r) for r in res], "preds": [letter_index(r["pred"]) for r in res],
            "texts": [[c["text"] for c in sorted(r["chains"], key=lambda c: c["member"])] for r in res]}, res


def speed(args, backend, peer, docs, cfg, db) -> dict:
    from _common import spread

    from aloekit.medprompt.engine import prepare
    qs = prepare(docs, cfg, db)  # the peer's retrieval and option orders (the same as ours), off its clock
    runs: dict[str, list[dict]] = {"ours": [], "peer": []}
    for i in range(args.runs):
        for name in (("ours", "peer") if i % 2 == 0 else ("peer", "ours")):
            r = run_ours(backend, docs, cfg, db)[0] if name == "ours" else \
                run_peer(peer, qs, cfg, args.peer_sampling, backend.device)
            runs[name].append(r)
            print(f"run {i + 1} {name}: {r['wall_seconds']:.1f} s, acc {r['accuracy']:.3f}, "
                  f"{r['generated_tokens']} generated tokens", flush=True)
    out: dict = {"runs": args.runs, "order": "alternating, ours first in odd runs"}
    for name, rs in runs.items():
        out[name] = {"wall_seconds": spread([r["wall_seconds"] for r in rs], 1),
                     "accuracy": spread([r["accuracy"] for r in rs], 4),
                     "generated_tokens": spread([r["generated_tokens"] for r in rs], 0),
                     "prompt_tokens": spread([r["prompt_tokens"] for r in rs], 0),
                     "members_per_question": spread([r["members_per_question"] for r in rs], 3),
                     "per_run": [{k: v for k, v in r.items() if k not in ("answers", "preds", "texts")} for r in rs],
                     "answers_run1": rs[0]["answers"], "preds_run1": rs[0]["preds"]}
    a, b = runs["peer"], runs["ours"]
    out["ratio_wall"] = spread([p["wall_seconds"] / o["wall_seconds"] for p, o in zip(a, b)])
    out["ratio_generated_tokens"] = spread([p["generated_tokens"] / max(1, o["generated_tokens"]) for p, o in zip(a, b)])
    out["accuracy_points"] = spread([100 * (o["accuracy"] - p["accuracy"]) for p, o in zip(a, b)], 1)
    # the members ours ran are the first members of the peer's: how many wrote the same answer (run 1)
    pairs = [(x, y) for xs, ys in zip(a[0]["answers"], b[0]["answers"]) for x, y in zip(xs, ys)]
    texts = [(x, y) for xs, ys in zip(a[0]["texts"], b[0]["texts"]) for x, y in zip(xs, ys)]
    out["agreement_run1"] = {"members_compared": len(pairs), "same_answer": sum(x == y for x, y in pairs),
                             "same_text": sum(x == y for x, y in texts),
                             "same_prediction": sum(x == y for x, y in zip(a[0]["preds"], b[0]["preds"])),
                             "questions": len(docs)}
    return out


def risk_study(args, backend, docs, cfg, db, deltas: list[float]) -> dict:
    from aloekit.medprompt import vote as V
    from aloekit.medprompt.engine import tie_rng
    full, full_res = run_ours(backend, docs, cfg.model_copy(update={"adaptive": False}), db)
    print(f"full ensemble: {full['wall_seconds']:.1f} s, acc {full['accuracy']:.3f}", flush=True)
    n, K = len(docs), cfg.members
    gen_full = full["generated_tokens"]
    rows = [{"rule": "all members", "members_per_question": round(full["members_per_question"], 3),
             "generated_tokens": gen_full, "tokens_saved": 0.0, "accuracy": full["accuracy"],
             "differs_from_full": 0.0, "wall_seconds": round(full["wall_seconds"], 1)}]
    for d in [None, *deltas]:
        rule = "exact" if d is None else f"risk<={d:g}"
        # replay on the full run's member answers: what the rule runs and answers, without rounding drift
        used, preds, gen, risks = [], [], 0, []
        for doc, r in zip(docs, full_res):
            ans, tie = member_answers(r), tie_rng(cfg, doc)
            u = V.members_run(ans, K, len(doc.options), tie, d)
            used.append(u)
            preds.append(V.vote(ans[:u], len(doc.options), tie())[0])
            gen += sum(c["generated_tokens"] for c in sorted(r["chains"], key=lambda c: c["member"])[:u])
            risks.append(float(V.overturn_risk(ans[:u], K, len(doc.options), tie)) if d is not None else 0.0)
        replay = {"members_per_question": round(sum(used) / n, 3), "generated_tokens": gen,
                  "tokens_saved": round(1 - gen / max(1, gen_full), 4),
                  "accuracy": round(sum(p == doc.gold for p, doc in zip(preds, docs)) / n, 4),
                  "differs_from_full": round(sum(p != f for p, f in zip(preds, full["preds"])) / n, 4),
                  "expected_differs": round(sum(risks) / n, 4)}
        row = {"rule": rule, "stop_risk": d, "replay": replay}
        if args.risk_mode == "engine":
            ours, res = run_ours(backend, docs, cfg.model_copy(update={"stop_risk": d}), db)
            row.update({"members_per_question": ours["members_per_question"],
                        "generated_tokens": ours["generated_tokens"],
                        "tokens_saved": round(1 - ours["generated_tokens"] / max(1, gen_full), 4),
                        "accuracy": ours["accuracy"],
                        "differs_from_full": round(sum(p != f for p, f in zip(ours["preds"], full["preds"])) / n, 4),
                        "expected_differs": round(sum(r.get("stop_risk", 0.0) for r in res) / n, 4),
                        "wall_seconds": round(ours["wall_seconds"], 1),
                        "members_as_replayed": sum(r["members"] == u for r, u in zip(res, used))})
        else:
            row.update(replay)
        rows.append(row)
        print(f"{rule}: saved {row['tokens_saved']:.3f} of generated tokens, acc {row['accuracy']:.3f}, "
              f"differs {row['differs_from_full']:.3f}", flush=True)
    return {"n": n, "mode": args.risk_mode, "rows": rows}


def markdown(args, payload: dict) -> str:
    from _common import fmt
    sp, rs = payload.get("speed"), payload.get("risk")
    md = [f"# Medprompt ensemble: transformers generate() vs aloekit ({args.task}, default model)", "",
          f"{args.members} members at T={payload['temperature']}, top-p {payload['top_p']}, {args.shots} kNN "
          f"examples, chains up to {args.max_new_tokens} tokens; {payload['dtype']}, "
          f"{args.threads or 'default'} torch thread(s), aloekit backend batch size {args.batch_size}, "
          f"device {payload['device']}."]
    if sp:
        ag = sp["agreement_run1"]
        md += ["", f"## Speed ({payload['n_speed']} questions, {sp['runs']} paired runs, median (min–max))", "",
               "Peer: the same model folder and dtype through transformers, one batched `generate()` call per "
               f"question with all {args.members} member prompts (left padding), every member run; sampling "
               f"`{args.peer_sampling}`" + (" (transformers' temperature/top-p warpers + per-member-seeded Gumbel "
                                            "noise: the same draws as ours up to batch-shape rounding)"
                                            if args.peer_sampling == "seeded" else
                                            " (transformers' own sampler: draws differ from ours)") +
               ". Ours: the engine with the exact adaptive stop.", "",
               "| | accuracy | wall s | generated tokens | prompt tokens | members/q |", "|---|---|---|---|---|---|"]
        for name, label in (("peer", "transformers generate(), batched per question"), ("ours", "aloekit")):
            r = sp[name]
            md.append(f"| {label} | {fmt(r['accuracy'])} | {fmt(r['wall_seconds'])} | {fmt(r['generated_tokens'])} "
                      f"| {fmt(r['prompt_tokens'])} | {fmt(r['members_per_question'])} |")
        md += ["", f"Wall time {fmt(sp['ratio_wall'], '×')} less, generated tokens {fmt(sp['ratio_generated_tokens'], '×')} "
               f"fewer, accuracy {fmt(sp['accuracy_points'])} points (ours − peer). Run 1: of the "
               f"{ag['members_compared']} members ours ran, {ag['same_answer']} gave the peer's answer "
               f"({ag['same_text']} the same text); "
               f"{ag['same_prediction']}/{ag['questions']} questions got the same prediction."]
    if rs:
        md += ["", f"## Stop rules against the full ensemble ({rs['n']} questions, mode {rs['mode']})", "",
               "Tokens saved: generated tokens against the full ensemble (all members). Differs: share of questions "
               "whose answer is not the full ensemble's. Expected: the rule's own estimate of that share (the mean "
               "overturn risk at the stop, vote.overturn_risk).", "",
               "| rule | members/q | generated tok/q | tokens saved | accuracy | differs from full | expected | "
               "wall s |", "|---|---|---|---|---|---|---|---|"]
        for r in rs["rows"]:
            md.append(f"| {r['rule']} | {r['members_per_question']} | {r['generated_tokens'] / rs['n']:.1f} | "
                      f"{100 * r['tokens_saved']:.1f} % | {100 * r['accuracy']:.1f} | "
                      f"{100 * r['differs_from_full']:.1f} % | "
                      f"{100 * r.get('expected_differs', 0.0):.1f} % | {r.get('wall_seconds', '–')} |")
        if rs["mode"] == "engine":
            md += ["", "Replayed on the full run's member answers (no rounding drift between runs):", "",
                   "| rule | members/q | tokens saved | accuracy | differs from full | questions whose members "
                   "match the replay |", "|---|---|---|---|---|---|"]
            for r in rs["rows"][1:]:
                p = r["replay"]
                md.append(f"| {r['rule']} | {p['members_per_question']} | {100 * p['tokens_saved']:.1f} % | "
                          f"{100 * p['accuracy']:.1f} | {100 * p['differs_from_full']:.1f} % | "
                          f"{r['members_as_replayed']}/{rs['n']} |")
    md += ["", args.note]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, help="example database (aloekit medprompt build-db)")
    ap.add_argument("--task", default="headqa")
    ap.add_argument("--limit", type=int, default=100, help="questions of the speed comparison (0: skip it)")
    ap.add_argument("--runs", type=int, default=3, help="paired runs of the speed comparison")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--shots", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=16, help="aloekit backend batch size")
    ap.add_argument("--peer-sampling", choices=("seeded", "native"), default="seeded")
    ap.add_argument("--stop-risk", default="0.01,0.05,0.2", help="comma-separated δ values ('': skip the study)")
    ap.add_argument("--risk-limit", type=int, default=200, help="questions of the stop-rule study")
    ap.add_argument("--risk-mode", choices=("engine", "replay"), default="engine")
    ap.add_argument("--dtype", default="auto", help="model dtype for both (auto: bf16 on CPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--name", default="medprompt_speed", help="results file name under benchmarks/results")
    ap.add_argument("--note", default="", help="how the run was made (goes into the markdown)")
    args = ap.parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)

    from _common import data_dir, write
    from generation import Peer

    from aloekit import models
    from aloekit.backends import load_backend
    from aloekit.config import ModelConfig
    from aloekit.medprompt import StrategyConfig
    from aloekit.medprompt.db import ExampleDB
    from aloekit.medprompt.runner import load_task_docs

    mcfg = ModelConfig(batch_size=args.batch_size, dtype=args.dtype)
    backend = load_backend(mcfg)
    deltas = [float(x) for x in args.stop_risk.split(",") if x.strip()]
    docs = load_task_docs(args.task, str(data_dir()), False, False, max(args.limit, args.risk_limit if deltas else 0)
                          ).docs
    db = ExampleDB.load(args.db)
    cfg = StrategyConfig(strategy="medprompt", members=args.members, shots=args.shots,
                         max_new_tokens=args.max_new_tokens)
    dtype = str(backend.dtype).removeprefix("torch.")
    payload: dict = {"task": args.task, "members": args.members, "shots": args.shots, "temperature": cfg.temperature,
                     "top_p": cfg.top_p, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
                     "dtype": dtype, "device": str(backend.device), "threads": args.threads, "db": args.db,
                     "peer": f"transformers generate(), one call per question with all members, left padding, "
                             f"sampling {args.peer_sampling}"}
    from aloekit.medprompt.engine import prepare
    prepare(docs[:2], cfg, db)  # load the embedder before any clock starts
    if args.limit:
        peer = Peer(models.prepare(mcfg.name), dtype)
        peer.model.to(backend.device)
        payload["n_speed"] = min(args.limit, len(docs))
        payload["speed"] = speed(args, backend, peer, docs[:args.limit], cfg, db)
        del peer
    if deltas:
        payload["risk"] = risk_study(args, backend, docs[:args.risk_limit], cfg, db, deltas)
    write(args.name, payload, markdown(args, payload))


if __name__ == "__main__":
    main()
