"""transformers backend: the CPU default, and the reference every other backend is checked against."""

from __future__ import annotations

import threading
from typing import Sequence

from ..config import ModelConfig, SamplingConfig
from ..errors import UserError
from .base import Backend, Chat, Completion, Prompt, split_context, truncate_at_stop


def pick_device(device: str) -> str:
    import torch
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    import torch
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # measured 2-3.5x faster than fp32 on this project's CPUs


class HFBackend(Backend):
    name = "hf"

    def __init__(self, cfg: ModelConfig | None = None, model=None, tokenizer=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # the per-load 'Loading weights' bar is noise next to our own
        self.cfg = cfg or ModelConfig()
        self.device = pick_device(self.cfg.device)
        self.dtype = pick_dtype(self.cfg.dtype, self.device)
        if model is None:
            from ..models import resolve
            path = resolve(self.cfg.name)
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
            except OSError as e:
                raise UserError(f"cannot load model from {path}: {str(e).splitlines()[0][:200]}") from None
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tok = tokenizer
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        self._torch = torch

    # ---------- prompts ----------
    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if not self.tok.chat_template:
            raise UserError(f"model '{self.cfg.name}' has no chat template; pass plain prompts or set one")
        return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        # A rendered chat template already holds its special tokens (e.g. Llama 3's BOS): don't add them twice.
        return self.tok(self.render(prompt), add_special_tokens=isinstance(prompt, str)).input_ids

    # ---------- generation ----------
    def _gen_kwargs(self, s: SamplingConfig, n: int) -> dict:
        kw = dict(max_new_tokens=s.max_new_tokens, num_return_sequences=n, pad_token_id=self.tok.pad_token_id,
                  repetition_penalty=s.repetition_penalty)
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0)
        else:
            # explicit: a model's generation_config may ask for sampling by default
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.tok)
        return kw

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        torch = self._torch
        s = sampling or SamplingConfig()
        encoded = [self.encode_prompt(p) for p in prompts]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # less padding per batch
        out: list[list[Completion] | None] = [None] * len(encoded)
        torch.manual_seed(s.seed)
        eos = set(self._eos_ids())
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            batch = self._left_pad([encoded[i] for i in idx])
            with torch.inference_mode():
                gen = self.model.generate(**batch, **self._gen_kwargs(s, n))
            new = gen[:, batch["input_ids"].shape[1]:].tolist()
            for j, i in enumerate(idx):
                out[i] = [self._completion(new[j * n + k], len(encoded[i]), eos, s) for k in range(n)]
        return out  # type: ignore[return-value]

    def _eos_ids(self) -> list[int]:
        e = self.model.generation_config.eos_token_id
        ids = e if isinstance(e, list) else [e] if e is not None else []
        return ids + ([self.tok.eos_token_id] if self.tok.eos_token_id is not None else [])

    def _completion(self, ids: list[int], n_prompt: int, eos: set[int], s: SamplingConfig) -> Completion:
        cut = next((k for k, t in enumerate(ids) if t in eos), None)
        finish = "stop" if cut is not None else "length"
        ids = ids[:cut + 1] if cut is not None else ids
        text = self.tok.decode(ids, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, s.stop)
        return Completion(text=text, prompt_tokens=n_prompt, completion_tokens=len(ids),
                          finish_reason="stop" if stopped else finish)

    def _left_pad(self, seqs: list[list[int]]) -> dict:
        torch = self._torch
        width = max(len(q) for q in seqs)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(q)) + q for q in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in seqs], device=self.device)
        return {"input_ids": ids, "attention_mask": mask}

    def stream_chat(self, chat: Chat, sampling: SamplingConfig | None = None):
        from transformers import TextIteratorStreamer
        s = sampling or SamplingConfig()
        self._torch.manual_seed(s.seed)
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        batch = self._left_pad([self.encode_prompt(chat)])
        kw = {**self._gen_kwargs(s, 1), "streamer": streamer}

        def work():
            with self._torch.inference_mode():
                self.model.generate(**batch, **kw)
        t = threading.Thread(target=work, daemon=True)
        t.start()
        yield from streamer
        t.join()

    # ---------- scoring ----------
    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split: tokenize context+continuation whole, the context's length decides the cut."""
        context, continuation = split_context(context, continuation)
        whole = self.tok(context + continuation, add_special_tokens=False).input_ids
        n_ctx = len(self.tok(context, add_special_tokens=False).input_ids)
        ctx, cont = whole[:n_ctx], whole[n_ctx:]
        if not ctx:  # lm-eval scores an empty context after the end-of-text token
            ctx = [self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id]
        if not cont:
            raise UserError(f"empty continuation after context {context[-40:]!r}: nothing to score")
        room = self.max_length - len(cont)
        return ctx[-room:], cont

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Each distinct context is run once; its KV cache is reused for all of its continuations, and the
        LM head is applied only where a continuation token is predicted."""
        # group continuations by their exact context tokens (the tokenizer split can differ per option)
        groups: dict[tuple[int, ...], list[tuple[int, int, list[int]]]] = {}
        for r, (context, conts) in enumerate(requests):
            for c, cont in enumerate(conts):
                ctx, cont_ids = self.encode_pair(context, cont)
                groups.setdefault(tuple(ctx), []).append((r, c, cont_ids))
        result = [[0.0] * len(conts) for _, conts in requests]
        keys = sorted(groups, key=len, reverse=True)
        for start in range(0, len(keys), self.cfg.batch_size):
            chunk = keys[start:start + self.cfg.batch_size]
            for (r, c), lp in zip(((r, c) for k in chunk for r, c, _ in groups[k]),
                                  self._score_groups([(list(k), [x[2] for x in groups[k]]) for k in chunk])):
                result[r][c] = lp
        return result

    def _score_groups(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[float]:
        torch = self._torch
        F = torch.nn.functional
        prefix = self._left_pad([ctx for ctx, _ in groups])
        lens = prefix["attention_mask"].sum(1)
        pos = (prefix["attention_mask"].cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            o = self.model(**prefix, position_ids=pos, use_cache=True, logits_to_keep=1)
            first = F.log_softmax(o.logits[:, -1].float(), dim=-1)  # predicts each continuation's 1st token
            rows = [(g, cont) for g, (_, conts) in enumerate(groups) for cont in conts]
            scores = [first[g, cont[0]].item() for g, cont in rows]
            width = max(len(cont) for _, cont in rows) - 1
            if width == 0:
                return scores
            gidx = torch.tensor([g for g, _ in rows], device=self.device)
            cache = o.cache
            cache.batch_select_indices(gidx)  # one cache row per continuation, shared prefix computed once
            pad = self.tok.pad_token_id
            ids = torch.tensor([cont[:-1] + [pad] * (width - len(cont) + 1) for _, cont in rows],
                               device=self.device)
            cmask = torch.tensor([[1] * (len(cont) - 1) + [0] * (width - len(cont) + 1) for _, cont in rows],
                                 device=self.device)
            mask = torch.cat([prefix["attention_mask"][gidx], cmask], dim=1)
            cpos = lens[gidx].unsqueeze(1) + torch.arange(width, device=self.device).unsqueeze(0)
            o2 = self.model(input_ids=ids, attention_mask=mask, position_ids=cpos, cache=cache,
                            use_cache=False)
            logp = F.log_softmax(o2.logits.float(), dim=-1)
            for k, (_, cont) in enumerate(rows):
                rest = cont[1:]
                if rest:
                    t = torch.tensor(rest, device=self.device)
                    scores[k] += logp[k, torch.arange(len(rest), device=self.device), t].sum().item()
        return scores
