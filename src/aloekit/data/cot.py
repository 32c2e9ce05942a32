"""Synthetic chain of thought from a teacher model (the Aloe Beta prompt design).

The teacher sees the question, the options AND the reference answer, and is asked to rephrase the question,
weigh every option and conclude with the answer. A chain is kept only if the answer extracted from it equals
the gold letter; failed items are retried with sampling, up to `max_attempts` in total.

Resumable and kill -9 safe: every generation is appended to a JSONL cache (fsync'd per batch) keyed by a hash
of (teacher, prompt, sampling, attempt); a rerun takes cached generations and only generates what is missing.
Batches are fixed chunks of the pool in a fixed order, so a resumed run sends the model exactly the batches an
uninterrupted run would, and greedy outputs (which can depend on padding) come out byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

from pydantic import Field

from ..config import ModelConfig, SamplingConfig, StrictModel
from ..console import note, progress
from ..io import GenerationCache
from .records import Record

SYSTEM = ("You are a medical expert who explains exam questions clearly and rigorously to medical students.")
INSTRUCTION = (
    "Explain step by step why the correct answer to this question is {L}. First rephrase the question in "
    "your own words. Then go through every option and say why it is right or wrong. Finish with a final line "
    "of the form 'Answer: {L}'."
)

_ANSWER_RES = [
    re.compile(r"answer\s*(?:is|:)?\s*(?:option\s*)?[\(\[]?\b([A-J])\b[\)\].:]?", re.I),
    re.compile(r"correct\s+(?:option|choice)\s*(?:is|:)?\s*[\(\[]?\b([A-J])\b", re.I),
]


class CotConfig(StrictModel):
    enabled: bool = False
    teacher: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_new_tokens=256,
                                                                            repetition_penalty=1.15))
    retry_temperature: float = Field(0.7, gt=0.0)
    max_attempts: int = Field(2, ge=1, le=10)  # first try (greedy by default) + retries with sampling
    max_records: int = Field(16, ge=1)  # size of the MCQ pool sent to the teacher
    sources: list[str] = Field(default_factory=list)  # restrict the pool to these sources (empty = any MCQ)
    cache: str | None = None  # default: <output>/cache/cot.jsonl
    # quality gates on top of "reaches the gold answer": small teachers often loop or run out of tokens
    require_complete: bool = True  # drop chains cut at max_new_tokens
    max_repeated_lines: float = Field(0.3, ge=0.0, le=1.0)  # share of duplicate non-empty lines allowed


def build_prompt(r: Record) -> list[dict]:
    ctx = f"Context: {r.context}\n\n" if r.context else ""
    opts = "\n".join(f"{k}. {v}" for k, v in sorted(r.options.items()))
    user = f"{ctx}Question: {r.question}\n\nOptions:\n{opts}\n\n" + INSTRUCTION.format(L=r.answer)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def extract_answer(text: str, letters: Sequence[str] = "ABCDEFGHIJ") -> str | None:
    """The letter of the last answer statement in `text`, or None when it states none."""
    best: tuple[int, str] | None = None
    for rx in _ANSWER_RES:
        for m in rx.finditer(text):
            L = m.group(1).upper()
            if L in letters and (best is None or m.start() > best[0]):
                best = (m.start(), L)
    return best[1] if best else None


def judge(text: str, finish_reason: str, gold: str, letters: Sequence[str], cfg: CotConfig) -> str:
    """'accepted' or why the chain is rejected."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if cfg.require_complete and finish_reason == "length":
        return "truncated"
    if lines and 1 - len(set(lines)) / len(lines) > cfg.max_repeated_lines:
        return "degenerate"
    got = extract_answer(text, letters)
    if got is None:
        return "no_answer"
    return "accepted" if got == gold else "wrong_answer"


def _key(teacher: str, prompt: list[dict], sampling: SamplingConfig, attempt: int) -> str:
    blob = json.dumps([teacher, prompt, sampling.model_dump(mode="json", exclude_none=True), attempt], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def select_pool(records: Sequence[Record], cfg: CotConfig, seed: int) -> list[Record]:
    # the teacher prompt is a medical one: general-domain MCQs join the pool only when cot.sources names them
    cands = [r for r in records if r.kind == "mcq"
             and (r.source in cfg.sources if cfg.sources else "general" not in r.tags)]
    # a per-record hash order: the pool does not change when unrelated records are added
    cands.sort(key=lambda r: hashlib.sha1(f"{seed}:{r.id}".encode()).hexdigest())
    return cands[: cfg.max_records]


def generate_cot(pool: Sequence[Record], cfg: CotConfig, cache_path: Path, seed: int, backend=None) -> dict:
    """Set `.cot` on accepted records of `pool` (in place); return the acceptance/token report."""
    cache = GenerationCache(cache_path)
    teacher_id = f"{cfg.teacher.backend}:{cfg.teacher.name}:{cfg.teacher.dtype}"
    bs = cfg.teacher.batch_size
    accepted: dict[str, int] = {}  # record id -> attempt that succeeded
    tokens = {"prompt": 0, "completion": 0}
    this_run = {"generated_now": 0, "from_cache": 0}
    attempts_made = 0
    rejected: Counter = Counter()
    be = backend
    todo = list(pool)
    with progress("synthetic CoT", total=len(pool)) as bar:
        for attempt in range(cfg.max_attempts):
            if not todo:
                break
            for c0 in range(0, len(todo), bs):
                chunk = todo[c0:c0 + bs]
                if attempt == 0:
                    s = cfg.sampling.model_copy(update={"seed": seed})
                else:  # retries sample; a fixed seed per (attempt, chunk) keeps them reproducible
                    s = cfg.sampling.model_copy(update={"temperature": cfg.retry_temperature,
                                                        "seed": seed + 1000 * attempt + c0 // bs})
                prompts = [build_prompt(r) for r in chunk]
                keys = [_key(teacher_id, p, s, attempt) for p in prompts]
                if all(cache.get(k) for k in keys):
                    outs = [cache.get(k) for k in keys]
                    this_run["from_cache"] += len(outs)
                else:
                    if be is None:
                        from ..backends import load_backend
                        note(f"loading teacher {cfg.teacher.name} ...")
                        be = load_backend(cfg.teacher)
                    comps = be.generate(prompts, s)
                    outs = [{"key": k, "record_id": r.id, "attempt": attempt, "text": c[0].text,
                             "prompt_tokens": c[0].prompt_tokens, "completion_tokens": c[0].completion_tokens,
                             "finish_reason": c[0].finish_reason} for k, r, c in zip(keys, chunk, comps)]
                    cache.add_many(outs)
                    this_run["generated_now"] += len(outs)
                attempts_made += len(outs)
                for r, o in zip(chunk, outs):
                    tokens["prompt"] += o["prompt_tokens"]
                    tokens["completion"] += o["completion_tokens"]
                    verdict = judge(o["text"], o["finish_reason"], r.answer, sorted(r.options), cfg)
                    if verdict != "accepted":
                        rejected[verdict] += 1
                    else:
                        r.cot = o["text"].strip()
                        accepted[r.id] = attempt
                        bar.advance()
            todo = [r for r in todo if r.id not in accepted]
        bar.advance(len(todo))
    by_attempt = {str(a): sum(1 for v in accepted.values() if v == a) for a in range(cfg.max_attempts)}
    n = len(pool)
    return {"teacher": teacher_id, "pool": n, "accepted": len(accepted),
            "acceptance_rate": round(len(accepted) / n, 4) if n else None,
            "accepted_by_attempt": by_attempt, "rejected": dict(sorted(rejected.items())), "generations": attempts_made, "tokens": tokens,
            "max_attempts": cfg.max_attempts, "this_run": this_run}
