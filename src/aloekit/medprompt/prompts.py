"""Prompt construction: the same question format as `aloekit eval --scoring generate`, examples as chat turns."""

from __future__ import annotations

import re
from typing import Sequence

from ..benchmarks import GENERATE_INSTRUCTION, LETTERS, listed

COT_INSTRUCTION = GENERATE_INSTRUCTION
DIRECT_INSTRUCTION = "Reply only with a line 'Answer: X', where X is the letter of the correct option."

_ANSWER_LINE = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*[*(\[]*\s*[A-J]\b", re.IGNORECASE)


RAG_NOTE_COT = "Use the numbered sources above where they help, and cite them as [1], [2] in your reasoning."
RAG_NOTE_DIRECT = "Use the numbered sources above where they help."


def sources_block(passages) -> str:
    """Retrieved passages, numbered [1], [2] ... in retrieval order, so an answer can cite them."""
    lines = ["Sources:"]
    for i, p in enumerate(passages, 1):
        c = p.chunk
        title = f" {c['title']}." if c.get("title") else ""
        lines.append(f"[{i}]{title} {c['text']}")
    return "\n".join(lines)


def user_turn(question: str, options: Sequence[str], cot: bool, passages=()) -> dict[str, str]:
    instruction = COT_INSTRUCTION if cot else DIRECT_INSTRUCTION
    if not passages:
        return {"role": "user", "content": f"{listed(question, list(options))}\n\n{instruction}"}
    # sources first: members of an ensemble differ only after them (option order), so they share the longest prefix
    note = RAG_NOTE_COT if cot else RAG_NOTE_DIRECT
    return {"role": "user",
            "content": f"{sources_block(passages)}\n\n{listed(question, list(options))}\n\n{note} {instruction}"}


def cot_chat(question: str, options: Sequence[str], system: str | None = None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [user_turn(question, options, True)]


def normalise_chain(text: str, gold: int) -> str:
    """A kept chain always ends with the answer line the prompt asks for, so examples teach the format."""
    text = text.strip()
    if _ANSWER_LINE.search(text.splitlines()[-1] if text else ""):
        return text
    return f"{text}\nAnswer: {LETTERS[gold]}"


def example_turns(examples, cot: bool) -> list[dict[str, str]]:
    """Few-shot examples as alternating user/assistant turns (in the order given: nearest last)."""
    turns: list[dict[str, str]] = []
    for e in examples:
        turns.append(user_turn(e.question, e.options, cot))
        turns.append({"role": "assistant", "content": e.chain if cot else f"Answer: {LETTERS[e.gold]}"})
    return turns


def build_chat(question: str, options: Sequence[str], cot: bool, examples=(), system: str | None = None,
               passages=()):
    return (([{"role": "system", "content": system}] if system else []) + example_turns(examples, cot)
            + [user_turn(question, options, cot, passages)])
