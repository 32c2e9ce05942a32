"""Text normalisation and the leakage rule shared by the example database and the corpus index: a retrieved
text that is, or contains, the test question must never reach the prompt of that question."""

from __future__ import annotations

import re

SHINGLE = 8  # words per n-gram: long enough that a shared 8-gram is a copy, not a shared medical phrase
MIN_WORDS = 5  # shorter questions ("Is it benign?") match too much text by chance; only the embedding rule applies


def norm_text(s: str) -> str:
    return re.sub(r"\W+", " ", s.lower()).strip()


def _shingles(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def contains_question(question: str, text: str, min_overlap: float = 0.5) -> bool:
    """Whether `text` contains the question or a near copy of it (case, punctuation and a few changed words do
    not matter): at least `min_overlap` of the question's word n-grams appear in the text."""
    q = norm_text(question).split()
    if len(q) < MIN_WORDS:
        return False
    n = min(SHINGLE, len(q))
    qs = _shingles(q, n)
    ts = _shingles(norm_text(text).split(), n)
    return len(qs & ts) >= min_overlap * len(qs)
