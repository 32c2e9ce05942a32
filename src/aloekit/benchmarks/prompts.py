"""The prompts that ask a model a multiple-choice question as a chat, and reading its answer back.

A task's loglikelihood prompt (`Question.context` + delimiter + option) is built by its format's reader; the
letter and generate prompts show `listed(question, options)` with one of the instructions below. Evaluation's
scoring modes and the Medprompt strategies both use these, so a question is asked the same way everywhere.
"""

from __future__ import annotations

import re

from .question import LETTERS

LETTER_INSTRUCTION = "Answer with the letter of the correct option."
LETTER_PREFIX = "Answer:"
GENERATE_INSTRUCTION = ("Think it through briefly, then end your reply with a line 'Answer: X', where X is the "
                        "letter of the correct option.")

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
