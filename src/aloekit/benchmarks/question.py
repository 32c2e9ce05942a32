"""The one benchmark question type, and what every benchmark load returns.

A `Question` is what a model is asked: the text shown (`question`), its `options`, the `gold` option, and the
lm-eval style loglikelihood `context`. Each format's reader (formats.py) builds these fields, so a task's
prompts are defined once, where its file is read; eval, Medprompt pools, the merge dev scorer and
decontamination all read the same `Question`s. Source fields other stages keep (the source's own id, the
explanation, the passage the question rests on) travel with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LETTERS = "ABCDEFGHIJ"


@dataclass
class Question:
    doc_id: int  # position in the loaded list
    question: str  # what letter/generate prompts show (PubMedQA: abstract + question; BBQ: context + question)
    options: list[str]
    gold: int  # index into options; -1 where a task has several true options (truthfulqa_mc2) or none is given
    context: str  # the loglik context, lm-eval style: "Question: ...\nAnswer:"
    subject: str = ""
    labels: list[int] | None = None  # truthfulqa_mc2: 1 for each true option
    meta: dict[str, Any] = field(default_factory=dict)  # what a task's metrics need (BBQ: condition, biased ...)
    where: str = ""  # "file:line", for messages
    # --- from the source, for the stages that keep provenance (data records, decontamination)
    id: str = ""  # the source's own id (PMID, HEAD-QA qid, MedMCQA id, ...), else "<file stem>:<line>"
    stem: str = ""  # the question alone, where `question` also shows a passage ("" = same as `question`)
    passage: str = ""  # the text the question rests on, as the source gives it (PubMedQA: CONTEXTS joined by " ")
    explanation: str = ""  # the source's explanation or long answer (MedMCQA exp, PubMedQA LONG_ANSWER)
    source: dict[str, Any] = field(default_factory=dict)  # other source fields (exam, image, choice_type ...)

    def text_segments(self) -> list[str]:
        """[passage + question, options]: what n-gram decontamination indexes for this question."""
        return [f"{self.passage} {self.stem or self.question}", " ".join(self.options)]


@dataclass
class Rows:
    docs: list[Question]
    source: str  # file path or hub id
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)


class BadRow(Exception):
    """A row that cannot be turned into a question; `collect` turns it into a UserError or a skip."""


def mcq_context(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def listed(question: str, options: list[str]) -> str:
    """The question with its options listed A, B, C ... (for letter and generate scoring)."""
    lines = [question.strip(), ""] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join(lines)


def loglik_request(q: Question, delimiter: str = " ") -> tuple[str, list[str]]:
    """(context, continuations) scored by loglikelihood: the task's one loglik prompt."""
    return q.context, [delimiter + o for o in q.options]
