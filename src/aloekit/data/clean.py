"""Cleaning (the Aloe Beta steps). Text fixes are counted as 'modified', drops as 'removed', per source."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict

from pydantic import Field

from ..config import StrictModel
from .records import Record

URL_RE = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.I)
EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
# control characters except newline and tab; zero-width and BOM characters that sneak in from PDFs
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
SPACES_RE = re.compile(r"[ \t\u00a0]+")
NEWLINES_RE = re.compile(r"\n{3,}")
SPACE_BEFORE_PUNCT_RE = re.compile(r" +([,.;:?!])(?=\s|$)")
REPEAT_PUNCT_RE = re.compile(r"([?!,;])\1+")
MOJIBAKE_RE = re.compile(r"\ufffd|Ã[\x80-\xbf]|â€")


class CleanConfig(StrictModel):
    strip_urls: bool = True
    strip_emails: bool = True
    strip_control: bool = True
    collapse_spaces: bool = True
    normalise_punctuation: bool = True
    capitalise_first: bool = True  # "safe" casing: only a lowercase first letter of a question/answer
    drop_needs_image: bool = True
    min_question_chars: int = Field(8, ge=0)
    max_prompt_chars: int = Field(16000, ge=1)
    min_answer_chars: int = Field(1, ge=0)
    max_answer_chars: int = Field(16000, ge=1)
    min_options: int = Field(2, ge=2)
    max_garbled_ratio: float = Field(0.3, gt=0, le=1)  # share of non-letter, non-space, non-common characters


def clean_text(s: str, cfg: CleanConfig, hits: Counter) -> str:
    orig = s
    s = unicodedata.normalize("NFC", s)
    if cfg.strip_control:
        t = CONTROL_RE.sub("", s)
        hits["control_chars"] += t != s
        s = t
    if cfg.strip_urls:
        t = URL_RE.sub("", s)
        hits["urls"] += t != s
        s = t
    if cfg.strip_emails:
        t = EMAIL_RE.sub("", s)
        hits["emails"] += t != s
        s = t
    if cfg.collapse_spaces:
        t = NEWLINES_RE.sub("\n\n", SPACES_RE.sub(" ", s.replace("\r\n", "\n").replace("\r", "\n")))
        t = "\n".join(line.strip() for line in t.split("\n")).strip()
        hits["spaces"] += t != s
        s = t
    if cfg.normalise_punctuation:
        t = REPEAT_PUNCT_RE.sub(r"\1", SPACE_BEFORE_PUNCT_RE.sub(r"\1", s))
        hits["punctuation"] += t != s
        s = t
    hits["any_text_fix"] += s != orig
    return s


def _cap(s: str, cfg: CleanConfig, hits: Counter) -> str:
    # only the first character, and only when it is a plain lowercase letter: "pH", "mRNA", "iPhone" stay
    if cfg.capitalise_first and len(s) > 1 and s[0].islower() and s[0].isascii() and not s[1].isupper():
        hits["capitalised"] += 1
        return s[0].upper() + s[1:]
    return s


def garbled(s: str, limit: float) -> bool:
    if not s:
        return False
    if MOJIBAKE_RE.search(s):
        return True
    odd = sum(1 for c in s if not (c.isalnum() or c.isspace() or c in ".,;:?!'\"()[]-/%+=<>*&°μ±→–—’‘“”"))
    return odd / len(s) > limit


def _clean_record(r: Record, cfg: CleanConfig, hits: Counter) -> str | None:
    """Fix r's text in place; return the name of the filter that drops it, or None to keep it."""
    c = lambda s: clean_text(s, cfg, hits)  # noqa: E731
    if r.kind in ("mcq", "qa"):
        r.question = _cap(c(r.question), cfg, hits)
        r.context = c(r.context)
        r.explanation = c(r.explanation)
        if r.kind == "mcq":
            r.options = {k: c(v) for k, v in r.options.items()}
        else:
            r.answer = _cap(c(r.answer), cfg, hits)
    elif r.kind == "chat":
        r.messages = [{"role": m["role"], "content": c(m["content"])} for m in r.messages]
    else:
        r.prompt, r.chosen, r.rejected = c(r.prompt), c(r.chosen), c(r.rejected)

    if cfg.drop_needs_image and "needs_image" in r.tags:
        return "needs_image"
    prompt, response = r.prompt_text(), r.response_text()
    if r.kind in ("mcq", "qa") and len(r.question) < cfg.min_question_chars:
        return "question_too_short"
    if r.kind == "chat":
        if not any(m["role"] == "user" for m in r.messages) or not any(m["role"] == "assistant" for m in r.messages):
            return "chat_without_turns"
        if any(not m["content"] for m in r.messages):
            return "empty_answer"
    if r.kind == "mcq":
        if sum(1 for v in r.options.values() if v) < cfg.min_options:
            return "too_few_options"
        if r.answer not in r.options or not r.options[r.answer]:
            return "answer_not_in_options"
    if r.kind == "preference" and (not r.rejected or r.chosen == r.rejected):
        return "preference_not_contrastive"
    if len(response) < cfg.min_answer_chars:
        return "empty_answer"
    if len(prompt) > cfg.max_prompt_chars:
        return "prompt_too_long"
    if len(response) > cfg.max_answer_chars:
        return "answer_too_long"
    if garbled(prompt, cfg.max_garbled_ratio) or garbled(response, cfg.max_garbled_ratio):
        return "garbled"
    return None


def clean(records: list[Record], cfg: CleanConfig) -> tuple[list[Record], dict, dict]:
    """-> kept, removed[filter][source] counts, modified[fix][source] counts."""
    removed: dict[str, Counter] = defaultdict(Counter)
    modified: dict[str, Counter] = defaultdict(Counter)
    kept = []
    for r in records:
        hits: Counter = Counter()
        why = _clean_record(r, cfg, hits)
        for k, v in hits.items():
            if v:
                modified[k][r.source] += 1
        if why:
            removed[why][r.source] += 1
        else:
            kept.append(r)
    return kept, {k: dict(v) for k, v in removed.items()}, {k: dict(v) for k, v in modified.items()}
