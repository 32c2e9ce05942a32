"""Inference backends behind one protocol (see base.py). Stages use only this module: `load_backend` builds the
backend a ModelConfig names, `resolve_device` says where an "auto" device would run; never a backend's own
module (backends/hf.py ...)."""

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


def resolve_device(device: str = "auto") -> str:
    """The device a local (hf) backend runs on for `device`: "auto" is cuda when one is visible, else cpu."""
    from .hf import pick_device
    return pick_device(device)


__all__ = ["Backend", "Chat", "Completion", "Prompt", "BACKENDS", "load_backend", "resolve_device"]
