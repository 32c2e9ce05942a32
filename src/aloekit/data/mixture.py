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
    """Keep a seeded sample of the general-domain SFT rows so that they make up `fraction` of the SFT mix.

    Medical rows are never dropped to reach the fraction: with too few general rows all of them are kept and the
    report shows the shortfall. Preference rows go to their own dataset, so they are neither counted nor sampled.
    Rows keep their input order (a filter), so a build without general sources is unchanged by this step.
    """
    sft = [i for i, r in enumerate(records) if r.kind != "preference"]
    gen = [i for i in sft if records[i].source in general]
    n_med = len(sft) - len(gen)
    drop: set[int] = set()
    want = None
    if fraction is not None:
        want = int(round(fraction / (1 - fraction) * n_med))
        # one hash order over all general sources: each keeps its share of the general rows
        order = sorted(gen, key=lambda i: (_u(seed, "gen", records[i].id), i))
        drop = set(order[want:])
    out = [r for i, r in enumerate(records) if i not in drop]

    by_source: dict[str, dict] = {}
    for i in sft:
        r = records[i]
        s = by_source.setdefault(r.source, {"domain": "general" if r.source in general else "medical",
                                            "offered": 0, "rows": 0})
        s["offered"] += 1
        s["rows"] += i not in drop
    total = len(sft) - len(drop)
    for s in by_source.values():
        s["share"] = round(s["rows"] / max(total, 1), 4)
    n_gen = len(gen) - len(drop)
    return out, {"sft_rows": total, "medical_rows": n_med, "general_rows": n_gen,
                 "general_offered": len(gen), "general_wanted": want,
                 "achieved_general_fraction": round(n_gen / max(total, 1), 4),
                 "preference_rows": len(records) - len(sft), "by_source": by_source}


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
