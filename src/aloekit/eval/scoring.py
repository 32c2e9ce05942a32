"""The three ways to ask a model a multiple-choice question.

- loglik: lm-eval's way. Score `context + delimiter + option` for every option; the backend runs each context
  once and reuses it for all options (KV cache), applying the LM head only where an option token is predicted.
- letter: the question with options A-E in the model's chat template, the assistant turn opened with
  "Answer:"; the log-probability of each " X" letter as the next token. Single-token continuations: one forward
  pass per question. (Opening the turn with text keeps the template's trailing newline in the context, where
  lm-eval's split would otherwise move it onto every option.)
- generate: the model answers in free text and must end with "Answer: X"; a reply we cannot parse is wrong and
  counted as unparsed.
"""

from __future__ import annotations

import re
from typing import Sequence

from .. import console as con
from ..config import SamplingConfig
from ..errors import UserError
from .data import LETTERS, Doc, listed

LETTER_INSTRUCTION = "Answer with the letter of the correct option."
LETTER_PREFIX = "Answer:"
GENERATE_INSTRUCTION = ("Think it through briefly, then end your reply with a line 'Answer: X', where X is the "
                        "letter of the correct option.")


def _chunks(backend) -> int:
    # questions per backend call: enough for the backend to sort by length; also the progress bar's step
    return max(256, getattr(getattr(backend, "cfg", None), "batch_size", 8) * 8)


def _by_length(docs: Sequence[Doc], key) -> list[int]:
    return sorted(range(len(docs)), key=lambda i: -len(key(docs[i])))


def score_loglik(backend, docs: Sequence[Doc], delimiter: str, desc: str) -> list[list[float]]:
    order = _by_length(docs, lambda d: d.context)
    out: list[list[float] | None] = [None] * len(docs)
    step = _chunks(backend)
    with con.progress(desc, len(docs)) as bar:
        for s in range(0, len(order), step):
            idx = order[s:s + step]
            res = backend.loglikelihood_batch([(docs[i].context, [delimiter + o for o in docs[i].options])
                                               for i in idx])
            for i, r in zip(idx, res):
                out[i] = list(r)
            bar.advance(len(idx))
    return out  # type: ignore[return-value]


def _chat(backend, text: str):
    render = getattr(backend, "render", None)
    if render is None:
        raise UserError(f"backend '{backend.name}' cannot render chat prompts: use --scoring loglik or the hf backend")
    return render([{"role": "user", "content": text}])


def score_letter(backend, docs: Sequence[Doc], desc: str) -> list[list[float]]:
    for d in docs:
        if len(d.options) > len(LETTERS):
            raise UserError(f"{d.where}: {len(d.options)} options is more than letter scoring can label")
    prompts = [_chat(backend, f"{listed(d.question, d.options)}\n\n{LETTER_INSTRUCTION}") + LETTER_PREFIX
               for d in docs]
    order = sorted(range(len(docs)), key=lambda i: -len(prompts[i]))
    out: list[list[float] | None] = [None] * len(docs)
    step = _chunks(backend)
    with con.progress(desc, len(docs)) as bar:
        for s in range(0, len(order), step):
            idx = order[s:s + step]
            res = backend.loglikelihood_batch([(prompts[i], [f" {x}" for x in LETTERS[:len(docs[i].options)]])
                                               for i in idx])
            for i, r in zip(idx, res):
                out[i] = list(r)
            bar.advance(len(idx))
    return out  # type: ignore[return-value]


_ANSWER = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*[*(\[]*\s*([A-J])\b", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z'])\(?([A-J])\)?(?![A-Za-z'])")
_LABEL_LINE = re.compile(r"^[ \t]*\(?([A-J])[.)]\s", re.MULTILINE)


def parse_answer(text: str, n_options: int) -> int:
    """Index of the chosen option, or -1. `Answer: X` wins (the last one); else the last standalone option
    letter, skipping 'A'/'I' used as words ('A patient ...') and the labels of an option list the model wrote
    out (small models often echo "A. yes / B. no": that names no answer, and reading its last label as one
    would make a wrong chain look right)."""
    valid = LETTERS[:n_options]
    hits = [m.group(1).upper() for m in _ANSWER.finditer(text) if m.group(1).upper() in valid]
    if hits:
        return valid.index(hits[-1])
    labels = list(_LABEL_LINE.finditer(text))
    listed_at = {m.start(1) for m in labels} if len({m.group(1) for m in labels}) >= 2 else set()
    for m in reversed(list(_LETTER.finditer(text))):
        letter = m.group(1)
        if letter not in valid or m.start(1) in listed_at:
            continue
        after = text[m.end():m.end() + 2]
        if letter in "AI" and not m.group(0).startswith("(") and re.match(r" [a-z]", after):
            continue
        return valid.index(letter)
    return -1


def generate_answers(backend, docs: Sequence[Doc], sampling: SamplingConfig, desc: str) -> list[str]:
    chats = [[{"role": "user", "content": f"{listed(d.question, d.options)}\n\n{GENERATE_INSTRUCTION}"}]
             for d in docs]
    out: list[str] = []
    step = _chunks(backend)
    with con.progress(desc, len(docs)) as bar:
        for s in range(0, len(chats), step):
            res = backend.generate(chats[s:s + step], sampling)
            out.extend(r[0].text for r in res)
            bar.advance(len(res))
    return out
