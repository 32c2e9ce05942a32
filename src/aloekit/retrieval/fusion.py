"""Reciprocal rank fusion (Cormack et al., 2009): score(d) = sum over rankings of 1 / (k + rank of d)."""

from __future__ import annotations

from typing import Sequence

RRF_K = 60  # the constant of the original paper; it damps the weight of the very first ranks


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) into one: (id, fused score), best first; ties keep the smaller id first,
    so the order never depends on dict or set iteration."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking):
            scores[i] = scores.get(i, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda x: (-x[1], x[0]))
