"""BM25 over the maintained `bm25s` package (sparse scores precomputed at index time, fast numpy retrieval)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from ..extras import require

STOPWORDS = "english"


def _require() -> None:
    require("retrieval", "bm25s", what="a BM25 index")


def _tokenize(texts: Sequence[str]):
    import bm25s
    return bm25s.tokenize(list(texts), stopwords=STOPWORDS, show_progress=False)


class BM25Index:
    def __init__(self, model):
        self.model = model

    @classmethod
    def build(cls, texts: Sequence[str]) -> "BM25Index":
        _require()
        import bm25s
        model = bm25s.BM25()
        model.index(_tokenize(texts), show_progress=False)
        return cls(model)

    @property
    def size(self) -> int:
        return int(self.model.scores["num_docs"])

    def search(self, queries: Sequence[str], depth: int):
        """(scores, ids), each (n_queries, depth), best first. A query with no known word gets ids -1 (a BM25
        score of 0 means no shared word: such a document was not retrieved)."""
        import numpy as np
        depth = max(1, min(depth, self.size))
        tokens = _tokenize(queries)
        ids, scores = self.model.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
        ids = np.asarray(ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        ids[scores <= 0] = -1
        return scores, ids

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save(str(tmp), show_progress=False)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BM25Index":
        _require()
        import bm25s
        return cls(bm25s.BM25.load(str(path), show_progress=False, verbosity=0))
