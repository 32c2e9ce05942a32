"""The inference engine: one function, `evaluate`, answers multiple-choice questions with any strategy on any
backend and accounts the compute each question took.

How an ensemble runs (sc-cot, medprompt) — compute-aware by construction:
- members run in rounds; a round holds, for every question still open, the fewest further members that could
  settle its vote (`vote.members_needed`). After each round a question whose leader can no longer be overtaken
  by the members left is closed (`vote.decided`), also when they could only tie it and the vote's seeded tie
  rule would give that tie to the leader: its winner is the full ensemble's winner (tested exhaustively), so the
  early stop never changes an answer. Opt-in (`stop_risk` = δ): a question also closes once the chance that
  its remaining members overturn the current winner, under the Pólya-urn model of `vote.overturn_risk`, is at most
  δ; rounds are then the fewest members that could bring it there. That rule may change answers (measured in
  benchmarks/medprompt_speed.py); each result records the rule and the estimated risk it stopped at.
- a round is batched across questions: all its prompts go to the backend together, in chunks. Each member samples
  from its own seed (config seed + question + member index), so its chain does not depend on the round, the chunk
  or the batch it ran in: an adaptive run gets exactly the answers a full run gets from the members it runs.
- sc-cot members share one prompt: it is sent once with n samples; medprompt members differ in the order of the
  options, so each is its own prompt, sent consecutively, and their common few-shot prefix is computed once by
  backends that share prefixes (hf: one KV cache per group of consecutive prompts; vLLM: prefix caching).
- per question: prompt tokens (each distinct prompt once), generated tokens, and seconds (each backend call's
  time shared among its questions in proportion to their tokens).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import console as con
from ..backends.base import Completion
from ..benchmarks import LETTERS, parse_answer
from ..benchmarks import Question as Doc
from ..config import SamplingConfig
from ..errors import UserError
from ..prompts import resolve_system_prompt
from . import vote as V
from .config import StrategyConfig
from .prompts import build_chat


@dataclass
class _Question:
    doc: Doc
    shots: list = field(default_factory=list)  # Hit or Example, nearest last
    perms: list[list[int]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # original option index per member, -1 unparsed
    chains: list[dict] = field(default_factory=list)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    rounds: int = 0
    passages: list = field(default_factory=list)  # retrieval.Passage, best first, within the token budget
    leaks: int = 0  # passages the leakage guard left out


def validate_docs(docs: Sequence[Doc]) -> None:
    for d in docs:
        where = d.where or f"question {d.doc_id}"
        if not d.question.strip():
            raise UserError(f"{where}: empty question")
        if not 2 <= len(d.options) <= len(LETTERS):
            raise UserError(f"{where}: {len(d.options)} options; a question needs 2 to {len(LETTERS)} options")
        if d.gold >= len(d.options) or d.gold < -1:
            raise UserError(f"{where}: gold answer index {d.gold} does not match its {len(d.options)} options")


def _shots(docs: Sequence[Doc], cfg: StrategyConfig, db) -> list[list]:
    if not cfg.needs_db:
        return [[] for _ in docs]
    if db is None:
        raise UserError(f"strategy '{cfg.strategy}' needs an example database: pass --db "
                        f"(build one with `aloekit medprompt build-db`)")
    if cfg.embedding_model and cfg.embedding_model != db.embedding_model:
        raise UserError(f"database was built with embedding model '{db.embedding_model}', not "
                        f"'{cfg.embedding_model}'; use the same embedding model or rebuild the database")
    if cfg.strategy == "fewshot":
        # fixed examples: one seeded draw for the whole run; a draw equal to the question itself is replaced
        rng = V.seeded_rng(cfg.seed, "fewshot")
        order = list(range(len(db.examples)))
        rng.shuffle(order)
        out = []
        from .db import norm_text
        for d in docs:
            key = norm_text(d.question)
            picked = [db.examples[i] for i in order if db._norm[i] != key][:cfg.shots]
            out.append(picked)
        return out
    with con.progress("retrieving examples", len(docs)) as bar:
        hits = []
        for s in range(0, len(docs), 256):
            chunk = docs[s:s + 256]
            hits += db.nearest([(d.question, d.options) for d in chunk], cfg.shots, cfg.leak_threshold)
            bar.advance(len(chunk))
    return hits


def _passages(docs: Sequence[Doc], cfg: StrategyConfig, index, evaluating: bool) -> list[tuple[list, int]]:
    """(passages within the token budget, leaks removed) per doc. The query is the bare question (a benchmark
    that shows a passage with it, like PubMedQA, searches with the question alone)."""
    if not cfg.uses_rag:
        return [([], 0) for _ in docs]
    rp = cfg.rag
    if index is None and rp is not None and rp.index:
        from ..retrieval.index import load_index
        index = load_index(rp.index, rp.embedding_model)
    if index is None or rp is None or not rp.index:
        raise UserError(f"strategy '{cfg.strategy}' needs a corpus index: pass --index DIR or set rag.index "
                        f"(build one with `aloekit rag index CORPUS --output DIR`)")
    if rp.embedding_model and rp.embedding_model != index.embedding_model:
        raise UserError(f"index was built with embedding model '{index.embedding_model}', not "
                        f"'{rp.embedding_model}'; use the same embedding model or rebuild the index")
    guard = rp.leak_guard if rp.leak_guard is not None else evaluating
    queries = [d.stem or d.question for d in docs]
    out = []
    with con.progress("retrieving passages", len(docs)) as bar:
        for s in range(0, len(docs), 256):
            part = queries[s:s + 256]
            for r in index.search(part, rp.k, rp.mode, guard=part if guard else None,
                                  leak_threshold=rp.leak_threshold, leak_overlap=rp.leak_overlap):
                kept, used = [], 0
                for p in r.passages:
                    used += int(p.chunk.get("tokens") or 0)
                    if used > rp.token_budget:
                        break  # whole passages in rank order: a cut passage could cut off the fact it carries
                    kept.append(p)
                out.append((kept, r.leaks))
            bar.advance(len(part))
    return out


def _example(shot):
    return getattr(shot, "example", shot)


def member_prompt(q: _Question, member: int, cfg: StrategyConfig):
    perm = q.perms[member]
    options = V.apply_permutation(q.doc.options, perm)
    return build_chat(q.doc.question, options, cfg.chain_of_thought, [_example(s) for s in q.shots],
                      resolve_system_prompt(cfg.system, "system"), q.passages)


def prepare(docs: Sequence[Doc], cfg: StrategyConfig, db=None, index=None, evaluating: bool = True
            ) -> list[_Question]:
    """Retrieval and option orders for every question (no generation)."""
    if cfg.rag is not None and cfg.rag.bare_question:
        docs = [dataclasses.replace(d, question=d.stem) if d.stem else d for d in docs]
    validate_docs(docs)
    shots = _shots(docs, cfg, db)
    passages = _passages(docs, cfg, index, evaluating)
    qs = []
    for d, sh, (ps, leaks) in zip(docs, shots, passages):
        k = cfg.n_members
        if cfg.strategy == "medprompt" and cfg.shuffle:
            perms = V.permutations(len(d.options), k, V.seeded_rng(cfg.seed, "perm", d.doc_id, d.question))
        else:
            perms = [list(range(len(d.options)))] * k
        qs.append(_Question(doc=d, shots=sh, perms=perms, passages=ps, leaks=leaks))
    return qs


def member_seed(cfg: StrategyConfig, doc: Doc, member: int) -> int:
    """The sampling seed of one ensemble member: from the config seed and the question's identity only, so a member
    writes the same chain whatever round or batch it runs in (and a naive one-call-per-member run gets it too)."""
    return V.seeded_rng(cfg.seed, "member", doc.doc_id, doc.question).getrandbits(40) + member


def tie_rng(cfg: StrategyConfig, doc: Doc):
    """The tie rule's rng, fresh on each call: the final vote and the adaptive stop consult the same rule."""
    return lambda: V.seeded_rng(cfg.seed, "tie", doc.doc_id, doc.question)


def _sampling(cfg: StrategyConfig, round_: int, chunk: int, seeds: list[int] | None = None) -> SamplingConfig:
    seed = (cfg.seed * 1_000_003 + round_ * 7919 + chunk) % (2**31)
    if cfg.ensemble:
        return SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                              seed=seed, seeds=seeds)
    return SamplingConfig(max_new_tokens=cfg.max_new_tokens if cfg.chain_of_thought else cfg.answer_tokens,
                          temperature=0.0, seed=seed)


def _record(q: _Question, member: int, completion, prompt_counted: bool) -> int:
    n_opt = len(q.doc.options)
    shown = parse_answer(completion.text, n_opt)
    answer = V.map_back(shown, q.perms[member])
    q.answers.append(answer)
    q.chains.append({"member": member, "order": "".join(LETTERS[j] for j in q.perms[member]),
                     "shown": LETTERS[shown] if shown >= 0 else None,
                     "answer": LETTERS[answer] if answer >= 0 else None, "text": completion.text,
                     "generated_tokens": completion.completion_tokens, "finish": completion.finish_reason})
    if not prompt_counted:
        q.prompt_tokens += completion.prompt_tokens
    q.generated_tokens += completion.completion_tokens
    return completion.prompt_tokens * (not prompt_counted) + completion.completion_tokens


def evaluate(backend, docs: Sequence[Doc], cfg: StrategyConfig, db=None, desc: str | None = None, index=None,
             evaluating: bool = True) -> list[dict]:
    """Answer every doc with `cfg.strategy`; one result dict per doc, in input order:

    {doc_id, gold, pred, correct, votes {letter: n}, members, members_max, stop_rule, chains [...], shots [...],
     prompt_tokens, generated_tokens, seconds} (+ passages [...], leaks_removed with a corpus index; + stop_risk,
     the estimated overturn risk at the stop, with `cfg.stop_risk`). `gold` is
    None where unknown (aloekit infer). `index`: a retrieval.CorpusIndex for the rag strategies; `evaluating`:
    whether the docs are a benchmark's (the leakage guard's default)."""
    if cfg.strategy == "sc-cot" and cfg.members > 1 and cfg.temperature <= 0:
        raise UserError("sc-cot: temperature must be > 0, or every sample is the same")
    qs = prepare(docs, cfg, db, index, evaluating)
    K = cfg.n_members
    open_ = list(range(len(qs)))
    round_ = 0
    with con.progress(desc or f"{cfg.strategy}", len(qs)) as bar:
        while open_:
            # (question, first member, how many) for this round
            plan = []
            for i in open_:
                q = qs[i]
                m = (V.members_needed(q.answers, K, len(q.doc.options), tie_rng(cfg, q.doc), cfg.stop_risk)
                     if cfg.adaptive else K - len(q.answers))
                plan.append((i, len(q.answers), m))
            if cfg.answer == "letter" and not cfg.chain_of_thought:
                _letter_round(backend, qs, plan, cfg)
            else:
                _run_round(backend, qs, plan, cfg, round_)
            round_ += 1
            still = []
            for i in open_:
                q = qs[i]
                q.rounds += 1
                if len(q.answers) < K and not (cfg.adaptive and V.decided(q.answers, K, len(q.doc.options),
                                                                          tie_rng(cfg, q.doc), cfg.stop_risk)):
                    still.append(i)
                else:
                    bar.advance(1)
            open_ = still
    return [_result(q, cfg) for q in qs]


def _run_round(backend, qs: list[_Question], plan, cfg: StrategyConfig, round_: int) -> None:
    shared = cfg.strategy != "medprompt" or not cfg.shuffle  # all members see the same prompt
    # requests: (question, first member, n samples of one prompt)
    reqs: list[tuple[int, int, int]] = []
    for i, first, m in plan:
        if shared:
            reqs.append((i, first, m))
        else:
            reqs += [(i, first + j, 1) for j in range(m)]
    by_n: dict[int, list[tuple[int, int, int]]] = {}
    for r in reqs:
        by_n.setdefault(r[2], []).append(r)
    chunk_no = 0
    for n, group in sorted(by_n.items()):
        for s in range(0, len(group), cfg.batch_prompts):
            chunk = group[s:s + cfg.batch_prompts]
            prompts = [member_prompt(qs[i], first, cfg) for i, first, _ in chunk]
            # sample j of a request is member first + j: its seed is member_seed(first) + j
            seeds = [member_seed(cfg, qs[i].doc, first) for i, first, _ in chunk]
            t0 = time.perf_counter()
            res = backend.generate(prompts, _sampling(cfg, round_, chunk_no, seeds), n=n)
            elapsed = time.perf_counter() - t0
            chunk_no += 1
            work = []
            for (i, first, _), comps in zip(chunk, res):
                if len(comps) != n:
                    raise RuntimeError(f"backend returned {len(comps)} completions for n={n}")
                tokens = 0
                for j, c in enumerate(comps):
                    # one prompt encoding serves its n samples: its tokens are counted once
                    tokens += _record(qs[i], first + j, c, prompt_counted=j > 0)
                work.append((i, tokens))
            total = sum(t for _, t in work) or 1
            for i, t in work:
                qs[i].seconds += elapsed * t / total


def _letter_round(backend, qs: list[_Question], plan, cfg: StrategyConfig) -> None:
    """Direct answers by scoring: the prompt, the assistant turn opened with 'Answer:', then each option letter as
    a continuation; the likeliest letter is the member's answer (greedy, so one member)."""
    reqs = [(i, first) for i, first, m in plan if m > 0]
    for s in range(0, len(reqs), cfg.batch_prompts):
        chunk = reqs[s:s + cfg.batch_prompts]
        batch = [(backend.render(member_prompt(qs[i], first, cfg)) + "Answer:",
                  [f" {LETTERS[j]}" for j in range(len(qs[i].doc.options))]) for i, first in chunk]
        t0 = time.perf_counter()
        scores = backend.loglikelihood_batch(batch)
        elapsed = time.perf_counter() - t0
        encode = getattr(backend, "encode_prompt", None)  # exact with the hf backend; else ~4 characters a token
        for (i, first), (ctx, _), sc in zip(chunk, batch, scores):
            best = max(range(len(sc)), key=sc.__getitem__)
            n = len(encode(ctx)) if encode is not None else max(1, len(ctx) // 4)
            _record(qs[i], first, Completion(text=f"Answer: {LETTERS[best]}", prompt_tokens=n, completion_tokens=0,
                                             finish_reason="letter"), prompt_counted=False)
            qs[i].seconds += elapsed / len(chunk)


def _result(q: _Question, cfg: StrategyConfig) -> dict[str, Any]:
    d = q.doc
    pred, votes = V.vote(q.answers, len(d.options), tie_rng(cfg, d)())
    shots = []
    for s in q.shots:
        e = _example(s)
        shots.append({"source": e.source, "similarity": round(getattr(s, "similarity", float("nan")), 4)})
    out = {
        "doc_id": d.doc_id,
        "gold": LETTERS[d.gold] if d.gold >= 0 else None,
        "pred": LETTERS[pred] if pred >= 0 else None,
        "correct": bool(d.gold >= 0 and pred == d.gold),
        "votes": {LETTERS[o]: c for o, c in votes.items()},
        "members": len(q.answers),
        "members_max": cfg.n_members,
        "stop_rule": cfg.stop_rule if cfg.n_members > 1 else "single",
        "rounds": q.rounds,
        "prompt_tokens": q.prompt_tokens,
        "generated_tokens": q.generated_tokens,
        "seconds": round(q.seconds, 4),
        "shots": shots,
        "chains": q.chains,
    }
    if cfg.stop_risk is not None and cfg.n_members > 1:
        out["stop_risk"] = round(float(V.overturn_risk(q.answers, cfg.n_members, len(d.options), tie_rng(cfg, d))), 6)
    if cfg.uses_rag:
        out["passages"] = [{"n": i, "doc_id": p.chunk.get("doc_id"), "title": p.chunk.get("title", ""),
                            "source": p.chunk.get("source", ""), "url": p.chunk.get("url", ""),
                            "chunk": p.chunk.get("row"), "score": round(p.score, 5), "text": p.chunk["text"]}
                           for i, p in enumerate(q.passages, 1)]
        out["leaks_removed"] = q.leaks
    return out


def summarize(results: Sequence[dict]) -> dict[str, Any]:
    """Accuracy and compute per question for one strategy's results."""
    n = len(results)
    if not n:
        return {"n": 0}
    tot = lambda k: sum(r[k] for r in results)  # noqa: E731
    rag = {}
    if any("passages" in r for r in results):
        rag = {"passages_per_question": round(sum(len(r.get("passages", [])) for r in results) / n, 2),
               "leaks_removed": sum(r.get("leaks_removed", 0) for r in results),
               "questions_with_leaks": sum(bool(r.get("leaks_removed")) for r in results)}
    risk = {}
    if any("stop_risk" in r for r in results):  # the model's estimate: its mean is the expected share of changed answers
        risk = {"mean_stop_risk": round(sum(r.get("stop_risk", 0.0) for r in results) / n, 4)}
    return {
        "n": n,
        "accuracy": round(sum(r["correct"] for r in results) / n, 4),
        "unanswered": sum(r["pred"] is None for r in results),
        "members_per_question": round(tot("members") / n, 3),
        "prompt_tokens_per_question": round(tot("prompt_tokens") / n, 1),
        "generated_tokens_per_question": round(tot("generated_tokens") / n, 1),
        "seconds_per_question": round(tot("seconds") / n, 3),
        "early_stopped": sum(r["members"] < r["members_max"] for r in results),
        "stop_rule": results[0].get("stop_rule", "exact"),
        **risk,
        **rag,
    }
