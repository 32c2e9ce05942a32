"""Mixture: per-source weights, a general-data fraction, and the train/validation split (all seeded)."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from typing import Optional, Sequence

from pydantic import Field

from ..config import StrictModel
from .records import Record


class MixtureConfig(StrictModel):
    general_fraction: Optional[float] = Field(None, ge=0.0, lt=1.0)  # share of general-domain rows in the output
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)


def _u(seed: int, salt: str, rid: str) -> float:
    h = hashlib.sha1(f"{seed}:{salt}:{rid}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def apply_weights(records: Sequence[Record], weights: dict[str, float], caps: dict[str, int | None], seed: int
                  ) -> list[Record]:
    """weight < 1 keeps that share of a source's rows, > 1 repeats them (fractional part sampled)."""
    by_src: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_src[r.source].append(r)
    out: list[Record] = []
    for src, rows in by_src.items():
        w = weights.get(src, 1.0)
        whole, frac = int(w), w - int(w)
        picked = [r for _ in range(whole) for r in rows]
        if frac:
            k = round(frac * len(rows))
            picked += sorted(rows, key=lambda r: _u(seed, "w", r.id))[:k]
        cap = caps.get(src)
        if cap is not None and len(picked) > cap:
            picked = sorted(picked, key=lambda r: _u(seed, "cap", r.id))[:cap]
        out.extend(picked)
    return out


def apply_general_fraction(records: list[Record], general: set[str], fraction: float | None, seed: int
                           ) -> tuple[list[Record], dict]:
    gen = [r for r in records if r.source in general]
    med = [r for r in records if r.source not in general]
    if fraction is None or not gen:
        return records, {"general_rows": len(gen), "medical_rows": len(med),
                         "achieved_general_fraction": round(len(gen) / max(len(records), 1), 4)}
    want = int(round(fraction / (1 - fraction) * len(med)))
    if want < len(gen):
        gen = sorted(gen, key=lambda r: _u(seed, "gen", r.id))[:want]
    out = med + gen
    return out, {"general_rows": len(gen), "medical_rows": len(med), "requested_general_fraction": fraction,
                 "achieved_general_fraction": round(len(gen) / max(len(out), 1), 4)}


def split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic per-row split; repeats of one record (weight > 1) land on the same side."""
    if fraction <= 0:
        return rows, []
    train, val = [], []
    for row in rows:
        (val if _u(seed, "val", row["record_id"]) < fraction else train).append(row)
    return train, val


def shuffle(rows: list, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows
