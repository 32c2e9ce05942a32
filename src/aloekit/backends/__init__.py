"""Inference backends behind one protocol (see base.py). `load_backend` picks one by name."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import UserError
from .base import Backend, Chat, Completion, Prompt

BACKENDS = ("hf", "vllm", "llamacpp", "openai")


def load_backend(cfg: ModelConfig | None = None, **overrides) -> Backend:
    cfg = (cfg or ModelConfig()).model_copy(update=overrides)
    if cfg.backend == "hf":
        from .hf import HFBackend
        return HFBackend(cfg)
    if cfg.backend == "vllm":
        from .vllm import VLLMBackend
        return VLLMBackend(cfg)
    if cfg.backend == "llamacpp":
        from .llamacpp import LlamaCppBackend
        return LlamaCppBackend(cfg)
    if cfg.backend == "openai":
        from .openai_api import OpenAIBackend
        return OpenAIBackend(cfg)
    raise UserError(f"unknown backend '{cfg.backend}': use one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "Chat", "Completion", "Prompt", "BACKENDS", "load_backend"]
