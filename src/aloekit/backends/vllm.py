"""vLLM backend (extra `gpu`): paged attention, automatic prefix caching, n>1 sampling from one prompt
encoding. GPU-only: vLLM has no CPU wheel, so it is exercised only on a GPU machine; the tests run it against a
fake `vllm` module (tests/test_vllm_backend.py), so what reaches vLLM is checked, vLLM itself is not.

Engine settings come from `ModelConfig.vllm` (config.VLLMSettings) and go to `vllm.LLM(...)` by name; nothing
but vLLM's public API (`LLM`, `SamplingParams`, `LLM.generate`, `LLM.get_tokenizer`) is used.

Data parallelism (`data_parallel_size` N > 1) is N independent engines, each in its own process that sees only
its own tensor x pipeline GPUs (CUDA_VISIBLE_DEVICES), with every call's prompts split into N contiguous chunks
and the answers put back in input order. vLLM's own `data_parallel_size` is not used: the offline `LLM` class
refuses it (or hangs) outside an external launcher (vllm-project/vllm#27282), and its data-parallel example
drives one `LLM` per process through environment variables meant for MoE expert parallelism. For a dense model
independent engines compute the same thing without that coordination. Contiguous chunks keep consecutive
prompts that share a prefix (Medprompt's members of one question) on one engine, where prefix caching reuses it.

Determinism: every request carries a seed (the call's, or its own from `SamplingConfig.seeds`), and vLLM seeds
each request's sampler from it, so the sampling randomness a prompt gets does not depend on which engine, or which
batch, it ran in (the logits can still differ in the last bits with the batch, as on any GPU engine).
"""

from __future__ import annotations

import os
import traceback
import weakref
from typing import Any, Sequence

from ..config import ModelConfig, SamplingConfig, VLLMSettings
from ..errors import UserError
from ..extras import require
from .base import Backend, Completion, Prompt, lm_eval_pair, prompt_seeds

ENGINE_SEED = 0  # only requests without a seed use it, and every request here has one


def engine_kwargs(model: str, cfg: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` for one engine (data parallelism is ours, not vLLM's)."""
    v = cfg.vllm or VLLMSettings()
    kw: dict[str, Any] = {"model": model, "dtype": cfg.dtype, "seed": ENGINE_SEED,
                          "tensor_parallel_size": v.tensor_parallel_size,
                          "pipeline_parallel_size": v.pipeline_parallel_size,
                          "gpu_memory_utilization": v.gpu_memory_utilization,
                          "enable_prefix_caching": v.enable_prefix_caching}
    if v.max_model_len is not None:  # unset: vLLM takes the model's own context length
        kw["max_model_len"] = v.max_model_len
    return kw


def engine_devices(settings: VLLMSettings, visible: str | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each data-parallel engine: consecutive groups of tensor x pipeline GPUs out of
    the devices this process sees (all of them when CUDA_VISIBLE_DEVICES is unset)."""
    per = settings.tensor_parallel_size * settings.pipeline_parallel_size
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(settings.gpus)]
    if len(ids) < settings.gpus:
        raise UserError(f"model.vllm: data_parallel_size {settings.data_parallel_size} x tensor_parallel_size "
                        f"{settings.tensor_parallel_size} x pipeline_parallel_size {settings.pipeline_parallel_size} "
                        f"needs {settings.gpus} GPUs, but CUDA_VISIBLE_DEVICES lists {len(ids)} ({visible})")
    return [",".join(ids[i * per:(i + 1) * per]) for i in range(settings.data_parallel_size)]


def split_evenly(n: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, end) ranges covering range(n), sizes differing by at most one."""
    q, r = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        end = start + q + (1 if i < r else 0)
        bounds.append((start, end))
        start = end
    return bounds


class _Engine:
    """One vLLM engine in this process: the work of the backend on plain data (picklable in and out, so the
    same code serves a data-parallel engine in its own process)."""

    def __init__(self, kwargs: dict[str, Any], add_bos: bool | None = None):
        from vllm import LLM
        self.llm = LLM(**kwargs)
        self.tok = self.llm.get_tokenizer()
        self.add_bos = add_bos  # scoring's BOS policy (ModelConfig.add_bos_token)

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

    def generate(self, prompts: Sequence[Prompt], s: SamplingConfig, n: int) -> list[list[Completion]]:
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
                ctx, c = lm_eval_pair(self.tok, context, cont, self.add_bos)  # lm-eval's tokens, as on hf
                whole, n_ctx = ctx + c, len(ctx)
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


def _serve(conn, devices: str, kwargs: dict[str, Any], add_bos: bool | None) -> None:
    """A data-parallel engine's process: its GPUs are fixed before vLLM (and CUDA) is imported, then it answers
    (method, args) calls until the backend closes the pipe."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        engine = _Engine(kwargs, add_bos)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it with the engine's GPUs
        conn.send(("error", _describe(e)))
        return
    conn.send(("ok", None))
    while True:
        try:
            method, args = conn.recv()
        except EOFError:  # the backend closed, or its process died: nothing left to answer
            return
        if method == "stop":
            return
        try:
            conn.send(("ok", getattr(engine, method)(*args)))
        except BaseException as e:  # noqa: BLE001 - same as above; the engine keeps serving
            conn.send(("error", _describe(e)))


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}\n{''.join(traceback.format_exception(e))}"


class _EngineProcess:
    """A data-parallel engine in its own spawned process (fork would copy a parent's CUDA state and vLLM's
    threads); calls are sent, then answered, so several engines work at once."""

    def __init__(self, index: int, devices: str, kwargs: dict[str, Any], add_bos: bool | None = None):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.index, self.devices = index, devices
        self.conn, child = ctx.Pipe()
        # not a daemon: vLLM starts its own worker processes for tensor parallelism, which a daemon may not
        self.proc = ctx.Process(target=_serve, args=(child, devices, kwargs, add_bos), name=f"aloekit-vllm-dp{index}")
        self.proc.start()
        child.close()

    def send(self, method: str, *args) -> None:
        self.conn.send((method, args))

    def receive(self):
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"vllm engine {self.index} (GPUs {self.devices}) exited "
                               f"(exit code {self.proc.exitcode})") from None
        if status == "error":
            raise RuntimeError(f"vllm engine {self.index} (GPUs {self.devices}) failed: {value}")
        return value

    def close(self, timeout: float = 60.0) -> None:
        if self.proc.is_alive():
            try:
                self.send("stop")
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout)
            if self.proc.is_alive():
                self.proc.terminate()
                self.proc.join(10)
        self.conn.close()


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, cfg: ModelConfig | None = None, **engine_overrides):
        require("gpu", "vllm", what="the vllm backend")
        from ..models import resolve
        self.cfg = cfg or ModelConfig(backend="vllm")
        self.settings = self.cfg.vllm or VLLMSettings()
        kwargs = {**engine_kwargs(resolve(self.cfg.name), self.cfg), **engine_overrides}
        self.engines: list[Any] = []
        if self.settings.data_parallel_size == 1:
            self.engines = [_Engine(kwargs, self.cfg.add_bos_token)]
            return
        devices = engine_devices(self.settings, os.environ.get("CUDA_VISIBLE_DEVICES"))
        # stages drop a backend without closing it: its engines (and their GPU memory) go when it is collected,
        # or at exit
        self._finalizer = weakref.finalize(self, _close_all, self.engines)
        try:
            for i, d in enumerate(devices):  # all engines load at once; each reports when ready
                self.engines.append(_EngineProcess(i, d, kwargs, self.cfg.add_bos_token))
            for e in self.engines:
                e.receive()
        except BaseException:
            self.close()
            raise

    def _spread(self, method: str, n_items: int, args_of) -> list:
        """Run `method` over n_items split among the engines; `args_of(start, end)` gives a chunk's arguments.
        The results come back concatenated in input order."""
        if not self.engines:
            raise RuntimeError("the vllm backend was closed; load a new one")
        if not isinstance(self.engines[0], _EngineProcess):
            return getattr(self.engines[0], method)(*args_of(0, n_items))
        chunks = [(e, a, b) for e, (a, b) in zip(self.engines, split_evenly(n_items, len(self.engines))) if b > a]
        for e, a, b in chunks:
            e.send(method, *args_of(a, b))
        results, failure = [], None
        for e, _, _ in chunks:  # every engine's answer is read, even after one failed, so none is left mid-reply
            try:
                results.append(e.receive())
            except RuntimeError as err:
                failure = failure or err
        if failure is not None:
            raise failure
        return [x for r in results for x in r]

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | None = None,
                 n: int = 1) -> list[list[Completion]]:
        s = sampling or SamplingConfig()
        seeds = prompt_seeds(s, len(prompts))
        prompts = list(prompts)
        return self._spread("generate", len(prompts), lambda a, b: (
            prompts[a:b], s.model_copy(update={"seeds": seeds[a:b]}) if seeds else s, n))

    def loglikelihood_batch(self, requests: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        requests = list(requests)
        return self._spread("loglikelihood_batch", len(requests), lambda a, b: (requests[a:b],))

    def close(self) -> None:
        _close_all(self.engines)


def _close_all(engines: list) -> None:
    for e in engines:
        if isinstance(e, _EngineProcess):
            e.close()
    engines.clear()
