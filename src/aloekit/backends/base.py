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


def prompt_seeds(s: SamplingConfig, n_prompts: int) -> list[int] | None:
    """The per-prompt seeds of a call (None: one seed for the whole call), checked against the prompts."""
    if s.seeds is not None and len(s.seeds) != n_prompts:
        raise ValueError(f"sampling.seeds has {len(s.seeds)} seeds for {n_prompts} prompts")
    return s.seeds


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
