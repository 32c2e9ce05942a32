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

from typing import Sequence

from .. import console as con
from ..benchmarks import LETTERS, listed, loglik_request
from ..benchmarks import Question as Doc
from ..benchmarks.prompts import GENERATE_INSTRUCTION, LETTER_INSTRUCTION, LETTER_PREFIX, parse_answer
from ..config import SamplingConfig
from ..errors import UserError
from ..prompts import with_system

__all__ = ["GENERATE_INSTRUCTION", "LETTER_INSTRUCTION", "LETTER_PREFIX", "generate_answers", "generate_chat",
           "letter_prompt", "parse_answer", "score_letter", "score_loglik"]


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
            res = backend.loglikelihood_batch([loglik_request(docs[i], delimiter) for i in idx])
            for i, r in zip(idx, res):
                out[i] = list(r)
            bar.advance(len(idx))
    return out  # type: ignore[return-value]


def _chat(backend, text: str, system: str | None = None):
    render = getattr(backend, "render", None)
    if render is None:
        raise UserError(f"backend '{backend.name}' cannot render chat prompts: use --scoring loglik or the hf backend")
    return render(with_system([{"role": "user", "content": text}], system))


def score_letter(backend, docs: Sequence[Doc], desc: str, system: str | None = None) -> list[list[float]]:
    for d in docs:
        if len(d.options) > len(LETTERS):
            raise UserError(f"{d.where}: {len(d.options)} options is more than letter scoring can label")
    prompts = [letter_prompt(backend, d, system) for d in docs]
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


def letter_prompt(backend, doc: Doc, system: str | None = None) -> str:
    """The text letter scoring scores " A", " B", ... after."""
    return _chat(backend, f"{listed(doc.question, doc.options)}\n\n{LETTER_INSTRUCTION}", system) + LETTER_PREFIX


def generate_chat(doc: Doc, system: str | None = None) -> list[dict[str, str]]:
    return with_system([{"role": "user", "content": f"{listed(doc.question, doc.options)}\n\n{GENERATE_INSTRUCTION}"}],
                       system)


def generate_answers(backend, docs: Sequence[Doc], sampling: SamplingConfig, desc: str,
                     system: str | None = None) -> list[str]:
    chats = [generate_chat(d, system) for d in docs]
    out: list[str] = []
    step = _chunks(backend)
    with con.progress(desc, len(docs)) as bar:
        for s in range(0, len(chats), step):
            res = backend.generate(chats[s:s + step], sampling)
            out.extend(r[0].text for r in res)
            bar.advance(len(res))
    return out
