"""llama.cpp backend: runs the GGUF directly on CPU (extra `llamacpp`).

Scoring reads raw logits (`logits_all=True`) and computes log-softmax here. llama-cpp-python's
`echo=True` prompt logprobs are shifted by one position, so they are never used for scoring.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..config import ModelConfig, SamplingConfig
from ..errors import UserError
from ..extras import require
from .base import Backend, Completion, Prompt, prompt_seeds, split_context


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, cfg: ModelConfig | None = None, n_ctx: int = 2048):
        require("llamacpp", what="the llamacpp backend")
        from llama_cpp import Llama

        from ..models import gguf_path
        self.cfg = cfg or ModelConfig()
        path = gguf_path(self.cfg.name)
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                             n_threads=os.cpu_count(), n_batch=512)
        except (ValueError, RuntimeError) as e:
            raise UserError(f"{path}: llama.cpp cannot load it ({e})") from None

    def _tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        s = sampling or SamplingConfig()
        kw = dict(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                  top_k=s.top_k, repeat_penalty=s.repetition_penalty, stop=list(s.stop) or None)
        out = []
        seeds = prompt_seeds(s, len(prompts))
        for i, p in enumerate(prompts):
            samples = []
            for k in range(n):
                # llama.cpp samples one sequence per call: sample k gets its own derived seed
                seed = (seeds[i] if seeds else s.seed) + k
                if isinstance(p, str):
                    r = self.llm.create_completion(p, seed=seed, **kw)
                    text = r["choices"][0]["text"]
                else:
                    r = self.llm.create_chat_completion(messages=p, seed=seed, **kw)
                    text = r["choices"][0]["message"]["content"] or ""
                samples.append(Completion(text=text, prompt_tokens=r["usage"]["prompt_tokens"],
                                          completion_tokens=r["usage"]["completion_tokens"],
                                          finish_reason=r["choices"][0]["finish_reason"] or "stop"))
            out.append(samples)
        return out

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        out = []
        for context, conts in requests:
            scores = []
            for cont in conts:
                ctx_text, cont_text = split_context(context, cont)
                whole = self._tokens(ctx_text + cont_text)
                n_ctx = len(self._tokens(ctx_text)) if ctx_text else 0
                ctx, cont_ids = whole[:n_ctx], whole[n_ctx:]
                if not ctx:
                    ctx = [self.llm.token_bos()]
                self.llm.reset()
                self.llm.eval(ctx + cont_ids[:-1])
                logits = np.asarray(self.llm.scores[len(ctx) - 1: len(ctx) - 1 + len(cont_ids)])
                lp = _log_softmax(logits)
                scores.append(float(sum(lp[j, t] for j, t in enumerate(cont_ids))))
            out.append(scores)
        return out
