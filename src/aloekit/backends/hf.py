"""transformers backend: the CPU default, and the reference every other backend is checked against."""

from __future__ import annotations

import threading
from typing import Sequence

from ..config import ModelConfig, SamplingConfig
from ..errors import UserError
from .base import Backend, Chat, Completion, Prompt, lm_eval_pair, prefix_token, prompt_seeds, truncate_at_stop


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
                # add_bos_token reaches the tokenizer, as lm-eval's hf model passes it: a tokenizer without a BOS
                # rule gets one, and one with it can be told to stop
                bos = {} if self.cfg.add_bos_token is None else {"add_bos_token": self.cfg.add_bos_token}
                tokenizer = AutoTokenizer.from_pretrained(path, **bos)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
            except OSError as e:
                raise UserError(f"cannot load model from {path}: {str(e).splitlines()[0][:200]}") from None
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tok = tokenizer
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        # lm-eval's prefix token: what an empty context is scored after, and the text that turns special tokens off
        prefix = prefix_token(self.tok)
        self._prefix_text = self.tok.decode([prefix]) if prefix is not None else ""
        # settings of the model's generation_config that the shared-prefix decode loop does not reproduce: with any,
        # every prompt goes through generate() (which builds their logits processors and stopping criteria)
        self.loop_unsupported = loop_unsupported(self.model.generation_config)
        self.packed_scoring = True  # turned off, with a warning, if a forward shows the model bypassed the plan
        self._torch = torch
        _register()

    # ---------- prompts ----------
    def render(self, prompt: Prompt, add_generation_prompt: bool = True) -> str:
        if isinstance(prompt, str):
            return prompt
        if not self.tok.chat_template:
            raise UserError(f"model '{self.cfg.name}' has no chat template; pass plain prompts or set one")
        return self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=add_generation_prompt)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        # A rendered chat template already holds its special tokens (e.g. Llama 3's BOS): don't add them twice.
        return self.tok(self.render(prompt), add_special_tokens=isinstance(prompt, str)).input_ids

    # ---------- generation ----------
    def _processors(self, s: SamplingConfig, row_seeds: list[int] | None):
        """The logits processors transformers' generate applies for these settings, in its order (penalty, then
        temperature, top-k, top-p); with row seeds, RowGumbel last (the argmax then samples)."""
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )
        procs = LogitsProcessorList()
        if s.repetition_penalty != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(s.repetition_penalty))
        if s.temperature > 0:
            procs.append(TemperatureLogitsWarper(s.temperature))
            if s.top_k:
                procs.append(TopKLogitsWarper(s.top_k))
            if s.top_p < 1.0:
                procs.append(TopPLogitsWarper(s.top_p))
            if row_seeds is not None:
                procs.append(RowGumbel(row_seeds))
        return procs

    def _gen_kwargs(self, s: SamplingConfig, n: int, row_seeds: list[int] | None = None) -> dict:
        kw = dict(max_new_tokens=s.max_new_tokens, num_return_sequences=n, pad_token_id=self.tok.pad_token_id,
                  repetition_penalty=s.repetition_penalty)
        if s.temperature > 0 and row_seeds is not None:
            # per-row seeds: the same filters as sampling, then argmax over scores + Gumbel noise from the row's own
            # generator (an exact draw from the filtered distribution), so greedy search does the sampling
            procs = self._processors(s.model_copy(update={"repetition_penalty": 1.0}), row_seeds)  # generate adds it
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=procs)
        elif s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0)
        else:
            # explicit: a model's generation_config may ask for sampling by default
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.tok)
        return kw

    # A prefix at least this long, common to consecutive prompts (medprompt's members: same few-shot examples, options
    # in another order) or to the n samples of one prompt, is run once and its KV cache shared by all their rows.
    SHARED_PREFIX_MIN = 64

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        torch = self._torch
        s = sampling or SamplingConfig()
        encoded = [self.encode_prompt(p) for p in prompts]
        seeds = prompt_seeds(s, len(encoded))
        if s.temperature <= 0:
            seeds = None  # greedy: nothing to seed
        out: list[list[Completion] | None] = [None] * len(encoded)
        torch.manual_seed(s.seed)
        eos = set(self._eos_ids())
        shared, plain = [], []
        for idx, p in self._prefix_groups(encoded):
            if p >= self.SHARED_PREFIX_MIN and len(idx) * n > 1 and not self.loop_unsupported:
                shared.append((idx, p))
            else:
                plain += idx
        order = sorted(plain, key=lambda i: -len(encoded[i]))  # less padding per batch
        for start in range(0, len(order), self.cfg.batch_size):
            idx = order[start:start + self.cfg.batch_size]
            if seeds is None:
                batch = self._left_pad([encoded[i] for i in idx])
                kw = self._gen_kwargs(s, n)
            else:  # greedy search returns one sequence per row: the n rows of a prompt are explicit
                batch = self._left_pad([encoded[i] for i in idx for _ in range(n)])
                kw = self._gen_kwargs(s, 1, [seeds[i] + k for i in idx for k in range(n)])
            with torch.inference_mode():
                gen = self.model.generate(**batch, **kw)
            new = gen[:, batch["input_ids"].shape[1]:].tolist()
            for j, i in enumerate(idx):
                out[i] = [self._completion(new[j * n + k], len(encoded[i]), eos, s) for k in range(n)]
        # groups of at most batch_size prompts (a long run of prompts behind one jailbreak template must not become
        # one huge batch), as many per forward as fit in batch_size prompts (x n rows)
        bs = self.cfg.batch_size
        chunk: list[tuple[list[int], int]] = []
        for g in ((idx[k:k + bs], p) for idx, p in shared for k in range(0, len(idx), bs)):
            if chunk and sum(len(x[0]) for x in chunk) + len(g[0]) > bs:
                self._generate_shared(chunk, encoded, s, n, eos, out, seeds)
                chunk = []
            chunk.append(g)
        if chunk:
            self._generate_shared(chunk, encoded, s, n, eos, out, seeds)
        return out  # type: ignore[return-value]

    def _prefix_groups(self, encoded: list[list[int]]) -> list[tuple[list[int], int]]:
        """Consecutive prompts with a common token prefix of at least SHARED_PREFIX_MIN: (indices, prefix length).
        Each prompt keeps at least one token outside the prefix, to be fed to generate."""
        groups: list[tuple[list[int], int]] = []
        for i, ids in enumerate(encoded):
            if groups:
                idx, p = groups[-1]
                first = encoded[idx[0]]
                common = 0
                limit = min(p, len(ids) - 1)
                while common < limit and first[common] == ids[common]:
                    common += 1
                if common >= self.SHARED_PREFIX_MIN:
                    groups[-1] = (idx + [i], common)
                    continue
            groups.append(([i], len(ids) - 1))
        return groups

    def _generate_shared(self, chunk: list[tuple[list[int], int]], encoded: list[list[int]], s: SamplingConfig,
                         n: int, eos: set[int], out: list, seeds: list[int] | None = None) -> None:
        """One forward over the groups' prefixes (left-padded), its KV cache copied to each row of its group, then
        generation over [prefix | padding | the row's own suffix]. Position ids follow the attention mask, so the
        padding inside a row shifts nothing."""
        torch = self._torch
        from transformers import DynamicCache
        pad = self.tok.pad_token_id
        P = max(p for _, p in chunk)
        pre = [[pad] * (P - p) + encoded[idx[0]][:p] for idx, p in chunk]
        pre_mask = torch.tensor([[0] * (P - p) + [1] * p for _, p in chunk], device=self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            self.model(input_ids=torch.tensor(pre, device=self.device), attention_mask=pre_mask,
                       position_ids=(pre_mask.cumsum(-1) - 1).clamp(min=0), cache=cache, use_cache=True)
        rows = [(g, i, k) for g, (idx, _) in enumerate(chunk) for i in idx for k in range(n)]
        cache.reorder_cache(torch.tensor([g for g, _, _ in rows], device=self.device))
        S = max(len(encoded[i]) - chunk[g][1] for g, i, _ in rows)
        ids, mask = [], []
        for g, i, _ in rows:
            p = chunk[g][1]
            suffix = encoded[i][p:]
            ids.append(pre[g] + [pad] * (S - len(suffix)) + suffix)
            mask.append([0] * (P - p) + [1] * p + [0] * (S - len(suffix)) + [1] * len(suffix))
        ids_t = torch.tensor(ids, device=self.device)
        mask_t = torch.tensor(mask, device=self.device)
        row_seeds = [seeds[i] + k for _, i, k in rows] if seeds else None
        if s.stop:  # stop strings: transformers' own criteria
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids_t, attention_mask=mask_t, cache=cache,
                                          **self._gen_kwargs(s, 1, row_seeds))
            new = gen[:, ids_t.shape[1]:].tolist()
        else:
            new = self._decode(ids_t, mask_t, cache, P, s, row_seeds, eos)
        for r, (_, i, _) in enumerate(rows):
            if r % n == 0:
                out[i] = []
            out[i].append(self._completion(new[r], len(encoded[i]), eos, s))

    def _decode(self, ids, mask, cache, cached: int, s: SamplingConfig, row_seeds: list[int] | None,
                eos: set[int]) -> list[list[int]]:
        """Generation from a cache that holds the first `cached` positions of every row: the loop of transformers'
        generate (same logits processors, greedy or sampled the same way), except that a finished row leaves the
        batch (its cache rows are dropped), so a long chain does not keep the batch's short ones running."""
        torch = self._torch
        procs = self._processors(s, row_seeds)
        sample = s.temperature > 0 and row_seeds is None
        out: list[list[int]] = [[] for _ in range(ids.shape[0])]
        alive = torch.arange(ids.shape[0], device=self.device)
        seq = ids
        step_ids = ids[:, cached:]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, cached:]
        eos_t = torch.tensor(sorted(eos), device=self.device)
        with torch.inference_mode():
            for _ in range(s.max_new_tokens):
                logits = self.model(input_ids=step_ids, attention_mask=mask, position_ids=positions, cache=cache,
                                    use_cache=True, logits_to_keep=1).logits[:, -1].float()
                scores = procs(seq, logits)
                if sample:
                    nxt = torch.multinomial(torch.softmax(scores, dim=-1), 1).squeeze(1)
                else:  # greedy, or sampling through RowGumbel's noise
                    nxt = scores.argmax(-1)
                for r, t in zip(alive.tolist(), nxt.tolist()):
                    out[r].append(t)
                keep = ~torch.isin(nxt, eos_t)
                seq = torch.cat([seq, nxt[:, None]], 1)
                mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
                if not keep.all():
                    if not keep.any():
                        break
                    idx = keep.nonzero().squeeze(1)
                    cache.batch_select_indices(idx)
                    seq, mask, nxt, alive = seq[idx], mask[idx], nxt[idx], alive[idx]
                    for proc in procs:
                        if isinstance(proc, RowGumbel):
                            proc.select(idx.tolist())
                step_ids = nxt[:, None]
                positions = mask.sum(-1, keepdim=True) - 1
        return out

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
        """lm-eval's tokens for a scored pair (base.lm_eval_pair: its BOS policy, its split), the context
        left-truncated to fit max_length."""
        ctx, cont = lm_eval_pair(self.tok, context, continuation, self.cfg.add_bos_token, self._prefix_text)
        if not cont:
            raise UserError(f"empty continuation after context {context[-40:]!r}: nothing to score")
        room = self.max_length - len(cont)
        return ctx[-room:], cont

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """A request's context is run once, packed in one row with all of its continuations (each continuation
        sees the context and itself only); the LM head is applied only where a continuation token is predicted."""
        # one packed row per request: the context tokens can differ per option (the tokenizer split), so options
        # are grouped by their exact context tokens; a row is cut before it exceeds ROW_TOKENS (a request with
        # many long options, or CrowS-Pairs' empty contexts, must not build one huge row)
        groups: dict[tuple, list[tuple[list[tuple[int, int]], list[int]]]] = {}
        for r, (context, conts) in enumerate(requests):
            by_ctx: dict[tuple[int, ...], dict[tuple[int, ...], list[tuple[int, int]]]] = {}
            for c, cont in enumerate(conts):
                ctx, cont_ids = self.encode_pair(context, cont)
                # a repeated option is scored once: identical options then tie exactly, as in lm-eval
                by_ctx.setdefault(tuple(ctx), {}).setdefault(tuple(cont_ids), []).append((r, c))
            for ctx, uniq in by_ctx.items():
                part, size = 0, len(ctx)
                for cont_ids, dests in uniq.items():
                    if size + len(cont_ids) - 1 > self.ROW_TOKENS and size > len(ctx):
                        part, size = part + 1, len(ctx)
                    groups.setdefault((r, part, ctx), []).append((dests, list(cont_ids)))
                    size += len(cont_ids) - 1
        result = [[0.0] * len(conts) for _, conts in requests]
        # Longest rows first, batch_size rows per forward. The linear layers (most of the work) see only the rows'
        # real tokens, flattened; attention runs per row on a padded layout whose width depends on the row alone.
        # Neither depends on a row's neighbours (CPU GEMM rows are exact from 16 rows on), so results do not change
        # with the batch size.
        packed = {k: len(k[2]) + sum(len(x[1]) - 1 for x in groups[k]) for k in groups}
        keys = sorted(groups, key=lambda k: (-packed[k], k))
        for s in range(0, len(keys), self.cfg.batch_size):
            chunk = keys[s:s + self.cfg.batch_size]
            scores = self._score_groups([(list(k[2]), [x[1] for x in groups[k]]) for k in chunk])
            for dests, lp in zip((dests for k in chunk for dests, _ in groups[k]), scores):
                for r, c in dests:
                    result[r][c] = lp
        return result

    PACK_WIDTH = 16
    ROW_TOKENS = 1024

    def _score_groups(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[float]:
        window = getattr(self.model.config, "sliding_window", None)
        # the plan's masks know no sliding window: a sequence (context + option) longer than it is scored unpacked;
        # decided before any of the plan is built
        if not self.packed_scoring or (window and max(len(ctx) + len(c) - 1 for ctx, conts in groups
                                                      for c in conts) > window):
            return self._score_unpacked(groups)
        return self._score_packed(groups)

    def _score_unpacked(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[float]:
        """The plain way, one right-padded row per (context, continuation) through the model's own attention: the
        fallback where packing cannot be trusted. Same order of scores as `_score_packed`."""
        torch = self._torch
        rows = [(ctx, cont) for ctx, conts in groups for cont in conts]
        scores: list[float] = []
        for s in range(0, len(rows), self.cfg.batch_size):
            part = rows[s:s + self.cfg.batch_size]
            seqs = [ctx + cont[:-1] for ctx, cont in part]
            width = max(len(q) for q in seqs)
            ids = torch.tensor([q + [self.tok.pad_token_id] * (width - len(q)) for q in seqs], device=self.device)
            mask = torch.tensor([[1] * len(q) + [0] * (width - len(q)) for q in seqs], device=self.device)
            with torch.inference_mode():
                logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for r, (ctx, cont) in enumerate(part):
                at = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=self.device)
                tok = torch.tensor(cont, device=self.device)
                scores.append(float(logp[r, at, tok].double().sum()))
        return scores

    def _score_packed(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[float]:
        """One forward for a batch of (context, continuations): row = context + every continuation but its last
        token, each continuation attending to the context and to itself only, position ids restarting after the
        context for each continuation. The rows' tokens are concatenated with no padding; `packed_attention` puts
        them back into rows (padded to a multiple of PACK_WIDTH, at least 16) for attention only."""
        torch = self._torch
        rows, targets = [], []  # targets: (row, position predicting the token, token id, index of the score)
        k = 0
        for g, (ctx, conts) in enumerate(groups):
            ids, pos, seg = list(ctx), list(range(len(ctx))), [0] * len(ctx)
            for j, cont in enumerate(conts):
                start = len(ids)
                targets.append((g, len(ctx) - 1, cont[0], k))
                targets += [(g, start + i, t, k) for i, t in enumerate(cont[1:])]
                ids += cont[:-1]
                pos += range(len(ctx), len(ctx) + len(cont) - 1)
                seg += [j + 1] * (len(cont) - 1)
                k += 1
            rows.append((ids, pos, seg))
        offset = [0]
        for ids, _, _ in rows:
            offset.append(offset[-1] + len(ids))
        total = max(16, offset[-1])  # CPU GEMMs switch kernels (and rounding) below 16 rows
        flat_ids = [t for ids, _, _ in rows for t in ids] + [self.tok.pad_token_id] * (total - offset[-1])
        flat_pos = [p for _, pos, _ in rows for p in pos] + [0] * (total - offset[-1])
        plan = _Plan()  # per row width: (gather index [R, W], mask [R, 1, W, W], positions kept, their flat positions)
        by_width: dict[int, list[int]] = {}
        for g, (ids, _, _) in enumerate(rows):
            by_width.setdefault(max(16, -(-len(ids) // self.PACK_WIDTH) * self.PACK_WIDTH), []).append(g)
        for width, members in by_width.items():
            gather = torch.zeros((len(members), width), dtype=torch.long)
            seg_t = torch.full((len(members), width), -1, dtype=torch.long)  # -1 pad, 0 context, j continuation j
            src, dst = [], []
            for r, g in enumerate(members):
                n = len(rows[g][0])
                gather[r, :n] = torch.arange(offset[g], offset[g] + n)
                seg_t[r, :n] = torch.tensor(rows[g][2])
                src += range(r * width, r * width + n)
                dst += range(offset[g], offset[g] + n)
            q, kv = seg_t.unsqueeze(2), seg_t.unsqueeze(1)
            causal = torch.ones(width, width, dtype=torch.bool).tril()
            # padding attends to itself only, so no attention row is empty (NaN that 0-weights cannot cancel)
            visible = (kv == 0) | (kv == q)  # the context, or the query's own continuation
            mask = (causal & visible & (q >= 0) & (kv >= 0)) | torch.eye(width, dtype=torch.bool)
            plan.append((gather.to(self.device), mask.unsqueeze(1).to(self.device),
                         torch.tensor(src, device=self.device), torch.tensor(dst, device=self.device)))
        config = self.model.config
        before = config._attn_implementation
        config._attn_implementation = PACKED_ATTENTION
        try:
            with torch.inference_mode():
                hidden = self.model.get_decoder()(
                    input_ids=torch.tensor([flat_ids], device=self.device),
                    position_ids=torch.tensor([flat_pos], device=self.device), use_cache=False,
                    aloekit_packed=plan).last_hidden_state[0]
        finally:
            config._attn_implementation = before
        layers = getattr(config, "num_hidden_layers", None)
        if plan.calls == 0 or (layers and plan.calls != layers):
            # attention that bypasses transformers' attention interface (a custom modelling file, a hybrid with
            # recurrent layers) would have mixed the packed continuations: these scores are wrong, never return them
            self.packed_scoring = False
            from ..console import warn
            warn(f"{self.cfg.name}: the packed scorer's attention ran in {plan.calls} of {layers or '?'} layers "
                 "(this model's attention bypasses transformers' attention interface); scoring one row per option "
                 "instead (same numbers, slower)")
            return self._score_unpacked(groups)
        with torch.inference_mode():
            h = hidden[torch.tensor([offset[t[0]] + t[1] for t in targets], device=self.device)]
            # the same 16-row rule for the LM head: a row's logits do not depend on what else is scored with it
            h = torch.cat([h, h.new_zeros(-len(h) % 16, h.shape[1])])
            logits = self.model.get_output_embeddings()(h)[:len(targets)].float()
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            logp = torch.log_softmax(logits, dim=-1)
            tok = torch.tensor([t[2] for t in targets], device=self.device)
            picked = logp.gather(1, tok.unsqueeze(1)).squeeze(1).double()
            scores = torch.zeros(k, dtype=torch.float64, device=self.device)
            scores.index_add_(0, torch.tensor([t[3] for t in targets], device=self.device), picked)
        return scores.tolist()


# generation_config keys the decode loop reproduces: the EOS ids (any of them ends a row), the sampling settings
# (every call sets them from its SamplingConfig), and keys that change no token
LOOP_KEYS = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "transformers_version",
    "_from_model_config", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_length",
    "max_new_tokens", "num_return_sequences", "use_cache", "output_attentions", "output_hidden_states",
    "output_scores", "output_logits", "return_dict_in_generate", "cache_implementation", "cache_config",
    "compile_config", "disable_compile"})


def loop_unsupported(generation_config) -> list[str]:
    """The keys of a generation_config, set away from transformers' defaults, that generate() would turn into a
    logits processor or stopping criterion the decode loop does not apply (no_repeat_ngram_size, min_new_tokens,
    suppress_tokens, num_beams, ...)."""
    from transformers import GenerationConfig
    default = GenerationConfig().to_dict()
    return sorted(k for k, v in generation_config.to_dict().items() if k not in LOOP_KEYS and v != default.get(k))


class RowGumbel:
    """Logits processor: adds Gumbel noise drawn from one generator per row (seeded once, one vocabulary-sized draw
    per step, on the logits' device), so a row's sample depends on its seed and its own logits only, never on the
    batch."""

    def __init__(self, seeds: list[int]):
        self.seeds = [int(x) % 2**63 for x in seeds]
        self.gens: list | None = None

    def select(self, rows: list[int]) -> None:
        """Keep the generators of these rows only (finished rows left the batch)."""
        self.seeds = [self.seeds[r] for r in rows]
        if self.gens is not None:
            self.gens = [self.gens[r] for r in rows]

    def __call__(self, input_ids, scores):
        import torch
        if scores.shape[0] != len(self.seeds):
            raise RuntimeError(f"{scores.shape[0]} rows for {len(self.seeds)} seeds")
        if self.gens is None:
            self.gens = [torch.Generator(device=scores.device).manual_seed(x) for x in self.seeds]
        u = torch.stack([torch.rand(scores.shape[1], generator=g, device=scores.device) for g in self.gens])
        return scores.float() - torch.log(-torch.log(u))  # u = 0 gives -inf: that token is never drawn


PACKED_ATTENTION = "aloekit_packed"


class _Plan(list):
    """The packed rows' layout, one entry per row width; `calls` counts the attention layers that used it."""
    calls = 0


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """Attention for `_score_groups`' flattened batch: the tokens of all rows in one sequence (batch 1), put back
    into padded rows (`aloekit_packed`: one entry per row width) for transformers' own SDPA attention, then
    flattened again. Any other call (no plan) is plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    plan = kwargs.pop("aloekit_packed", None)
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    plan.calls += 1
    q0, k0, v0 = query[0], key[0], value[0]  # [heads, tokens, head_dim]
    out = query.new_zeros(q0.shape[1], q0.shape[0], q0.shape[2])  # [tokens, heads, head_dim]
    for gather, mask, src, dst in plan:
        o, _ = sdpa_attention_forward(module, q0[:, gather].transpose(0, 1), k0[:, gather].transpose(0, 1),
                                      v0[:, gather].transpose(0, 1), mask, dropout=0.0, scaling=scaling, **kwargs)
        out[dst] = o.reshape(-1, o.shape[2], o.shape[3])[src]  # o: [rows, width, heads, head_dim]
    return out.unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
