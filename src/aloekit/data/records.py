"""Canonical record types. Every reader turns its source into these, so later steps see one shape.

One flat dataclass instead of four classes: the pipeline steps (clean, dedup, decontam, templates) mostly
touch the same few text fields, and a flat row serialises to JSONL/Arrow without a type tag per class.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["mcq", "qa", "chat", "preference"]
KINDS: tuple[str, ...] = ("mcq", "qa", "chat", "preference")
LETTERS = "ABCDEFGHIJ"


@dataclass
class Record:
    kind: str
    source: str
    id: str
    # mcq + qa
    question: str = ""
    options: dict[str, str] = field(default_factory=dict)  # letter -> text (mcq)
    answer: str = ""  # mcq: a letter from options; qa: the answer text
    explanation: str = ""
    context: str = ""
    # chat
    messages: list[dict[str, str]] = field(default_factory=list)
    # preference
    prompt: str = ""
    chosen: str = ""
    rejected: str = ""
    # where the row came from: file, line/index, license, original id ... never dropped
    provenance: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    cot: str = ""  # accepted synthetic chain of thought (mcq only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def prompt_text(self) -> str:
        """The text a model would be asked: what decontamination and dedup look at."""
        if self.kind == "mcq":
            opts = " ".join(self.options[k] for k in sorted(self.options))
            return f"{self.context} {self.question} {opts}".strip()
        if self.kind == "qa":
            return f"{self.context} {self.question}".strip()
        if self.kind == "chat":
            return " ".join(m["content"] for m in self.messages if m.get("role") == "user")
        return self.prompt

    def response_text(self) -> str:
        if self.kind == "mcq":
            return self.options.get(self.answer, "")
        if self.kind == "qa":
            return self.answer
        if self.kind == "chat":
            return " ".join(m["content"] for m in self.messages if m.get("role") == "assistant")
        return self.chosen

    def dedup_text(self) -> str:
        return f"{self.prompt_text()} {self.response_text()}".strip()


def stable_id(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
