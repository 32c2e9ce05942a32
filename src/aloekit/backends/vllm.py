"""vLLM backend (extra `gpu`): paged attention, automatic prefix caching, n>1 sampling from one prompt
encoding. GPU-only: vLLM has no CPU wheel, so it is exercised only on a GPU machine."""

from __future__ import annotations

from typing import Sequence

from ..config import ModelConfig, SamplingConfig
from ..extras import require
from .base import Backend, Completion, Prompt, prompt_seeds, split_context


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, cfg: ModelConfig | None = None, **engine_kwargs):
        require("gpu", "vllm", what="the vllm backend")
        from vllm import LLM

        from ..models import resolve
        self.cfg = cfg or ModelConfig()
        dtype = "auto" if self.cfg.dtype == "auto" else self.cfg.dtype
        self.llm = LLM(model=resolve(self.cfg.name), dtype=dtype, enable_prefix_caching=True, seed=0,
                       **engine_kwargs)
        self.tok = self.llm.get_tokenizer()

    def _params(self, s: SamplingConfig, n: int, **extra):
        from vllm import SamplingParams
        return SamplingParams(n=n, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or -1,
                              repetition_penalty=s.repetition_penalty, max_tokens=s.max_new_tokens,
                              stop=list(s.stop) or None, seed=s.seed, **extra)

    def _ids(self, p: Prompt) -> list[int]:
        if isinstance(p, str):
            return self.tok(p).input_ids
        text = self.tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False).input_ids

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        s = sampling or SamplingConfig()
        reqs = [{"prompt_token_ids": self._ids(p)} for p in prompts]
        seeds = prompt_seeds(s, len(prompts))
        # a per-request seed makes a request's samples independent of the batch it runs in
        params = [self._params(s.model_copy(update={"seed": x}), n) for x in seeds] if seeds else self._params(s, n)
        res = self.llm.generate(reqs, params, use_tqdm=False)
        return [[Completion(text=o.text, prompt_tokens=len(r.prompt_token_ids),
                            completion_tokens=len(o.token_ids), finish_reason=o.finish_reason or "stop")
                 for o in r.outputs] for r in res]

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        flat, spans = [], []
        for context, conts in requests:
            for cont in conts:
                ctx, c = split_context(context, cont)
                whole = self.tok(ctx + c, add_special_tokens=False).input_ids
                n_ctx = len(self.tok(ctx, add_special_tokens=False).input_ids) or 0
                if n_ctx == 0:
                    whole = [self.tok.bos_token_id or self.tok.eos_token_id] + whole
                    n_ctx = 1
                flat.append({"prompt_token_ids": whole})
                spans.append((n_ctx, whole))
        params = self._params(SamplingConfig(max_new_tokens=1), 1, prompt_logprobs=0)
        res = self.llm.generate(flat, params, use_tqdm=False)
        scores = [sum(r.prompt_logprobs[i][whole[i]].logprob for i in range(n_ctx, len(whole)))
                  for r, (n_ctx, whole) in zip(res, spans)]
        out, k = [], 0
        for _, conts in requests:
            out.append(scores[k:k + len(conts)])
            k += len(conts)
        return out
