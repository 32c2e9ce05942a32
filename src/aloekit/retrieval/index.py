"""The corpus index on disk, and search over it (dense, BM25 or both fused), with the leakage guard.

One folder:
    index.json      the card: format, corpus hash and sources, chunking, embedding model id and dimension, dense
                    and sparse index settings, counts. Written last: a folder without it is an unfinished build
    chunks.jsonl    one chunk per line: text, its document's id / title / source / url, token span, key
    embeddings.npy  the chunks' normalised embeddings, row i = line i of chunks.jsonl
    dense.faiss     faiss inner product over them (flat, IVF or HNSW: dense.py)
    bm25/           the bm25s index over the same texts
    embeddings/     the per-batch embedding store (store.py): what a rerun resumes from and appends reuse
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from .. import console as con
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl
from .dense import DenseIndex
from .fusion import rrf
from .leak import contains_question
from .sparse import BM25Index
from .store import EmbeddingStore

INDEX_FORMAT = 1
CARD = "index.json"
Mode = Literal["hybrid", "dense", "bm25"]
MODES = ("hybrid", "dense", "bm25")


def chunk_input(chunk: dict) -> str:
    """What is embedded and BM25-indexed for a chunk: its document's title (when there is one) and its text."""
    return f"{chunk['title']}\n{chunk['text']}" if chunk.get("title") else chunk["text"]


def chunk_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _save_npy(path: Path, arr) -> None:
    import numpy as np
    tmp = path.with_name(f".{path.name}.tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def write_index(out: str | os.PathLike, chunks: list[dict], embedder, card: dict[str, Any],
                dense_kind: str = "auto", batch: int = 512, label: str = "embedding chunks") -> dict[str, Any]:
    """Embed (what the store lacks, `batch` chunks per fsynced write), then write the dense and BM25 indexes, the
    chunks and the card, last. Returns the card plus this run's `embedded` / `reused` counts."""
    import numpy as np

    from .dense import resolve_kind
    resolve_kind(dense_kind, len(chunks))  # an impossible index kind fails before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = EmbeddingStore(out / "embeddings", embedder.model_id, embedder.dim)  # refuses another model first
    (out / CARD).unlink(missing_ok=True)  # from here until the card is rewritten the folder is unfinished
    inputs = {c["key"]: chunk_input(c) for c in chunks}
    keys = [c["key"] for c in chunks]
    todo = store.missing(keys)
    reused = len(inputs) - len(todo)
    if reused:
        con.note(f"reusing {reused} embeddings already in {out / 'embeddings'}")
    with con.progress(label, len(todo)) as bar:
        for s in range(0, len(todo), batch):
            part = todo[s:s + batch]
            store.append(part, embedder.encode([inputs[k] for k in part]))
            bar.advance(len(part))
    emb = store.get(keys) if keys else np.zeros((0, embedder.dim), np.float32)
    rows = [{**c, "row": i} for i, c in enumerate(chunks)]
    dense = DenseIndex.build(emb, dense_kind)
    sparse = BM25Index.build([chunk_input(c) for c in chunks])
    atomic_write_jsonl(out / "chunks.jsonl", rows)
    _save_npy(out / "embeddings.npy", emb)
    dense.save(out / "dense.faiss")
    sparse.save(out / "bm25")
    import bm25s
    full = {"format": INDEX_FORMAT, **card, "embedding_model": embedder.model_id, "dim": embedder.dim,
            "normalized": True,
            "dense": {"library": "faiss", "kind": dense.kind, "metric": "inner product (cosine)"},
            "sparse": {"library": "bm25s", "version": bm25s.__version__, "method": "lucene", "k1": 1.5, "b": 0.75,
                       "stopwords": "english"},
            "chunks": len(chunks)}
    atomic_write_json(out / CARD, full)
    return {**full, "embedded": len(todo), "reused": reused}


@dataclass
class Passage:
    chunk: dict
    score: float  # the ranking's score: cosine (dense), BM25 score (bm25) or fused RRF score (hybrid)
    rank: int  # 1-based
    cosine: float | None = None
    bm25: float | None = None

    def to_json(self) -> dict[str, Any]:
        c = self.chunk
        return {"rank": self.rank, "score": round(self.score, 5),
                "cosine": None if self.cosine is None else round(self.cosine, 4),
                "bm25": None if self.bm25 is None else round(self.bm25, 4), "doc_id": c.get("doc_id"),
                "title": c.get("title", ""), "source": c.get("source", ""), "url": c.get("url", ""),
                "where": c.get("where", ""), "chunk": c["row"], "text": c["text"]}


@dataclass
class Retrieved:
    passages: list[Passage]
    leaks: int = 0  # candidates dropped by the leakage guard
    leaked: list[int] = field(default_factory=list)  # their chunk rows


class CorpusIndex:
    def __init__(self, path: Path, card: dict, chunks: list[dict], embeddings):
        self.path, self.card, self.chunks, self.embeddings = path, card, chunks, embeddings
        self._dense: DenseIndex | None = None
        self._sparse: BM25Index | None = None
        self._embedder = None

    @property
    def embedding_model(self) -> str:
        return self.card["embedding_model"]

    def __len__(self) -> int:
        return len(self.chunks)

    @classmethod
    def load(cls, path: str | os.PathLike, embedding_model: str | None = None) -> "CorpusIndex":
        import numpy as np
        path = Path(path)
        if not (path / CARD).is_file() and (path / "manifest.json").is_file():
            # a recipe's rag_index stage ("@stage"): its run directory names the index folder among its outputs
            try:
                sub = json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("outputs", {}).get("index")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                sub = None
            if sub:
                path = path / sub
        if not path.is_dir():
            what = "is not a folder" if path.exists() else "does not exist"
            raise UserError(f"{path}: index folder {what}; build one with `aloekit rag index CORPUS --output {path}`")
        card_path = path / CARD
        if not card_path.is_file():
            hint = (" (an unfinished build: rerun `aloekit rag index` with the same --output to resume)"
                    if (path / "embeddings").is_dir() else "; build one with `aloekit rag index CORPUS --output DIR`")
            raise UserError(f"{path}: not a RAG index, {CARD} is missing{hint}")
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{card_path}: not a valid index card ({type(e).__name__}); rebuild the index") from None
        if not isinstance(card, dict) or card.get("format") != INDEX_FORMAT or "embedding_model" not in card:
            raise UserError(f"{card_path}: unknown index format; rebuild it with this aloekit version")
        if embedding_model and embedding_model != card["embedding_model"]:
            raise UserError(f"{path}: index was built with embedding model '{card['embedding_model']}', not "
                            f"'{embedding_model}'; query with the same embedding model or rebuild the index")
        with open(path / "chunks.jsonl", encoding="utf-8") as f:
            chunks = [json.loads(x) for x in f if x.strip()]
        emb = np.load(path / "embeddings.npy", mmap_mode="r")
        if emb.shape != (len(chunks), card["dim"]):
            raise UserError(f"{path}: {len(chunks)} chunks but embeddings of shape {tuple(emb.shape)}; rebuild the index")
        return cls(path, card, chunks, emb)

    # ---- the parts, loaded on first use (a BM25-only query never loads the embedding model) ----
    def embedder(self):
        if self._embedder is None:
            from .embed import Embedder
            e = Embedder(self.embedding_model)
            if e.dim != self.card["dim"]:
                raise UserError(f"{self.path}: embeddings have dimension {self.card['dim']} but "
                                f"'{self.embedding_model}' gives {e.dim}; rebuild the index")
            self._embedder = e
        return self._embedder

    def dense(self) -> DenseIndex:
        if self._dense is None:
            self._dense = DenseIndex.load(self.path / "dense.faiss", self.card["dense"]["kind"])
        return self._dense

    def sparse(self) -> BM25Index:
        if self._sparse is None:
            self._sparse = BM25Index.load(self.path / "bm25")
        return self._sparse

    def search(self, queries: Sequence[str], k: int = 5, mode: str = "hybrid",
               guard: Sequence[str] | None = None, leak_threshold: float = 0.95,
               leak_overlap: float = 0.5) -> list[Retrieved]:
        """The k best chunks for each query, best first. `guard`: one test question per query; a chunk that
        contains it (leak.contains_question) or whose embedding is at least `leak_threshold` similar to it is
        left out and counted, and the search goes deeper so that k chunks are still returned."""
        if mode not in MODES:
            raise UserError(f"retrieval mode '{mode}': unknown; valid: {', '.join(MODES)}")
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        if not queries or not self.chunks:
            return [Retrieved([]) for _ in queries]
        import numpy as np
        n = len(self.chunks)
        need_vec = mode != "bm25" or guard is not None
        qvec = self.embedder().encode(list(queries)) if need_vec else None
        depth = min(n, max(4 * k, 50) if mode == "hybrid" else k + 16)
        out: list[Retrieved | None] = [None] * len(queries)
        todo = list(range(len(queries)))
        while todo:
            ranked = self._rank([queries[i] for i in todo], None if qvec is None else qvec[todo], mode, depth)
            again = []
            for i, cand in zip(todo, ranked):
                res = Retrieved([])
                for row, score, cos, bm in cand:
                    if guard is not None:
                        c = self.chunks[row]
                        sim = float(np.dot(self.embeddings[row], qvec[i]))
                        if sim >= leak_threshold or contains_question(guard[i], chunk_input(c), leak_overlap):
                            res.leaks += 1
                            res.leaked.append(row)
                            continue
                    if cos is None and qvec is not None:
                        cos = float(np.dot(self.embeddings[row], qvec[i]))
                    res.passages.append(Passage(self.chunks[row], score, len(res.passages) + 1, cos, bm))
                    if len(res.passages) == k:
                        break
                if len(res.passages) < k and res.leaks and depth < n:
                    again.append(i)  # the guard ate too much of this depth: search deeper
                else:
                    out[i] = res
            todo = again
            depth = min(n, depth * 4)
        return out  # type: ignore[return-value]

    def _rank(self, queries, qvec, mode: str, depth: int) -> list[list[tuple[int, float, float | None, float | None]]]:
        """Per query: (row, score, cosine, bm25) best first."""
        dense_rows = sparse_rows = None
        if mode in ("dense", "hybrid"):
            sims, ids = self.dense().search(qvec, depth)
            dense_rows = [[(int(i), float(s)) for s, i in zip(sr, ir) if i >= 0] for sr, ir in zip(sims, ids)]
        if mode in ("bm25", "hybrid"):
            scores, ids = self.sparse().search(queries, depth)
            sparse_rows = [[(int(i), float(s)) for s, i in zip(sr, ir) if i >= 0] for sr, ir in zip(scores, ids)]
        out = []
        for qi in range(len(queries)):
            if mode == "dense":
                out.append([(r, s, s, None) for r, s in dense_rows[qi]])
            elif mode == "bm25":
                out.append([(r, s, None, s) for r, s in sparse_rows[qi]])
            else:
                cos = dict(dense_rows[qi])
                bm = dict(sparse_rows[qi])
                fused = rrf([[r for r, _ in dense_rows[qi]], [r for r, _ in sparse_rows[qi]]])
                out.append([(r, s, cos.get(r), bm.get(r)) for r, s in fused])
        return out


def load_index(path: str | os.PathLike, embedding_model: str | None = None) -> CorpusIndex:
    from .embed import require_retrieval
    require_retrieval("a RAG index (the rag and rag-cot strategies, `aloekit rag query`)")
    return CorpusIndex.load(path, embedding_model)
