"""The one faiss wrapper: inner product over normalised embeddings (= cosine), exact or approximate.

`flat` is exact and needs no training; above `AUTO_THRESHOLD` vectors `auto` picks HNSW, whose search time grows
with log n instead of n at a small recall cost (measured in benchmarks/results/rag.md). IVF is there for corpora
too large to keep HNSW's graph in memory."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from ..errors import UserError
from .embed import require_retrieval

Kind = Literal["auto", "flat", "ivf", "hnsw"]
AUTO_THRESHOLD = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE = 16


def resolve_kind(kind: str, n: int, threshold: int = AUTO_THRESHOLD) -> str:
    if kind == "auto":
        return "hnsw" if n >= threshold else "flat"
    if kind == "ivf" and n < 256:
        raise UserError(f"dense index 'ivf' needs at least 256 vectors to train its lists, got {n}; use flat")
    return kind


class DenseIndex:
    def __init__(self, index, kind: str):
        self.index = index
        self.kind = kind

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors, kind: str = "flat", seed: int = 0) -> "DenseIndex":
        require_retrieval("a dense index")
        import faiss
        import numpy as np
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        kind = resolve_kind(kind, n)
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        elif kind == "ivf":
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = seed  # k-means starts from a seeded draw: the same corpus gives the same lists
            index.train(vectors)
            index.nprobe = min(IVF_NPROBE, nlist)
        else:
            raise UserError(f"dense index '{kind}': unknown; valid: auto, flat, ivf, hnsw")
        index.add(vectors)
        return cls(index, kind)

    def search(self, queries, depth: int):
        """(similarities, ids), each (n_queries, depth), best first; id -1 where fewer than depth exist."""
        import numpy as np
        depth = max(1, min(depth, self.size))
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = max(HNSW_EF_SEARCH, depth)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), depth)

    def save(self, path: str | os.PathLike) -> None:
        import faiss
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str) -> "DenseIndex":
        require_retrieval("a dense index")
        import faiss
        index = faiss.read_index(str(path))
        if kind == "ivf":
            index.nprobe = min(IVF_NPROBE, index.nlist)
        return cls(index, kind)
