"""`aloekit serve` against the OpenAI server a CPU user would pick: llama-cpp-python's, on the same model.

Same model (the default model's packaged Q4_1 GGUF; aloekit serves its dequantized HF conversion in bf16), same
prompts (medical questions, each sent with the medical system prompt so that both servers read the same text), same
max_tokens, greedy, non-streaming, through HTTP from an async client. Generated tok/s = completion tokens (from each
response's usage) / wall time of the level; latency = per request. Both servers run side by side, idle when not
measured; each repeat measures both (alternating which goes first) at concurrency 1, 8 and 32.
Then a load run on aloekit: --load requests at concurrency 32, counting failures, with the server's RSS at start
and end.

Peer options: n_threads = n_threads_batch = the CPU count, n_batch 512, logits_all off (its server default computes
logits for every prompt token), interrupt_requests off (concurrent requests wait instead of being cut off).
llama-cpp-python's server runs one request at a time and reuses the previous prompt's KV cache for a shared prefix.

Run: .venv/bin/python benchmarks/serve.py [--repeats 3] [--max-tokens 64] [--load 1000] [--load-max-tokens 32]
(--quick: a smoke run of the script; needs the serve extra and llama-cpp-python with its server dependencies: pip install 'llama-cpp-python[server]')
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx  # the HTTP client the openai package itself uses
import psutil
from _common import REPO, write
from generation import QUESTIONS

from aloekit import models
from aloekit.prompts import MEDICAL_SYSTEM_PROMPT

MODEL = models.DEFAULT_MODEL
LEVELS = {1: 8, 8: 16, 32: 32}  # concurrency -> requests per measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, name: str, cmd: list[str], port: int):
        self.name, self.cmd, self.port = name, cmd, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{name}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} server did not start in {timeout} s")

    def rss_mb(self) -> float:
        p = psutil.Process(self.proc.pid)
        return round(sum(x.memory_info().rss for x in [p, *p.children(recursive=True)]) / 2**20, 1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def body(i: int, max_tokens: int) -> dict:
    return {"model": MODEL, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "system", "content": MEDICAL_SYSTEM_PROMPT},
                         {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}


async def measure(url: str, n: int, concurrency: int, max_tokens: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    lat, tokens, failed = [], 0, 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def one(i: int) -> None:
            nonlocal tokens, failed
            async with sem:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=body(i, max_tokens))
                    ok = r.status_code == 200
                    if ok:
                        tokens += r.json()["usage"]["completion_tokens"]
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t)
                else:
                    failed += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=20) if len(lat) > 1 else lat * 19
    return {"requests": n, "failed": failed, "tokens": tokens, "seconds": round(wall, 2),
            "tok_s": round(tokens / wall, 1), "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(q[18], 3) if lat else None}


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):g} [{min(xs):g}–{max(xs):g}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--load", type=int, default=1000, help="requests in the load run (0: skip it)")
    ap.add_argument("--load-max-tokens", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1 repeat, fewer requests, 64-request load")
    a = ap.parse_args()
    if a.quick:
        a.repeats, a.load = 1, 64
        LEVELS.update({1: 2, 8: 8, 32: 32})
    load_before = os.getloadavg()
    models.prepare(MODEL)
    gguf = str(models.gguf_path(MODEL))
    threads = str(os.cpu_count())
    port = free_port()
    ours = Server("aloekit", [sys.executable, "-m", "aloekit.cli", "-q", "serve", MODEL, "--port", str(port),
                              "--max-batch", "32", "--max-concurrent", "256"], port)
    peer_port = free_port()
    peer = Server("llama-cpp-python", [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--model_alias",
                                       MODEL, "--port", str(peer_port), "--host", "127.0.0.1", "--n_threads", threads,
                                       "--n_threads_batch", threads, "--n_batch", "512", "--n_ctx", "2048",
                                       "--logits_all", "false", "--interrupt_requests", "false", "--verbose",
                                       "false"], peer_port)
    servers = [ours, peer]
    try:
        for s in servers:
            s.wait()
            asyncio.run(measure(s.url, 2, 1, 8))  # warm-up
        runs: list[dict] = []
        for rep in range(a.repeats):
            for s in (servers if rep % 2 == 0 else servers[::-1]):
                for c, n in LEVELS.items():
                    m = asyncio.run(measure(s.url, n, c, a.max_tokens))
                    runs.append({"repeat": rep, "server": s.name, "concurrency": c, **m})
                    print(f"repeat {rep} {s.name:18s} c={c:<3d} {m}", flush=True)
        load = None
        if a.load:
            peer.stop()
            servers.remove(peer)
            rss0 = ours.rss_mb()
            m = asyncio.run(measure(ours.url, a.load, 32, a.load_max_tokens))
            load = {**m, "concurrency": 32, "max_tokens": a.load_max_tokens, "rss_start_mb": rss0,
                    "rss_end_mb": ours.rss_mb()}
            print(f"load {load}", flush=True)
    finally:
        for s in servers:
            s.stop()

    rows = []
    for c in LEVELS:
        def of(name, key, c=c):
            return [r[key] for r in runs if r["server"] == name and r["concurrency"] == c]
        ratio = [x / y for x, y in zip(of("aloekit", "tok_s"), of("llama-cpp-python", "tok_s"))]
        for name in ("aloekit", "llama-cpp-python"):
            rows.append({"server": name, "concurrency": c, "requests": LEVELS[c], "tok_s": of(name, "tok_s"),
                         "p50_s": of(name, "p50_s"), "p95_s": of(name, "p95_s"), "failed": sum(of(name, "failed")),
                         "tokens": of(name, "tokens"),
                         "vs_peer": [round(x, 2) for x in ratio] if name == "aloekit" else None})
    c8 = next(r for r in rows if r["server"] == "aloekit" and r["concurrency"] == 8)["vs_peer"]
    from _common import git_sha, machine
    md = ["# Serving throughput: aloekit serve vs llama-cpp-python's OpenAI server (SmolLM2-135M-Instruct, CPU)", "",
          f"git {git_sha()}, {machine()['date']}.", "",
          f"{os.cpu_count()} CPU cores; greedy, max_tokens={a.max_tokens}, non-streaming chat completions with the "
          f"medical system prompt; {a.repeats} paired repeats, median [min–max]. aloekit: hf backend, bf16, "
          "requests batched (--max-batch 32). Peer: llama-cpp-python server on the same model's Q4_1 GGUF, "
          f"n_threads={threads}, logits_all off. tok/s = generated tokens / wall time; latency per request.", "",
          "| server | concurrency | requests | generated tok/s | × peer | p50 s | p95 s | failed |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['server']} | {r['concurrency']} | {r['requests']} | {spread(r['tok_s'])} | "
                  f"{spread(r['vs_peer']) if r['vs_peer'] else '1'} | {spread(r['p50_s'])} | {spread(r['p95_s'])} | "
                  f"{r['failed']} |")
    goal = statistics.median(c8) >= 1.5
    md += ["", f"Goal ≥ 1.5× the peer's throughput at concurrency 8: **{'met' if goal else 'missed'}** "
               f"(median {statistics.median(c8):.2f}×)."]
    if load:
        md += ["", f"Load run (aloekit): {load['requests']} requests at concurrency 32, max_tokens={load['max_tokens']}:"
                   f" {load['failed']} failed, {load['seconds']} s, {load['tok_s']} generated tok/s, p50 "
                   f"{load['p50_s']} s, p95 {load['p95_s']} s; server RSS {load['rss_start_mb']} MB at start, "
                   f"{load['rss_end_mb']} MB at end."]
    load_after = os.getloadavg()
    md += ["", f"Machine load average (1 min) at start {load_before[0]:.2f}, at end {load_after[0]:.2f}: above 0.5 at "
               "start, other work shared the cores and the numbers are not clean."]
    payload = {"loadavg_start": load_before, "loadavg_end": load_after, "max_tokens": a.max_tokens, "repeats": a.repeats, "levels": LEVELS, "runs": runs, "rows": rows,
               "goal_c8_met": goal, "load": load}
    write("serve_quick" if a.quick else "serve", payload, "\n".join(md))


if __name__ == "__main__":
    main()
