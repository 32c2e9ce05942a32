"""The one small protocol every stage uses to talk to a model.

`generate` takes raw prompts (strings, sent as-is) or chats (lists of {"role", "content"}, rendered with the
model's own chat template) and returns `n` completions per input with token counts, so later stages can
account compute per question. `loglikelihood_batch` scores continuations of a context the way
lm-evaluation-harness does (same tokenization split), so accuracies are comparable with published numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence, Union

from ..config import SamplingConfig
from ..errors import UserError

Chat = list[dict[str, str]]
Prompt = Union[str, Chat]


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (eos or a stop string) or "length"


class Backend(ABC):
    name: str = "base"

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        """n completions for each prompt, in input order."""

    @abstractmethod
    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """For each (context, continuations): log P(continuation | context) summed over its tokens."""

    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        """The text the model reads for a prompt: a string as-is, a chat through the model's chat template (with
        the assistant turn opened unless add_generation_prompt is False). Backends that send chats to a server
        without showing the rendered text cannot do this."""
        if isinstance(prompt, str):
            return prompt
        raise UserError(f"backend '{self.name}' cannot render chat prompts; use the hf backend (evaluation: "
                        "or --scoring loglik)")

    def loglikelihood(self, context: str, continuations: Sequence[str]) -> list[float]:
        return self.loglikelihood_batch([(context, continuations)])[0]

    def stream_chat(self, chat: Chat, sampling: SamplingConfig | None = None):
        """Yield text pieces as they are generated; backends without streaming yield once."""
        yield self.generate([chat], sampling)[0][0].text

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        pass


def split_context(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval moves trailing spaces of the context onto the continuation before tokenizing."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def prefix_token(tok) -> int | None:
    """lm-eval's prefix token: what an empty context is scored after (BOS, else EOS)."""
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def lm_eval_encode(tok, text: str, add_bos: bool | None, prefix_text: str) -> list[int]:
    """lm-eval's hf tokenization of scored text: the tokenizer's own special tokens (Llama 3 adds BOS, SmolLM2
    none) unless `add_bos` says otherwise, and none before text that starts with the prefix token's text (a
    rendered chat template's BOS)."""
    if prefix_text and text.startswith(prefix_text):
        add_bos = False
    ids = tok.encode(text, **({} if add_bos is None else {"add_special_tokens": add_bos}))
    bos = tok.bos_token_id
    if add_bos and bos is not None and ids[:1] != [bos]:  # a tokenizer without a BOS rule, told to add one
        ids = [bos] + ids
    return ids


def lm_eval_pair(tok, context: str, continuation: str, add_bos: bool | None = None,
                 prefix_text: str | None = None) -> tuple[list[int], list[int]]:
    """lm-eval's (context, continuation) tokens: tokenized whole, cut at the context's length, trailing context
    spaces moved onto the continuation; an empty context is the prefix token."""
    prefix = prefix_token(tok)
    if prefix_text is None:
        prefix_text = tok.decode([prefix]) if prefix is not None else ""
    if context == "":
        cont = tok.encode(continuation, add_special_tokens=False)
        return ([prefix], cont) if not cont or cont[0] != prefix else (cont[:1], cont[1:])
    context, continuation = split_context(context, continuation)
    whole = lm_eval_encode(tok, context + continuation, add_bos, prefix_text)
    n_ctx = len(lm_eval_encode(tok, context, add_bos, prefix_text))
    return whole[:n_ctx] or [prefix], whole[n_ctx:]  # a context of spaces only: as an empty one


def prompt_seeds(s: SamplingConfig, n_prompts: int) -> list[int] | None:
    """The per-prompt seeds of a call (None: one seed for the whole call), checked against the prompts."""
    if s.seeds is not None and len(s.seeds) != n_prompts:
        raise ValueError(f"sampling.seeds has {len(s.seeds)} seeds for {n_prompts} prompts")
    return s.seeds


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
