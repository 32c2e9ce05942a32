"""Stages reach a model only through the backend protocol (backends/base.py) and `aloekit.backends`: the
factory, `resolve_device`, and protocol methods such as `render`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aloekit.backends import Backend, load_backend, resolve_device
from aloekit.config import ModelConfig
from aloekit.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src" / "aloekit"
STAGES = ("data", "eval", "medprompt", "merge", "redteam", "train")


class Echo(Backend):
    name = "echo"

    def generate(self, prompts, sampling=None, n=1):
        raise NotImplementedError

    def loglikelihood_batch(self, requests):
        return [[0.0] * len(c) for _, c in requests]


def test_render_is_part_of_the_protocol():
    be = Echo()
    assert be.render("plain text") == "plain text"
    with pytest.raises(UserError, match="backend 'echo' cannot render chat prompts"):
        be.render([{"role": "user", "content": "hi"}])


def test_hf_render_with_and_without_the_assistant_turn(tiny_backend):
    chat = [{"role": "user", "content": "Is it safe?"}, {"role": "assistant", "content": "Yes."}]
    tok = tiny_backend.tok
    assert tiny_backend.render(chat, add_generation_prompt=False) == tok.apply_chat_template(chat, tokenize=False)
    assert tiny_backend.render(chat[:1]) == tok.apply_chat_template(chat[:1], tokenize=False,
                                                                     add_generation_prompt=True)


def test_factory_and_device():
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(UserError, match="unknown backend"):
        load_backend(ModelConfig().model_construct(backend="nope"))


@pytest.mark.parametrize("stage", STAGES)
def test_stages_import_no_backend_module(stage):
    """Only `aloekit.backends` (the factory and protocol) and `backends.base`; never hf.py, vllm.py ..."""
    bad = re.compile(r"backends\.(hf|vllm|llamacpp|openai_api)\b|from \.+backends import (hf|vllm|llamacpp|openai_api)")
    offenders = [f"{p.relative_to(SRC)}:{n}" for p in (SRC / stage).rglob("*.py")
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if bad.search(line)]
    assert not offenders, offenders
