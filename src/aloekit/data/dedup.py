"""Exact (normalised hash) and near-duplicate (MinHash LSH, datasketch) dedup, within and across sources.

Records are visited in config order, so the first source listed wins a duplicate pair. Speed comes from
using datasketch well rather than re-implementing it: exact duplicates are dropped by hash before any MinHash
is computed, the permutations are generated once and shared by every MinHash, shingles are hashed with xxHash
(passed to datasketch as `hashfunc`) and each record goes through one vectorised `update_batch`. The
signatures equal those of a plain per-record `MinHash(hashfunc=shingle_hash).update()` loop, so the kept set
is identical to that loop's (benchmarks/data_speed.py checks it).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from typing import Callable, Literal, Sequence

from pydantic import Field

from ..config import StrictModel
from .records import Record

try:  # the 'data' extra, for near dedup only: data.pipeline checks it before a build
    from xxhash import xxh32_intdigest
except ImportError:
    xxh32_intdigest = None

_NON_WORD = re.compile(r"[^0-9a-z]+")


class DedupConfig(StrictModel):
    exact: bool = True
    near: bool = True
    threshold: float = Field(0.8, gt=0.0, le=1.0)  # estimated Jaccard over word shingles
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: int = Field(3, ge=1, le=10)  # words per shingle
    seed: int = 1  # MinHash permutation seed (kept apart from the pipeline seed: changing it changes results)
    # "datatrove" runs near-dedup as datatrove's MinHash pipeline (LocalPipelineExecutor here; the same
    # pipelines run on Slurm/Ray for corpora beyond one machine). It uses datatrove's own LSH parameters.
    engine: Literal["datasketch", "datatrove"] = "datasketch"
    datatrove_buckets: int = Field(14, ge=1)
    datatrove_hashes_per_bucket: int = Field(8, ge=1)
    datatrove_tasks: int = Field(1, ge=1)
    datatrove_workers: int = Field(1, ge=1)


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def shingle_hash(b: bytes) -> int:
    """32-bit xxHash: deterministic across processes (unlike hash()) and ~10x cheaper than datasketch's
    default SHA-1, which dominated the dedup profile."""
    return xxh32_intdigest(b)


def shingles(norm: str, n: int) -> set[bytes]:
    """Word n-gram shingles of `normalise`d text. A set: MinHash takes a minimum, so order does not matter and
    sorting would only cost time."""
    words = norm.split()
    if len(words) <= n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


class NearDedup:
    """Streaming MinHash-LSH index: `seen(text)` says whether a near-duplicate was added before."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle: int = 3, seed: int = 1):
        from datasketch import MinHash, MinHashLSH
        self._MinHash = MinHash
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.num_perm, self.shingle, self.seed = num_perm, shingle, seed
        proto = MinHash(num_perm=num_perm, seed=seed, hashfunc=shingle_hash)
        self.perms, self.scheme = proto.permutations, proto.scheme
        self.n = 0

    def minhash(self, norm: str):
        m = self._MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self.perms,
                           scheme=self.scheme, hashfunc=shingle_hash)
        m.update_batch(shingles(norm, self.shingle))
        return m

    def check_and_add(self, key: int, norm: str) -> int | None:
        """The key of an earlier near-duplicate of the `normalise`d text, or None (and then it is indexed under
        `key`)."""
        m = self.minhash(norm)
        hits = self.lsh.query(m)
        if hits:
            return min(hits)  # any hit drops the record; min() only makes the reported partner stable
        self.lsh.insert(key, m, check_duplication=False)
        self.n += 1
        return None


def exact_key(norm: str) -> bytes:
    return hashlib.sha1(norm.encode()).digest()


def dedup(records: Sequence[Record], cfg: DedupConfig, text_of: Callable[[Record], str] = Record.dedup_text,
          workdir=None) -> tuple[list[Record], dict]:
    """-> kept records and a report: removed per step and source, and cross-source pairs."""
    if cfg.near and cfg.engine == "datatrove":
        kept, rep = dedup(records, cfg.model_copy(update={"near": False}), text_of)
        from .dedup_datatrove import near_dedup_datatrove
        if workdir is None:
            raise ValueError("dedup with engine=datatrove needs a workdir")
        kept2, removed_ids = near_dedup_datatrove(
            kept, text_of, workdir, (cfg.datatrove_buckets, cfg.datatrove_hashes_per_bucket), cfg.shingle,
            cfg.datatrove_tasks, cfg.datatrove_workers, cfg.seed)
        src = {r.id: r.source for r in kept}
        rep["removed"]["near"] = dict(Counter(src[i] for i in removed_ids))
        return kept2, rep
    removed: dict[str, Counter] = {"exact": Counter(), "near": Counter()}
    cross: Counter = Counter()  # (removed source, kept source) pairs across sources
    seen_exact: dict[bytes, str] = {}
    near = NearDedup(cfg.threshold, cfg.num_perm, cfg.shingle, cfg.seed) if cfg.near else None
    by_key: dict[int, str] = {}
    kept = []
    for i, r in enumerate(records):
        norm = normalise(text_of(r))  # once, for both the exact key and the shingles
        if cfg.exact:
            k = exact_key(norm)
            if k in seen_exact:
                removed["exact"][r.source] += 1
                cross[(r.source, seen_exact[k])] += seen_exact[k] != r.source
                continue
            seen_exact[k] = r.source
        if near is not None:
            hit = near.check_and_add(i, norm)
            if hit is not None:
                removed["near"][r.source] += 1
                cross[(r.source, by_key[hit])] += by_key[hit] != r.source
                continue
            by_key[i] = r.source
        kept.append(r)
    report = {
        "removed": {k: dict(v) for k, v in removed.items()},
        "cross_source": [{"removed_from": a, "duplicate_of": b, "rows": n} for (a, b), n in sorted(cross.items())
                         if n],
    }
    return kept, report


def group_counts(records: Sequence[Record]) -> dict[str, int]:
    c: dict[str, int] = defaultdict(int)
    for r in records:
        c[r.source] += 1
    return dict(c)
