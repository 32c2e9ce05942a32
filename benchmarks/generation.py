"""Generation throughput of the hf backend against transformers' own batched `generate()`, and llama.cpp.

Peer: the strongest plain-transformers loop a user would write: `from_pretrained(dtype=...)`, the chat template,
left padding, and `model.generate` on the whole batch, at the same dtype and batch size as ours (bf16 and fp32,
batch 1 and 8). Same prompts, greedy, same max_new_tokens, in the same process, paired runs (ours, peer, ours,
peer ...); median and min-max. Batch 1 also gives the per-request latency. llama.cpp (Q4_1 GGUF through
llama-cpp-python) runs the same prompts one at a time, as its API does.

Run: .venv/bin/python benchmarks/generation.py [--prompts 16] [--max-new-tokens 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import torch
from _common import fmt, spread, write

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


def run_ours(be, chats, s, bs) -> dict:
    be.cfg.batch_size = bs
    lat, texts, n = [], [], 0
    t = time.perf_counter()
    for i in range(0, len(chats), bs):
        t0 = time.perf_counter()
        outs = be.generate(chats[i:i + bs], s)
        lat.append(time.perf_counter() - t0)
        n += sum(o[0].completion_tokens for o in outs)
        texts += [o[0].text for o in outs]
    return {"tokens": n, "seconds": time.perf_counter() - t, "batch_latency": lat, "texts": texts}


class Peer:
    """transformers by hand, the way its docs batch generation: left padding, one generate() per batch."""

    def __init__(self, path, dtype: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        e = self.model.generation_config.eos_token_id
        self.eos = set(e if isinstance(e, list) else [e]) | {self.tok.eos_token_id}

    def run(self, chats, max_new_tokens: int, bs: int) -> dict:
        lat, texts, n = [], [], 0
        t = time.perf_counter()
        for i in range(0, len(chats), bs):
            t0 = time.perf_counter()
            enc = self.tok.apply_chat_template(chats[i:i + bs], add_generation_prompt=True, return_tensors="pt",
                                               padding=True, return_dict=True)
            with torch.inference_mode():
                out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id)
            lat.append(time.perf_counter() - t0)
            for row in out[:, enc["input_ids"].shape[1]:].tolist():
                cut = next((k for k, t_ in enumerate(row) if t_ in self.eos), None)
                row = row[:cut + 1] if cut is not None else row
                n += len(row)
                texts.append(self.tok.decode(row, skip_special_tokens=True))
        return {"tokens": n, "seconds": time.perf_counter() - t, "batch_latency": lat, "texts": texts}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    chats = [[{"role": "user", "content": q}] for q in (QUESTIONS * 4)[:a.prompts]]
    s = SamplingConfig(max_new_tokens=a.max_new_tokens)
    path = models.prepare()
    rows = []
    for dtype in ("bfloat16", "float32"):
        be = load_backend(ModelConfig(dtype=dtype, batch_size=8))
        peer = Peer(path, dtype)
        be.generate(chats[:2], SamplingConfig(max_new_tokens=4))  # warm-up, both
        peer.run(chats[:2], 4, 2)
        for bs in (1, 8):
            res: dict[str, list[dict]] = {"ours": [], "peer": []}
            for _ in range(a.runs):
                res["ours"].append(run_ours(be, chats, s, bs))
                res["peer"].append(peer.run(chats, a.max_new_tokens, bs))
            row = {"dtype": dtype, "batch": bs}
            for name, rs in res.items():
                row[name] = {"tokens": rs[0]["tokens"],
                             "tok_s": spread([r["tokens"] / r["seconds"] for r in rs], 1),
                             "seconds": spread([r["seconds"] for r in rs])}
                if bs == 1:
                    row[name]["request_latency_s"] = spread([x for r in rs for x in r["batch_latency"]])
            row["ratio"] = spread([o["tokens"] / o["seconds"] / (p["tokens"] / p["seconds"])
                                   for o, p in zip(res["ours"], res["peer"])])
            row["same_text"] = sum(x == y for x, y in zip(res["ours"][0]["texts"], res["peer"][0]["texts"]))
            rows.append(row)
            print(dtype, bs, fmt(row["ratio"], "x"), flush=True)
        del be, peer
    llama = None
    if importlib.util.find_spec("llama_cpp"):
        be = load_backend(ModelConfig(backend="llamacpp"))
        be.generate(chats[:1], SamplingConfig(max_new_tokens=4))
        rs = [run_ours(be, chats, s, 1) for _ in range(a.runs)]
        llama = {"tokens": rs[0]["tokens"], "tok_s": spread([r["tokens"] / r["seconds"] for r in rs], 1),
                 "request_latency_s": spread([x for r in rs for x in r["batch_latency"]])}
    md = ["# Generation throughput (SmolLM2-135M-Instruct, CPU)", "",
          f"{a.prompts} medical chat prompts, greedy, max_new_tokens={a.max_new_tokens}; tokens = generated tokens "
          "up to and including EOS. Peer = transformers `generate()` on the same batch (left padding), same dtype "
          f"and batch size. {a.runs} paired runs (ours, peer, ...): median (min–max).", "",
          "| dtype | batch | aloekit tok/s | transformers generate() tok/s | × peer | same text | "
          "request latency s, ours / peer |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lat = (f"{fmt(r['ours']['request_latency_s'])} / {fmt(r['peer']['request_latency_s'])}"
               if r["batch"] == 1 else "–")
        md.append(f"| {r['dtype']} | {r['batch']} | {fmt(r['ours']['tok_s'])} | {fmt(r['peer']['tok_s'])} | "
                  f"**{fmt(r['ratio'], '×')}** | {r['same_text']}/{a.prompts} | {lat} |")
    md += ["", "Same text: prompts whose greedy answer is the same string in both (bf16 rounding differs between "
           "batch shapes and kernels, so bf16 answers may drift after a near-tie)."]
    if llama:
        md += ["", f"llama.cpp (Q4_1 GGUF via llama-cpp-python, one prompt at a time): {fmt(llama['tok_s'])} tok/s, "
               f"request latency {fmt(llama['request_latency_s'])} s (a 4-bit model: not the same weights)."]
    else:
        md += ["", "llama.cpp: llama-cpp-python not installed, not measured."]
    write("generation", {"prompts": a.prompts, "max_new_tokens": a.max_new_tokens, "runs": a.runs,
                         "peer": "transformers generate(), left padding, same dtype and batch size",
                         "rows": rows, "llamacpp": llama}, "\n".join(md))


if __name__ == "__main__":
    main()
