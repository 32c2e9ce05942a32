"""`aloekit-hf`: an lm-evaluation-harness 0.4 model answering lm-eval's requests with aloekit's hf backend.

- `loglikelihood`: the choices of a multiple-choice document go to the backend's packed scorer
  (`loglikelihood_batch`, one call for all of them, grouped by context: the context runs once, its choices packed
  behind it). Any other request is scored the way lm-eval's `hf` model scores it, one row per (context,
  continuation), which also says whether the continuation is the greedy one (`is_greedy`; lambada's `acc`): a
  document with one continuation (an `output_type: loglikelihood` task), a request whose tokens exceed
  `max_length` (lm-eval's left truncation), an empty context whose continuation starts with the prefix token, and
  every request when the backend does not tokenize scored text as lm-eval's `hf` does (checked at load on probe
  requests: e.g. a backend loaded by `aloekit eval` with another `add_bos_token`).
- `loglikelihood_rolling`: lm-eval's token windows (`get_rolling_token_windows`, context 1, `max_length`), each
  scored like that; a document's windows are summed.
- `generate_until`: the backend's `generate`, one call per distinct `generation_kwargs` (`until`, `max_gen_toks`,
  `do_sample`, `temperature`, `top_p`, `top_k`, `repetition_penalty`; any other key is an error).

Tokenization follows lm-eval's `hf` model (TemplateLM: trailing context spaces move to the continuation, context
and continuation tokenized together; the tokenizer's own special tokens unless `add_bos_token` says otherwise).
Multiple-choice requests get `is_greedy = False`: the packed scorer returns log-likelihoods only, so a
multiple-choice task's `exact_match` (webqs) is not valid with this model (docs/lm_eval.md).

lm-eval is an optional dependency: the class is built on first use (`model_class()`, or the module attribute
`AloekitLM`), so this module imports without it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from typing import Any

from ..backends import Backend, load_backend
from ..config import ModelConfig, SamplingConfig

log = logging.getLogger(__name__)

MODEL_ARGS = ("pretrained", "dtype", "batch_size", "device", "max_length", "add_bos_token", "seed")
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
# rows x width of one token-level forward: the full-vocabulary logits of this many positions are held at once
TOKEN_BUDGET = 8192
PART = 256  # contexts per call of the packed scorer (a progress bar step)


class _Methods:
    """Everything of AloekitLM but lm-eval's base class (TemplateLM), which `model_class()` adds."""

    tokenizer: Any
    backend = "causal"  # lm-eval's TemplateLM reads it: decoder-only tokenization

    def __init__(self, pretrained: str | None = None, dtype: str = "auto", batch_size: int | str = 8,
                 device: str | None = None, max_length: int | None = None, add_bos_token: bool | None = None,
                 seed: int = 0, max_batch_size: int | None = None, backend: Backend | None = None,
                 **unknown) -> None:
        super().__init__()
        if backend is not None and not isinstance(backend, Backend):  # a loaded backend object, never a model arg
            unknown["backend"] = backend
        if unknown:
            raise ValueError(f"aloekit-hf: unknown model argument(s) {', '.join(sorted(unknown))}; valid: "
                             f"{', '.join(MODEL_ARGS)}")
        if not pretrained:
            raise ValueError("aloekit-hf: model_args needs pretrained=<local folder, hub id or aloekit model name>")
        if isinstance(batch_size, str) and not batch_size.isdigit():
            raise ValueError(f"aloekit-hf: batch_size={batch_size!r} is not supported; give a number (aloekit's "
                             "scores do not depend on it)")
        import torch
        from pydantic import ValidationError
        from transformers import AutoTokenizer

        from ..models import resolve
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's CLI asks for cuda:0 by default; its hf model falls back the same way
        try:
            cfg = ModelConfig(name=str(pretrained), backend="hf", dtype=dtype, device=device or "auto",
                              batch_size=int(batch_size), add_bos_token=add_bos_token)
        except ValidationError as e:
            err = e.errors()[0]
            raise ValueError(f"aloekit-hf: model argument {'.'.join(map(str, err['loc']))}={err.get('input')!r}: "
                             f"{err['msg']}") from None
        self.cfg = cfg
        self.seed = int(seed)
        # `aloekit eval` passes the backend it has loaded: one copy of the model for its tasks and lm-eval's
        self.lm: Backend = backend if backend is not None else load_backend(cfg)
        # as lm-eval's hf model loads it (add_bos_token reaches the tokenizer too)
        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve(cfg.name), **({} if add_bos_token is None else {"add_bos_token": add_bos_token}))
        self.add_bos_token = add_bos_token
        self._max_length = int(max_length) if max_length else None
        model = self._causal_lm()
        self._device = next(model.parameters()).device
        probe = "Question: what is it?\nAnswer: yes"
        self.adds_special = self.tok_encode(probe) != self.tokenizer.encode(probe, add_special_tokens=False)
        # the packed scorer reproduces lm-eval's hf only where the backend tokenizes a request as lm-eval does (its
        # BOS policy, the empty context, a context that starts with the BOS text): checked, not assumed
        bos = self.tokenizer.decode([self.prefix_token_id])
        probes = [("Question: what is it?\nAnswer:", " yes"), ("", "yes"), (bos + "Q: x\nA:", " no")]
        encode_pair = getattr(self.lm, "encode_pair", None)
        self.packed_ok = encode_pair is not None and all(
            tuple(map(list, encode_pair(c, x))) == tuple(map(list, self._encode(c, x))) for c, x in probes)
        if not self.packed_ok:
            log.warning("aloekit-hf: the backend tokenizes scored text differently from lm-eval's hf model here "
                        "(add_bos_token=%s against the backend's %s); every loglikelihood request is scored "
                        "lm-eval's way (same numbers as --model hf, not faster)", add_bos_token,
                        getattr(getattr(self.lm, "cfg", None), "add_bos_token", None))
        self._warned_greedy = False

    # ---------- what lm-eval reads ----------
    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        """model_args win over the CLI's defaults (lm-eval passes batch_size=1 and device=cuda:0 when they are not
        given, which would otherwise clash with `--model_args batch_size=8`)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        from lm_eval.models.utils import resolve_max_length
        return resolve_max_length(self._causal_lm().config, self.tokenizer, default=2048)

    @property
    def max_gen_toks(self) -> int:
        return 256

    @property
    def batch_size(self) -> int:
        return self.cfg.batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """lm-eval's hf tokenization: the tokenizer's default special tokens (or add_bos_token), none added
        before a string that already starts with the prefix token."""
        if add_special_tokens is None:
            add_special_tokens = (False if string.startswith(self.tokenizer.decode(self.prefix_token_id))
                                  else self.add_bos_token)
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(string, **kw)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def get_model_info(self) -> dict:
        from .. import __version__
        model = self._causal_lm()
        return {"model_num_parameters": sum(p.numel() for p in model.parameters()),
                "model_dtype": str(next(model.parameters()).dtype), "aloekit_version": __version__,
                "aloekit_backend": self.lm.name, "aloekit_batch_size": self.batch_size}

    # ---------- loglikelihood ----------
    def _encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's (TemplateLM.loglikelihood) tokens for one request."""
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            return ([self.prefix_token_id], cont) if cont[:1] != [self.prefix_token_id] else (cont[:1], cont[1:])
        return self._encode_pair(context, continuation)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [r.args[:2] for r in requests]
        enc = [self._encode(c, x) for c, x in args]
        docs = Counter(_doc_key(r) for r in requests)
        limit = self.max_length
        packed = [i for i, r in enumerate(requests)
                  if self.packed_ok and docs[_doc_key(r)] > 1 and len(enc[i][0]) + len(enc[i][1]) <= limit
                  and (args[i][0] != "" or enc[i][0] == [self.prefix_token_id])]
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        if packed:
            by_ctx: dict[str, list[int]] = {}
            for i in packed:
                by_ctx.setdefault(args[i][0], []).append(i)
            groups = list(by_ctx.items())
            # in parts only for the progress bar: a request's score does not depend on what it is batched with
            with _bar(len(packed), "aloekit-hf: loglikelihood (packed)", disable_tqdm) as bar:
                for k in range(0, len(groups), PART):
                    part = groups[k:k + PART]
                    scores = self.lm.loglikelihood_batch([(c, [args[i][1] for i in idx]) for c, idx in part])
                    for (_, idx), sc in zip(part, scores):
                        for i, s in zip(idx, sc):
                            out[i] = (float(s), False)
                        bar.update(len(idx))
            if not self._warned_greedy:
                self._warned_greedy = True
                log.info("aloekit-hf: multiple-choice requests are scored by the packed scorer, which returns no "
                         "is_greedy (reported False): exact_match of a multiple-choice task is not valid")
        rest = [i for i in range(len(requests)) if out[i] is None]
        for i, res in zip(rest, self._score_tokens([enc[i] for i in rest], disable_tqdm)):
            out[i] = res
        for r, res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", r.args, res)
        return out  # type: ignore[return-value]

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """TemplateLM's token-level entry: ((context, continuation), context tokens, continuation tokens)."""
        return self._score_tokens([(ctx, cont) for _, ctx, cont in requests], disable_tqdm)

    def _score_tokens(self, items: list[tuple[list[int], list[int]]],
                      disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """lm-eval hf's token-level scoring: per item one row (context + continuation)[-(max_length + 1):][:-1],
        right-padded, the full forward of the model; log-probabilities of the continuation tokens and whether each is
        the argmax. Longest rows first, at most batch_size rows and TOKEN_BUDGET row tokens per forward."""
        import torch
        model = self._causal_lm()
        limit = self.max_length
        rows = []
        for ctx, cont in items:
            if not cont:
                raise ValueError("aloekit-hf: empty continuation: nothing to score")
            if len(cont) > limit:
                raise ValueError(f"aloekit-hf: continuation of {len(cont)} tokens exceeds max_length={limit}")
            rows.append(((ctx + cont)[-(limit + 1):][:-1], cont))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool] | None] = [None] * len(rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        start = 0
        bar = _bar(len(rows), "aloekit-hf: loglikelihood (lm-eval's way)", disable_tqdm)
        while start < len(order):
            width = len(rows[order[start]][0])
            n = max(1, min(self.batch_size, TOKEN_BUDGET // width))
            idx = order[start:start + n]
            start += n
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(rows[i][0])] = torch.tensor(rows[i][0])
            with torch.inference_mode():
                logits = model(input_ids=ids.to(self._device)).logits  # causal: right padding changes nothing
                for r, i in enumerate(idx):
                    inp, cont = rows[i]
                    lp = torch.log_softmax(logits[r, len(inp) - len(cont):len(inp)].float(), dim=-1)
                    tok = torch.tensor(cont, device=lp.device)
                    picked = lp.gather(1, tok[:, None]).squeeze(1).double()
                    out[i] = (float(picked.sum()), bool((lp.argmax(-1) == tok).all()))
            del logits
            bar.update(len(idx))
        bar.close()
        return out  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        windows, owner = [], []
        for k, r in enumerate(requests):
            for w in get_rolling_token_windows(token_list=self.tok_encode(r.args[0]), prefix_token=self.prefix_token_id,
                                               max_seq_len=self.max_length, context_len=1):
                windows.append(make_disjoint_window(w))
                owner.append(k)
        totals = [0.0] * len(requests)
        for k, (ll, _) in zip(owner, self._score_tokens(windows, disable_tqdm)):
            totals[k] += ll
        for r, t in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (r.args[0],), t)
        return totals

    # ---------- generation ----------
    def _sampling(self, gen_kwargs: dict, n_prompts: int) -> SamplingConfig:
        from lm_eval.models.utils import normalize_gen_kwargs
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS) - {"max_new_tokens", "max_tokens", "max_completion_tokens"})
        if unknown:
            raise ValueError(f"aloekit-hf: generation_kwargs {', '.join(unknown)} not supported; supported: "
                             f"{', '.join(GEN_KWARGS)}")
        kw = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        sample = bool(kw.get("do_sample")) and float(kw.get("temperature") or 0.0) > 0
        return SamplingConfig(max_new_tokens=kw["max_gen_toks"], temperature=float(kw["temperature"]) if sample else 0.0,
                              top_p=float(kw.get("top_p") or 1.0), top_k=int(kw.get("top_k") or 0),
                              repetition_penalty=float(kw.get("repetition_penalty") or 1.0),
                              stop=[s for s in kw["until"] if s], seed=self.seed,
                              seeds=[self.seed + i for i in range(n_prompts)] if sample else None)

    def _fit_prompts(self, contexts: list[str], max_new_tokens: int) -> list[str]:
        """lm-eval's hf left-truncates a prompt to max_length - max_gen_toks tokens; the backend takes text, so the
        kept tokens are decoded (the same text unless the cut falls inside a character)."""
        room = self.max_length - max_new_tokens
        if room <= 0:
            raise ValueError(f"aloekit-hf: max_gen_toks={max_new_tokens} leaves no room for the prompt within "
                             f"max_length={self.max_length}")
        out, cut = [], 0
        for context in contexts:
            ids = self.tok_encode(context)
            if len(ids) > room:
                context, cut = self.tokenizer.decode(ids[-room:]), cut + 1
            out.append(context)
        if cut:
            log.warning("aloekit-hf: %d of %d prompts left-truncated to their last %d tokens", cut, len(out), room)
        return out

    def _backend_prompt(self, prompt: str) -> str:
        """The backend encodes a prompt with the tokenizer's own special tokens; lm-eval's hf adds none before a
        prompt that starts with the BOS text (a chat template's): such a prompt loses it, the tokenizer puts it back."""
        bos = self.tokenizer.bos_token
        if self.adds_special and self.add_bos_token is None and bos and prompt.startswith(bos):
            return prompt[len(bos):]
        return prompt

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str | None] = [None] * len(requests)
        bar = _bar(len(requests), "aloekit-hf: generate_until", disable_tqdm)
        for idx in groups.values():
            s = self._sampling(dict(requests[idx[0]].args[1]), len(idx))
            prompts = [self._backend_prompt(p)
                       for p in self._fit_prompts([requests[i].args[0] for i in idx], s.max_new_tokens)]
            # in parts for the progress bar: greedy decoding is batch invariant, a sample depends on its prompt's seed
            step = self.batch_size * 4
            for k in range(0, len(idx), step):
                part = s.model_copy(update={"seeds": s.seeds[k:k + step]}) if s.seeds else s
                for i, completions in zip(idx[k:k + step], self.lm.generate(prompts[k:k + step], part)):
                    out[i] = completions[0].text
                    self.cache_hook.add_partial("generate_until", requests[i].args, out[i])
                bar.update(len(idx[k:k + step]))
        bar.close()
        return out  # type: ignore[return-value]

    # ---------- the model ----------
    def _causal_lm(self):
        """The backend's transformers model, for lm-eval's token-level requests (rolling windows, is_greedy): the
        backend protocol scores text pairs only."""
        model = getattr(self.lm, "model", None)
        if model is None:
            raise ValueError(f"aloekit-hf needs a local transformers model; backend '{self.lm.name}' has none")
        return model


def _bar(total: int, desc: str, disable: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, disable=disable or total == 0)


def _doc_key(request) -> tuple:
    """Requests of one document (a multiple-choice question's choices); a request without document: its context."""
    if getattr(request, "doc_id", None) is None:
        return ("context", request.args[0])
    return (request.task_name, request.doc_id)


@functools.cache
def model_class() -> type:
    """AloekitLM: _Methods on lm-eval's TemplateLM (needs lm-eval, so built on first use)."""
    from lm_eval.api.model import TemplateLM
    return type("AloekitLM", (_Methods, TemplateLM), {"__module__": __name__, "__doc__": __doc__})


def __getattr__(name: str):
    if name == "AloekitLM":  # the registry's lazy target "aloekit.lmeval.model:AloekitLM"
        return model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
