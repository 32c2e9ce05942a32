"""Confidence intervals for rates and their differences, as the recipe's gates use them.

- `wilson`: the Wilson score interval for one proportion (good coverage at small n and near 0 or 1, unlike Wald).
- `newcombe_paired`: Newcombe's (1998) method 10 for the difference of two proportions measured on the same
  items (the usual case: two models on the same prompts); Wilson limits of each margin combined with the
  continuity-corrected phi of the 2x2 table, so a change that flips few items gets a tight interval.
- `newcombe_unpaired`: Newcombe's (1998) hybrid score interval when the two samples are different items.
- `bootstrap_mean`, `bootstrap_paired_diff`: percentile bootstrap for metrics that are not 0/1 per item
  (e.g. TruthfulQA mc2), seeded.

Everything is plain Python (statistics.NormalDist), so gates need neither scipy nor a model.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from statistics import NormalDist
from typing import Sequence


def z_value(confidence: float) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exact at the edges: k = 0 has lower limit 0, k = n upper limit 1 (rounding would leave 1e-17)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def newcombe_unpaired(k_ref: int, n_ref: int, k_new: int, n_new: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Interval for p_new - p_ref from two independent samples."""
    p_ref, p_new = k_ref / n_ref, k_new / n_new
    l_ref, u_ref = wilson(k_ref, n_ref, confidence)
    l_new, u_new = wilson(k_new, n_new, confidence)
    d = p_new - p_ref
    lo = d - math.sqrt((p_new - l_new) ** 2 + (u_ref - p_ref) ** 2)
    hi = d + math.sqrt((u_new - p_new) ** 2 + (p_ref - l_ref) ** 2)
    return max(-1.0, lo), min(1.0, hi)


def newcombe_paired(both: int, ref_only: int, new_only: int, neither: int,
                    confidence: float = 0.95) -> tuple[float, float]:
    """Interval for p_new - p_ref on the same n items. The counts are the 2x2 table: items that are 1 under
    both, under the reference only, under the new model only, under neither."""
    a, b, c, d = both, ref_only, new_only, neither
    n = a + b + c + d
    if n <= 0:
        return -1.0, 1.0
    p_new, p_ref = (a + c) / n, (a + b) / n
    l_new, u_new = wilson(a + c, n, confidence)
    l_ref, u_ref = wilson(a + b, n, confidence)
    phi = 0.0
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins > 0:
        cross = a * d - b * c
        corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
        phi = corrected / math.sqrt(margins)
    diff = p_new - p_ref
    lo = diff - math.sqrt(max(0.0, (p_new - l_new) ** 2 - 2 * phi * (p_new - l_new) * (u_ref - p_ref)
                              + (u_ref - p_ref) ** 2))
    hi = diff + math.sqrt(max(0.0, (u_new - p_new) ** 2 - 2 * phi * (u_new - p_new) * (p_ref - l_ref)
                              + (p_ref - l_ref) ** 2))
    return max(-1.0, lo), min(1.0, hi)


def paired_table(ref: Sequence[float], new: Sequence[float]) -> tuple[int, int, int, int]:
    """(both, ref_only, new_only, neither) of two aligned 0/1 sequences."""
    a = b = c = d = 0
    for r, x in zip(ref, new, strict=True):
        if r and x:
            a += 1
        elif r:
            b += 1
        elif x:
            c += 1
        else:
            d += 1
    return a, b, c, d


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95, seed: int = 0,
                   resamples: int = 2000) -> tuple[float, float]:
    n = len(values)
    rng = random.Random(seed)
    means = [sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    tail = (1 - confidence) / 2
    return _percentile(means, tail), _percentile(means, 1 - tail)


def bootstrap_paired_diff(ref: Sequence[float], new: Sequence[float], confidence: float = 0.95, seed: int = 0,
                          resamples: int = 2000) -> tuple[float, float]:
    """Percentile interval for mean(new) - mean(ref), resampling items (the pairs stay together)."""
    diffs = [x - r for r, x in zip(ref, new, strict=True)]
    return bootstrap_mean(diffs, confidence, seed, resamples)


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Cohen's kappa between two raters' labels (any hashable categories); None when chance agreement is 1 or
    there are no items (kappa is undefined there, not 0)."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    return None if pe == 1 else round((po - pe) / (1 - pe), 4)
