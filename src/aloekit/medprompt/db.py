"""The example database: questions of a training pool with a chain of thought (written by the model itself or a
teacher) that reaches the gold answer, their embeddings, and a faiss index for nearest-neighbour few-shot.

On disk (one folder):
    generations.jsonl   every generation ever made for this folder (append + fsync per batch): the resume cache
    records.jsonl       the kept examples: question, options, gold, chain
    embeddings.npy      their normalised embeddings, index.faiss the inner-product index over them (both through
                        aloekit.retrieval, the layer the RAG corpus index uses too)
    db.json             what built it (model, pool, embedding model id and dimension); written last, so a folder
                        without it is an unfinished build
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import console as con
from ..benchmarks import Question as Doc
from ..benchmarks import listed, parse_answer
from ..config import SamplingConfig
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl
from ..prompts import resolve_system_prompt, system_prompt_label
from ..retrieval.dense import DenseIndex
from ..retrieval.embed import Embedder, resolve_embedder  # noqa: F401 - re-exported: medprompt.db.Embedder
from ..retrieval.embed import require_retrieval as _require_retrieval
from ..retrieval.leak import norm_text
from .config import DBConfig
from .prompts import cot_chat, normalise_chain

DB_FORMAT = 1


# ---------------- embeddings: the shared retrieval layer (aloekit.retrieval) ----------------

def require_retrieval() -> None:
    _require_retrieval("an example database (the fewshot, knn and medprompt strategies)")


def embed_text(question: str, options: Sequence[str]) -> str:
    return listed(question, list(options))


# ---------------- the database ----------------

@dataclass
class Example:
    question: str
    options: list[str]
    gold: int
    chain: str
    source: str = ""

    def to_json(self) -> dict:
        return {"question": self.question, "options": self.options, "gold": self.gold, "chain": self.chain,
                "source": self.source}


@dataclass
class Hit:
    example: Example
    index: int
    similarity: float


class ExampleDB:
    def __init__(self, examples: list[Example], embeddings, meta: dict[str, Any], path: Path | None = None):
        require_retrieval()
        self.examples = examples
        self.embeddings = embeddings
        self.meta = meta
        self.path = path
        self.index = DenseIndex.build(embeddings, "flat")
        self._embedder: Embedder | None = None
        self._norm = [norm_text(e.question) for e in examples]

    @property
    def embedding_model(self) -> str:
        return self.meta["embedding_model"]

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.embedding_model)
            if self._embedder.dim != self.embeddings.shape[1]:
                raise UserError(f"{self.path}: embeddings have dimension {self.embeddings.shape[1]} but "
                                f"'{self.embedding_model}' gives {self._embedder.dim}; rebuild the database")
        return self._embedder

    @classmethod
    def load(cls, path: str | os.PathLike, embedding_model: str | None = None) -> "ExampleDB":
        require_retrieval()
        import numpy as np
        path = Path(path)
        meta_path = path / "db.json"
        if not meta_path.is_file():
            hint = (" (an unfinished build: rerun `aloekit medprompt build-db` with the same --output to resume)"
                    if (path / "generations.jsonl").is_file() else "")
            raise UserError(f"{path}: not an example database, db.json is missing{hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{meta_path}: invalid JSON ({e.msg}); rebuild the database") from None
        if meta.get("format") != DB_FORMAT or "embedding_model" not in meta:
            raise UserError(f"{meta_path}: unknown database format; rebuild it with this aloekit version")
        if embedding_model and embedding_model != meta["embedding_model"]:
            raise UserError(f"{path}: database was built with embedding model '{meta['embedding_model']}', not "
                            f"'{embedding_model}'; use the same embedding model or rebuild the database")
        examples = []
        with open(path / "records.jsonl", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    examples.append(Example(r["question"], r["options"], r["gold"], r["chain"], r.get("source", "")))
        emb = np.load(path / "embeddings.npy")
        if emb.shape[0] != len(examples):
            raise UserError(f"{path}: {len(examples)} records but {emb.shape[0]} embeddings; rebuild the database")
        db = cls(examples, np.ascontiguousarray(emb, dtype=np.float32), meta, path)
        index_path = path / "index.faiss"
        if index_path.is_file():
            db.index = DenseIndex.load(index_path, "flat")
        return db

    def nearest(self, questions: Sequence[tuple[str, Sequence[str]]], k: int,
                leak_threshold: float = 0.95) -> list[list[Hit]]:
        """The k most similar examples for each question, least similar first (the nearest sits right before
        the question). Leakage guard: never the question itself, nor any example at least `leak_threshold`
        similar or with the same normalised question text."""
        if not questions:
            return []
        q = self.embedder().encode([embed_text(t, o) for t, o in questions])
        depth = min(len(self.examples), k + 16)
        sims, ids = self.index.search(q, depth)
        out = []
        for (text, _), srow, irow in zip(questions, sims, ids):
            key = norm_text(text)
            hits = []
            for s, i in zip(srow.tolist(), irow.tolist()):
                if i < 0 or s >= leak_threshold or self._norm[i] == key:
                    continue
                hits.append(Hit(self.examples[i], i, float(s)))
                if len(hits) == k:
                    break
            if len(hits) < k and depth < len(self.examples):  # many near-duplicates: search the whole index
                return self._nearest_full(questions, k, leak_threshold)
            out.append(hits[::-1])
        return out

    def _nearest_full(self, questions, k, leak_threshold):
        q = self.embedder().encode([embed_text(t, o) for t, o in questions])
        sims = q @ self.embeddings.T
        out = []
        for (text, _), row in zip(questions, sims):
            key = norm_text(text)
            order = row.argsort()[::-1]
            hits = [Hit(self.examples[i], int(i), float(row[i])) for i in order
                    if row[i] < leak_threshold and self._norm[i] != key][:k]
            out.append(hits[::-1])
        return out


# ---------------- building ----------------

def doc_key(doc: Doc) -> str:
    return hashlib.sha256(json.dumps([doc.question, doc.options, doc.gold]).encode()).hexdigest()[:20]


def _read_cache(path: Path) -> list[dict]:
    rows = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is lost, the batch is redone
    return rows


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def validate_pool(docs: Sequence[Doc], source: str) -> None:
    if not docs:
        raise UserError(f"{source}: the pool is empty; give a pool with questions and gold answers")
    for d in docs:
        where = d.where or source
        if len(d.options) < 2:
            raise UserError(f"{where}: a question needs at least 2 options, got {len(d.options)}")
        if not 0 <= d.gold < len(d.options):
            raise UserError(f"{where}: gold answer index {d.gold} does not match its {len(d.options)} options")


def build_db(backend, docs: Sequence[Doc], cfg: DBConfig, output: str | os.PathLike | None = None,
             model_name: str | None = None, pool_source: str = "") -> dict[str, Any]:
    """Self-generated chains of thought for each pool question, kept only where they reach the gold answer.

    Tries each question greedily first, then retries the wrong ones at the temperatures of
    `cfg.retry_temperatures[1:]`. Every generation is appended to generations.jsonl before the next batch
    starts, so a rerun with the same output folder resumes where the last one stopped."""
    validate_pool(docs, pool_source or cfg.pool)
    out = Path(output or cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    # the text, not the name: the chains depend on what the model read (and a no-prompt stamp keeps its null)
    system = resolve_system_prompt(cfg.system, "system")
    stamp = {"model": model_name or backend.cfg.name if hasattr(backend, "cfg") else model_name,
             "max_new_tokens": cfg.max_new_tokens, "retry_temperatures": cfg.retry_temperatures,
             "system": system, "seed": cfg.seed, "pool": cfg.pool}
    stamp_path = out / "cache.json"
    if stamp_path.is_file():
        old = json.loads(stamp_path.read_text(encoding="utf-8"))
        if old != json.loads(json.dumps(stamp)):
            diff = ", ".join(k for k in stamp if old.get(k) != json.loads(json.dumps(stamp))[k])
            raise UserError(f"{out}: holds generations made with a different setup ({diff}); "
                            f"use a new --output folder or delete this one")
    else:
        atomic_write_json(stamp_path, stamp)
    (out / "db.json").unlink(missing_ok=True)  # rebuilt at the end; until then the folder is unfinished

    cache_path = out / "generations.jsonl"
    cache = {(r["doc"], r["attempt"]): r for r in _read_cache(cache_path)}
    keys = [doc_key(d) for d in docs]
    resumed = len(cache)
    if resumed:
        con.note(f"resuming: {resumed} generations already in {cache_path}")
    gen_tokens = sum(r["completion_tokens"] for r in cache.values())

    def solved(i: int, upto: int) -> bool:
        return any(cache.get((keys[i], a), {}).get("correct") for a in range(upto))

    for attempt, temp in enumerate(cfg.retry_temperatures):
        todo = [i for i in range(len(docs)) if not solved(i, attempt) and (keys[i], attempt) not in cache]
        if not todo:
            continue
        sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=temp,
                                  top_p=0.95 if temp > 0 else 1.0, seed=cfg.seed + attempt)
        with con.progress(f"chains (try {attempt + 1}, T={temp})", len(todo)) as bar:
            for s in range(0, len(todo), cfg.batch_prompts):
                idx = todo[s:s + cfg.batch_prompts]
                chats = [cot_chat(docs[i].question, docs[i].options, system) for i in idx]
                res = backend.generate(chats, sampling.model_copy(update={"seed": cfg.seed * 1000 + attempt * 97 + s}))
                rows = []
                for i, r in zip(idx, res):
                    c = r[0]
                    pred = parse_answer(c.text, len(docs[i].options))
                    rows.append({"doc": keys[i], "attempt": attempt, "temperature": temp, "text": c.text,
                                 "pred": pred, "correct": pred == docs[i].gold, "prompt_tokens": c.prompt_tokens,
                                 "completion_tokens": c.completion_tokens})
                _append(cache_path, rows)
                for r in rows:
                    cache[(r["doc"], r["attempt"])] = r
                    gen_tokens += r["completion_tokens"]
                bar.advance(len(idx))

    examples: list[Example] = []
    tries: list[int] = []
    for i, d in enumerate(docs):
        for a in range(len(cfg.retry_temperatures)):
            r = cache.get((keys[i], a))
            if r and r["correct"]:
                examples.append(Example(d.question, list(d.options), d.gold,
                                        normalise_chain(r["text"], d.gold), d.where))
                tries.append(a + 1)
                break
    if not examples:
        raise UserError(f"{pool_source or cfg.pool}: no chain of thought reached the gold answer for any of the "
                        f"{len(docs)} questions; use a stronger --teacher, more retries, or a larger pool")

    embedder = Embedder(cfg.embedding_model)
    emb = embedder.encode([embed_text(e.question, e.options) for e in examples])
    import numpy as np
    atomic_write_jsonl(out / "records.jsonl", [e.to_json() for e in examples])
    tmp = out / ".embeddings.tmp.npy"
    np.save(tmp, emb)
    os.replace(tmp, out / "embeddings.npy")
    DenseIndex.build(emb, "flat").save(out / "index.faiss")
    meta = {"format": DB_FORMAT, "embedding_model": cfg.embedding_model, "dim": int(emb.shape[1]),
            "model": stamp["model"], "teacher": cfg.teacher.name if cfg.teacher else stamp["model"],
            "pool": cfg.pool, "pool_source": pool_source, "pool_size": len(docs), "examples": len(examples),
            "kept_fraction": round(len(examples) / len(docs), 4),
            "tries_histogram": {str(a + 1): tries.count(a + 1) for a in range(len(cfg.retry_temperatures))},
            "generated_tokens": gen_tokens, "generations_resumed": resumed,
            "max_new_tokens": cfg.max_new_tokens, "retry_temperatures": cfg.retry_temperatures,
            "system_prompt": system_prompt_label(cfg.system)}
    atomic_write_json(out / "db.json", meta)
    return meta


def build_from_config(cfg: DBConfig, root: Path | None):
    """`aloekit medprompt build-db` and the recipe's medprompt stage: load the pool, check the embedding model
    (before minutes of generation), load the model that writes the chains and build. Returns (meta, backend):
    the stage goes on with the same backend when the chains' model is the one it evaluates."""
    from ..backends import load_backend
    from .pools import load_pool
    rows = load_pool(cfg.pool, root, limit=cfg.limit)
    Embedder(cfg.embedding_model)
    gen = cfg.teacher or cfg.model
    backend = load_backend(gen)
    return build_db(backend, rows.docs, cfg, model_name=gen.name, pool_source=rows.source), backend
