"""Shared fixtures: the real default model (converted once per machine) and a tiny random Llama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def one_line_error(r, *fragments) -> str:
    """A CLI run that failed the way bad input must: exit 2, one `error:` line naming the fragments, no traceback,
    nothing on stdout. Returns the line."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == "", r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real benchmark data (read-only, never copied into the repo)."""
    p = Path(os.environ.get("ALOEKIT_DATA_DIR") or REPO.parent / "shared" / "data")
    assert p.is_dir(), f"shared data not found at {p}; set ALOEKIT_DATA_DIR"
    return p


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    from aloekit import models
    return Path(models.prepare(models.DEFAULT_MODEL))


@pytest.fixture(scope="session")
def real_tokenizer(real_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(real_model_dir)


def make_tiny_llama(tokenizer, seed: int = 0, **overrides):
    """A 2-layer random Llama with the real tokenizer's vocab: fast, and exercises the same code paths."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, **overrides)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_llama(folder: Path, tokenizer, seed: int = 0) -> Path:
    """make_tiny_llama saved with the tokenizer: a loadable HF folder for stages that take a model path."""
    make_tiny_llama(tokenizer, seed=seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_backend(real_tokenizer):
    """HF backend over a tiny random Llama, fp32 (exact comparisons)."""
    from aloekit.backends.hf import HFBackend
    from aloekit.config import ModelConfig
    return HFBackend(ModelConfig(name="tiny-random", dtype="float32", batch_size=8),
                     model=make_tiny_llama(real_tokenizer), tokenizer=real_tokenizer)


@pytest.fixture(scope="session")
def real_backend(real_model_dir):
    """The real default model in the CPU default dtype (bf16)."""
    from aloekit.backends import load_backend
    return load_backend(batch_size=8)
