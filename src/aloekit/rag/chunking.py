"""Token chunking with overlap, and chunk dedup.

Chunks are cut in the embedding model's own tokens, so that a chunk never exceeds what the model reads (longer
input is truncated silently by sentence-transformers, and the cut-off text would be unsearchable). A chunk is a
slice of the original text (offsets, not detokenised), and its edges are moved off the middle of a word."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import UserError
from ..retrieval.index import chunk_input, chunk_key
from ..retrieval.leak import norm_text
from .corpus import Document

SNAP = 8  # at most this many tokens moved to reach a word boundary (a longer "word" is cut anyway)


@dataclass
class Chunking:
    chunk_tokens: int = 192
    overlap: int = 32

    def check(self, max_tokens: int | None = None) -> None:
        if self.chunk_tokens < 8:
            raise UserError(f"--chunk-tokens {self.chunk_tokens}: give at least 8 tokens")
        if not 0 <= self.overlap < self.chunk_tokens // 2 + 1:
            raise UserError(f"--overlap {self.overlap}: must be between 0 and half of --chunk-tokens "
                            f"({self.chunk_tokens // 2})")
        if max_tokens is not None and self.chunk_tokens > max_tokens - 2:  # [CLS] and [SEP]
            raise UserError(f"--chunk-tokens {self.chunk_tokens}: the embedding model reads at most "
                            f"{max_tokens - 2} tokens per chunk; use a smaller value")


def _mid_word(text: str, offsets, i: int) -> bool:
    """Token i continues the word of token i-1 (no gap between them and both sides are word characters)."""
    if i <= 0 or i >= len(offsets):
        return False
    a, b = offsets[i - 1][1], offsets[i][0]
    return a == b and b > 0 and text[b - 1].isalnum() and b < len(text) and text[b].isalnum()


def spans(text: str, tokenizer, cfg: Chunking, offsets=None) -> list[tuple[int, int, int, int]]:
    """(start token, end token, start char, end char) of each chunk of `text` (`offsets`: its tokens' character
    spans, when already computed)."""
    off = offsets if offsets is not None else \
        tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)["offset_mapping"]
    n = len(off)
    if n == 0:
        return []
    out = []
    start = 0
    while True:
        end = min(n, start + cfg.chunk_tokens)
        e = end
        while e < n and e > start + 1 and end - e < SNAP and _mid_word(text, off, e):
            e -= 1
        if not _mid_word(text, off, e):
            end = e
        out.append((start, end, off[start][0], off[end - 1][1]))
        if end >= n:
            return out
        nxt = max(start + 1, end - cfg.overlap)
        s = nxt
        while s < end and s - nxt < SNAP and _mid_word(text, off, s):
            s += 1
        start = s  # at most `end`: the next chunk never skips text


def chunk_documents(docs: Sequence[Document], tokenizer, cfg: Chunking, seen: set[str] | None = None
                    ) -> tuple[list[dict], int]:
    """The chunks of every document, in order, without duplicates: a chunk whose normalised text (case,
    punctuation, spacing ignored) was already seen here or in `seen` is dropped and counted."""
    seen = set() if seen is None else seen
    chunks, dropped = [], 0
    offsets: list = []
    for s in range(0, len(docs), 1024):  # one batched call: the fast tokenizer encodes a batch in parallel
        offsets += tokenizer([d.text for d in docs[s:s + 1024]], add_special_tokens=False,
                             return_offsets_mapping=True, verbose=False)["offset_mapping"]
    for d, off in zip(docs, offsets):
        for j, (t0, t1, c0, c1) in enumerate(spans(d.text, tokenizer, cfg, off)):
            text = d.text[c0:c1].strip()
            norm = norm_text(text)
            if not norm:
                continue
            if norm in seen:
                dropped += 1
                continue
            seen.add(norm)
            c = {"doc_id": d.id, "title": d.title, "source": d.source, "url": d.url, "where": d.where,
                 "part": j, "tokens": t1 - t0, "span": [t0, t1], "text": text}
            c["key"] = chunk_key(chunk_input(c))
            chunks.append(c)
    return chunks, dropped
