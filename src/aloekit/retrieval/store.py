"""Embeddings appended per batch, keyed by the hash of the text they embed.

A kill -9 can cut a write anywhere: the vectors of a batch are written and fsynced before its keys, and on open
both files are cut back to the rows that have a complete key line and a complete vector. So a rerun loses at most
the batch in flight and embeds nothing twice. Because rows are keyed by text hash, a later build over a grown
corpus (or another chunking that yields some of the same chunks) reuses every vector it already has."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..io import atomic_write_json

FORMAT = 1


class EmbeddingStore:
    def __init__(self, folder: str | os.PathLike, model_id: str, dim: int):
        import numpy as np
        self.folder = Path(folder)
        self.model_id, self.dim = model_id, dim
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = {"format": FORMAT, "embedding_model": model_id, "dim": dim}
        stamp_path = self.folder / "store.json"
        if stamp_path.is_file():
            old = json.loads(stamp_path.read_text(encoding="utf-8"))
            if old != stamp:
                raise UserError(f"{self.folder.parent}: holds embeddings of '{old.get('embedding_model')}' "
                                f"(dimension {old.get('dim')}), not '{model_id}' ({dim}); use the same "
                                f"--embedding-model or a new --output folder")
        else:
            atomic_write_json(stamp_path, stamp)
        self.vec_path, self.key_path = self.folder / "vectors.f32", self.folder / "keys.txt"
        self.vec_path.touch()
        self.key_path.touch()
        raw = self.key_path.read_bytes()
        complete = raw[:raw.rfind(b"\n") + 1]  # a key line without its newline was cut by a kill
        keys = complete.decode("utf-8").splitlines()
        row_bytes = 4 * dim
        n = min(len(keys), self.vec_path.stat().st_size // row_bytes)
        keys = keys[:n]
        # cut both files back to the n complete rows, so the next append starts on a row boundary
        with open(self.vec_path, "r+b") as f:
            f.truncate(n * row_bytes)
        with open(self.key_path, "r+b") as f:
            f.truncate(sum(len(k.encode("utf-8")) + 1 for k in keys))
        self.rows = {k: i for i, k in enumerate(keys)}
        self._np = np

    def __len__(self) -> int:
        return len(self.rows)

    def missing(self, keys: Sequence[str]) -> list[str]:
        seen: set[str] = set()
        out = []
        for k in keys:
            if k not in self.rows and k not in seen:
                seen.add(k)
                out.append(k)
        return out

    def append(self, keys: Sequence[str], vectors) -> None:
        vectors = self._np.ascontiguousarray(vectors, dtype=self._np.float32)
        assert vectors.shape == (len(keys), self.dim)
        with open(self.vec_path, "ab") as f:
            f.write(vectors.tobytes())
            f.flush()
            os.fsync(f.fileno())
        with open(self.key_path, "ab") as f:
            f.write("".join(f"{k}\n" for k in keys).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        base = len(self.rows)
        for i, k in enumerate(keys):
            self.rows[k] = base + i

    def get(self, keys: Sequence[str]):
        np = self._np
        mat = np.memmap(self.vec_path, dtype=np.float32, mode="r", shape=(len(self.rows), self.dim)) \
            if self.rows else np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(mat[[self.rows[k] for k in keys]], dtype=np.float32).reshape(len(keys), self.dim)
