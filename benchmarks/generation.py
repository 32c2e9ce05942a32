"""Generation throughput of the hf backend (bf16/fp32, batch 1/8) against plain transformers, and llama.cpp.

Peer: what a user writes by hand with transformers — `from_pretrained` (fp32 default) and `model.generate` one
prompt at a time. Same prompts, greedy, same max_new_tokens, in the same process.
Run: .venv/bin/python benchmarks/generation.py [--prompts 16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from _common import write

from aloekit import models
from aloekit.backends import load_backend
from aloekit.config import ModelConfig, SamplingConfig

QUESTIONS = [
    "What are the first-line treatments for hypertension?", "What are common symptoms of type 2 diabetes?",
    "How is asthma diagnosed?", "What causes iron-deficiency anaemia?", "When should a fever be treated?",
    "What is the difference between a heart attack and cardiac arrest?", "How does metformin work?",
    "What are the warning signs of a stroke?", "How is a urinary tract infection treated?",
    "What lifestyle changes lower LDL cholesterol?", "What is sepsis?", "How do vaccines work?",
    "What are the side effects of statins?", "How is hypothyroidism treated?", "What is COPD?",
    "How can migraines be prevented?",
]


def run_backend(be, chats, s) -> tuple[int, float]:
    t = time.perf_counter()
    outs = be.generate(chats, s)
    return sum(o[0].completion_tokens for o in outs), time.perf_counter() - t


def run_peer(path, chats, max_new_tokens) -> tuple[int, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    n, t = 0, time.perf_counter()
    for c in chats:
        ids = tok.apply_chat_template(c, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        n += out.shape[1] - ids["input_ids"].shape[1]
    return n, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    chats = [[{"role": "user", "content": q}] for q in (QUESTIONS * 4)[:a.prompts]]
    s = SamplingConfig(max_new_tokens=a.max_new_tokens)
    path = models.prepare()
    rows = []
    n, dt = run_peer(path, chats, a.max_new_tokens)
    peer = n / dt
    rows.append({"engine": "transformers by hand (fp32, 1 prompt at a time)", "dtype": "float32", "batch": 1,
                 "tokens": n, "seconds": round(dt, 2), "tok_s": round(peer, 1)})
    for dtype in ("bfloat16", "float32"):
        be = load_backend(ModelConfig(dtype=dtype, batch_size=8))
        be.generate(chats[:2], SamplingConfig(max_new_tokens=4))  # warm-up
        for bs in (1, 8):
            be.cfg.batch_size = bs
            n, dt = run_backend(be, chats, s)
            rows.append({"engine": "aloekit hf", "dtype": dtype, "batch": bs, "tokens": n, "seconds": round(dt, 2),
                         "tok_s": round(n / dt, 1)})
        del be
    if importlib.util.find_spec("llama_cpp"):
        be = load_backend(ModelConfig(backend="llamacpp"))
        n, dt = run_backend(be, chats, s)
        rows.append({"engine": "aloekit llamacpp (Q4_1 GGUF)", "dtype": "q4_1", "batch": 1, "tokens": n,
                     "seconds": round(dt, 2), "tok_s": round(n / dt, 1)})
    else:
        rows.append({"engine": "aloekit llamacpp", "note": "llama-cpp-python not installed: not measured"})
    for r in rows:
        if "tok_s" in r:
            r["vs_peer"] = round(r["tok_s"] / peer, 2)
    md = ["# Generation throughput (SmolLM2-135M-Instruct, CPU)", "",
          f"{a.prompts} medical chat prompts, greedy, max_new_tokens={a.max_new_tokens}; tokens = generated tokens "
          "up to and including EOS. Peer = plain transformers, fp32 default, one prompt at a time.", "",
          "| engine | dtype | batch | tokens | s | tok/s | × peer |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "tok_s" in r:
            md.append(f"| {r['engine']} | {r['dtype']} | {r['batch']} | {r['tokens']} | {r['seconds']} | "
                      f"{r['tok_s']} | {r['vs_peer']} |")
        else:
            md.append(f"| {r['engine']} | – | – | – | – | {r['note']} | – |")
    write("generation", {"prompts": a.prompts, "max_new_tokens": a.max_new_tokens, "rows": rows}, "\n".join(md))


if __name__ == "__main__":
    main()
