"""`aloekit rag index`: corpus -> documents -> token chunks (deduplicated) -> aloekit.retrieval's index folder.

Everything that can be wrong with the input (the corpus, the embedding model, the chunking, an --append target)
is checked before the first byte is written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import console as con
from ..errors import UserError
from ..retrieval.embed import DEFAULT_EMBEDDER, require_retrieval
from ..retrieval.index import CARD
from ..retrieval.leak import norm_text
from .chunking import Chunking, chunk_documents
from .corpus import read_corpus


def _corpus_hash(sources: list[dict]) -> str:
    return hashlib.sha256(json.dumps([s["sha256"] for s in sources]).encode()).hexdigest()


def index_corpus(corpus: list[str | os.PathLike], output: str | os.PathLike, text_field: str = "text",
                 chunk_tokens: int = 192, overlap: int = 32, embedding_model: str = DEFAULT_EMBEDDER,
                 dense: str = "auto", batch: int = 512, append: bool = False, skip_bad_rows: bool = False,
                 limit: int | None = None) -> dict[str, Any]:
    require_retrieval("aloekit rag index")  # the retrieval extra includes bm25s
    if batch < 1:
        raise UserError(f"--batch {batch}: give at least 1")
    if dense not in ("auto", "flat", "ivf", "hnsw"):
        raise UserError(f"--dense {dense}: unknown; valid: auto, flat, ivf, hnsw")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {out}: is a file; give a folder")
    chunking = Chunking(chunk_tokens, overlap)
    chunking.check()
    docs = read_corpus(list(corpus), text_field, skip_bad_rows, limit)

    old_chunks: list[dict] = []
    old_card: dict[str, Any] = {}
    if append:
        from ..retrieval.index import CorpusIndex
        if not (out / CARD).is_file():
            raise UserError(f"--append: {out} holds no finished index to append to; build it first without --append")
        existing = CorpusIndex.load(out)
        old_card = existing.card
        if old_card["embedding_model"] != embedding_model:
            raise UserError(f"--append: {out} was built with embedding model '{old_card['embedding_model']}', not "
                            f"'{embedding_model}'; pass --embedding-model {old_card['embedding_model']}")
        was = old_card["chunking"]
        if (was["chunk_tokens"], was["overlap"]) != (chunk_tokens, overlap):
            raise UserError(f"--append: {out} was chunked with --chunk-tokens {was['chunk_tokens']} --overlap "
                            f"{was['overlap']}; use the same values (or rebuild without --append)")
        old_chunks = [{k: v for k, v in c.items() if k != "row"} for c in existing.chunks]

    from ..retrieval.embed import Embedder
    embedder = Embedder(embedding_model)
    chunking.check(embedder.max_tokens)
    seen = {norm_text(c["text"]) for c in old_chunks}
    new_chunks, dropped = chunk_documents(docs.documents, embedder.tokenizer, chunking, seen)
    if not new_chunks and not old_chunks:
        raise UserError(f"{', '.join(map(str, corpus))}: the corpus has no text to index")
    if append and not new_chunks:
        con.note("nothing new to append: every chunk is already in the index")

    counts_old = old_card.get("counts", {})
    sources = old_card.get("corpus", {}).get("sources", []) + docs.sources
    card = {
        "corpus": {"sha256": _corpus_hash(sources), "sources": sources},
        "chunking": {"unit": f"tokens of {embedding_model}", "chunk_tokens": chunk_tokens, "overlap": overlap,
                     "dedup": "exact, after lower-casing and dropping punctuation"},
        "counts": {"documents": counts_old.get("documents", 0) + len(docs.documents),
                   "chunks": len(old_chunks) + len(new_chunks),
                   "duplicate_chunks_dropped": counts_old.get("duplicate_chunks_dropped", 0) + dropped,
                   "skipped_rows": counts_old.get("skipped_rows", 0) + docs.skipped},
    }
    from ..retrieval.index import write_index
    return write_index(out, old_chunks + new_chunks, embedder, card, dense_kind=dense, batch=batch)
