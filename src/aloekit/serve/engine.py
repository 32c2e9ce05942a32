"""One worker thread owns the backend; concurrent requests are gathered into one `generate` call.

A CPU gets several times more tokens per second out of a batch than out of one sequence (benchmarks/results/
generation.md), and the backend is not safe to call from several threads at once, so the HTTP handlers never touch
it: they queue a Job and await its events. Each request carries its own seed (`SamplingConfig.seeds`), so what it
gets does not depend on the requests it was batched with.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..config import SamplingConfig


@dataclass
class Job:
    chat: list[dict]
    sampling: SamplingConfig
    n: int
    seed: int
    stream: bool
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    max_prompt_tokens: int
    cancelled: bool = False
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    batch_size: int = 0
    prompt_tokens: int = 0

    def emit(self, kind: str, payload: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, payload))
        except RuntimeError:  # the event loop is gone (server shut down): nobody is waiting
            pass


class PromptTooLong(Exception):
    def __init__(self, tokens: int, limit: int):
        super().__init__(f"the prompt has {tokens} tokens, over this server's limit of {limit}; shorten the "
                         "conversation")
        self.tokens, self.limit = tokens, limit


class Engine:
    def __init__(self, backend, max_batch: int = 32, window_s: float = 0.015):
        self.backend = backend
        self.max_batch = max_batch
        self.window_s = window_s
        self._q: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="aloekit-serve-engine", daemon=True)
        self.batches = 0
        self.busy = False

    # ---------- token counts ----------
    def count_tokens(self, item) -> int:
        """Exact with a backend that exposes its tokenizer (hf); else about 4 characters a token."""
        encode = getattr(self.backend, "encode_prompt", None)
        if encode is not None:
            return len(encode(item))
        text = item if isinstance(item, str) else "\n".join(m["content"] for m in item)
        return max(1, len(text) // 4)

    # ---------- lifecycle ----------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._q.put(job)

    def queued(self) -> int:
        return self._q.qsize()

    def stop(self, timeout: float | None = None) -> None:
        """Finish what is queued, then end the worker."""
        self._q.put(None)
        self._thread.join(timeout)

    # ---------- the worker ----------
    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        batch, stop = [first], False
        # Always wait the window for companions: concurrent clients send within a few milliseconds of each other, and
        # a request run alone makes the others wait a whole generation (measured: 8 clients split 1 + 7 got half the
        # throughput of one batch of 8), while a lone client pays only the window.
        deadline = time.monotonic() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self.busy = True
            try:
                self._process(batch)
            finally:
                self.busy = False
            if stop:
                return

    def _process(self, batch: list[Job]) -> None:
        live = []
        for job in batch:
            if job.cancelled:  # timed out or disconnected while queued: nothing to do
                continue
            try:
                job.prompt_tokens = self.count_tokens(job.chat)
            except Exception as e:  # noqa: BLE001 - e.g. a chat template that rejects the roles: that request only
                job.emit("error", e)
                continue
            if job.prompt_tokens > job.max_prompt_tokens:
                job.emit("error", PromptTooLong(job.prompt_tokens, job.max_prompt_tokens))
                continue
            live.append(job)
        if not live:
            return
        now = time.monotonic()
        for job in live:
            job.started_at, job.batch_size = now, len(live)
        self.batches += 1
        one = live[0]
        if len(live) == 1 and one.stream and one.n == 1 and one.sampling.temperature == 0 and not one.sampling.stop:
            self._stream(one)
            return
        groups: dict[tuple, list[Job]] = {}
        for job in live:
            s = job.sampling
            groups.setdefault((s.max_new_tokens, s.temperature, s.top_p, tuple(s.stop), job.n), []).append(job)
        for jobs in groups.values():
            sampling = jobs[0].sampling.model_copy(update={"seeds": [j.seed for j in jobs], "seed": jobs[0].seed})
            try:
                outs = self.backend.generate([j.chat for j in jobs], sampling, n=jobs[0].n)
            except Exception as e:  # noqa: BLE001 - a failed batch fails its requests, never the server
                for j in jobs:
                    j.emit("error", e)
                continue
            for j, completions in zip(jobs, outs):
                j.emit("done", completions)

    def _stream(self, job: Job) -> None:
        """Token by token, through the backend's streaming. Greedy and without stop strings only: a sampled answer
        streamed this way would not match the same seed's batched answer, and a stop string would be sent before
        it is recognised."""
        from ..backends import Completion
        pieces = []
        try:
            for piece in self.backend.stream_chat(job.chat, job.sampling):
                pieces.append(piece)
                if piece and not job.cancelled:
                    job.emit("delta", piece)
            # a client that left still costs the rest of its answer: stopping the backend's generation thread
            # midway would leave it running next to the next batch
        except Exception as e:  # noqa: BLE001
            job.emit("error", e)
            return
        text = "".join(pieces)
        try:
            n = self.count_tokens(text) if text else 0
        except Exception:  # noqa: BLE001 - the count is for usage only
            n = max(1, len(text) // 4)
        finish = "length" if n >= job.sampling.max_new_tokens else "stop"
        job.emit("done", [Completion(text=text, prompt_tokens=job.prompt_tokens, completion_tokens=n,
                                     finish_reason=finish)])
