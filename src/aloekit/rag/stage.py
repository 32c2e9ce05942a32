"""The corpus index (`aloekit rag index`) under the stage contract (aloekit/stage.py), kind `rag_index`.

A recipe builds its index as a stage and points a strategy at it (`params: {rag: {index: "@<stage>"}}` of a
medprompt stage): the index is then rebuilt only when its corpus files or settings change, like any stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..benchmarks import resolve_local
from ..config import StrictModel
from ..errors import UserError
from ..retrieval.embed import DEFAULT_EMBEDDER
from ..stage import Estimate, Stage

INDEX = "index"  # the index folder inside the stage's run directory


class RagIndexConfig(StrictModel):
    corpus: list[str] = Field(..., min_length=1, description="files or folders (`aloekit rag index CORPUS...`); "
                                                             "pkg:<path> names a file shipped with aloekit")
    text_field: str = "text"
    chunk_tokens: int = Field(192, ge=8)
    overlap: int = Field(32, ge=0)
    embedding_model: str = DEFAULT_EMBEDDER
    dense: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    batch: int = Field(512, ge=1)
    skip_bad_rows: bool = False
    limit: int | None = Field(None, ge=1)
    output: str | None = None  # filled in by the recipe


def run(cfg: RagIndexConfig, inputs: dict[str, Path], out: Path) -> Path:
    from ..rundir import RunDir
    from .build import index_corpus
    rd = RunDir(out, "rag_index", cfg)
    with rd.timed("index"):
        card = index_corpus([resolve_local(c) for c in cfg.corpus], out / INDEX, text_field=cfg.text_field,
                            chunk_tokens=cfg.chunk_tokens, overlap=cfg.overlap, embedding_model=cfg.embedding_model,
                            dense=cfg.dense, batch=cfg.batch, skip_bad_rows=cfg.skip_bad_rows, limit=cfg.limit)
    rd.output(INDEX, INDEX)
    rd.finish(metrics={k: float(v) for k, v in card["counts"].items()})
    return out


def estimate(cfg: RagIndexConfig) -> Estimate:
    return Estimate(disk_gb=0.01)


def check(cfg: RagIndexConfig, where: str) -> None:
    for i, c in enumerate(cfg.corpus):
        if not resolve_local(c).exists():
            raise UserError(f"{where}.config.corpus[{i}]: {c} does not exist; give a corpus file or folder")
    if cfg.overlap >= cfg.chunk_tokens:
        raise UserError(f"{where}.config.overlap: {cfg.overlap} must be below chunk_tokens ({cfg.chunk_tokens})")


def requires(cfg: RagIndexConfig, what: str) -> None:
    from ..extras import require
    require("retrieval", what=what)


STAGE = Stage(kind="rag_index", config=RagIndexConfig, run=run, estimate=estimate, check=check, requires=requires)
