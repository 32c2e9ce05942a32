"""Any OpenAI-compatible server (vLLM serve, llama.cpp server, TGI, hosted APIs). Extra `openai`.

Scoring uses the completions endpoint with `echo=True, max_tokens=0, logprobs=1`, summing the log-probs of the
tokens that start at or after the continuation's first character (the lm-eval openai-completions method);
chat-only servers cannot score.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from ..config import ModelConfig, SamplingConfig
from ..errors import UserError
from ..extras import require
from .base import Backend, Completion, Prompt, prompt_seeds, split_context


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, cfg: ModelConfig | None = None, max_workers: int = 8):
        require("openai", what="the openai backend")
        import openai
        self.cfg = cfg or ModelConfig()
        if not self.cfg.base_url:
            raise UserError("the openai backend needs model.base_url (e.g. --set model.base_url=http://host:8000/v1)")
        key = os.environ.get(self.cfg.api_key_env, "EMPTY")  # local servers accept any key
        self._openai = openai
        self.client = openai.OpenAI(base_url=self.cfg.base_url, api_key=key, max_retries=2, timeout=600)
        self.max_workers = max_workers

    def _call(self, fn, **kw):
        try:
            return fn(**kw)
        except self._openai.APIConnectionError:
            raise UserError(f"cannot reach the server at {self.cfg.base_url}; is it running?") from None
        except self._openai.APIStatusError as e:
            raise UserError(f"server at {self.cfg.base_url} answered {e.status_code}: {str(e)[:200]}") from None

    def _one(self, p: Prompt, s: SamplingConfig, n: int) -> list[Completion]:
        kw = dict(model=self.cfg.name, max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                  n=n, seed=s.seed, stop=list(s.stop) or None)
        if isinstance(p, str):
            r = self._call(self.client.completions.create, prompt=p, **kw)
            texts = [(c.text, c.finish_reason) for c in r.choices]
        else:
            r = self._call(self.client.chat.completions.create, messages=p, **kw)
            texts = [(c.message.content or "", c.finish_reason) for c in r.choices]
        usage = r.usage
        per = (usage.completion_tokens // max(n, 1)) if usage else 0
        return [Completion(text=t, prompt_tokens=usage.prompt_tokens if usage else 0, completion_tokens=per,
                           finish_reason=f or "stop") for t, f in texts]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        s = sampling or SamplingConfig()
        seeds = prompt_seeds(s, len(prompts))
        per = [s.model_copy(update={"seed": x}) for x in seeds] if seeds else [s] * len(prompts)
        with ThreadPoolExecutor(self.max_workers) as pool:
            return list(pool.map(lambda ps: self._one(ps[0], ps[1], n), zip(prompts, per)))

    def _score(self, context: str, cont: str) -> float:
        context, cont = split_context(context, cont)
        r = self._call(self.client.completions.create, model=self.cfg.name, prompt=context + cont, max_tokens=0,
                       echo=True, logprobs=1, temperature=0)
        lp = r.choices[0].logprobs
        if lp is None or lp.token_logprobs is None:
            raise UserError(f"server at {self.cfg.base_url} returned no prompt logprobs; it cannot score")
        return float(sum(v for off, v in zip(lp.text_offset, lp.token_logprobs)
                         if off >= len(context) and v is not None))

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        flat = [(ctx, c) for ctx, conts in requests for c in conts]
        with ThreadPoolExecutor(self.max_workers) as pool:
            scores = list(pool.map(lambda x: self._score(*x), flat))
        out, k = [], 0
        for _, conts in requests:
            out.append(scores[k:k + len(conts)])
            k += len(conts)
        return out
