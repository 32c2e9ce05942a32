"""Training speed on the real default model (SmolLM2-135M-Instruct, LoRA, CPU bf16).

1. SFT tokens/s with aloekit's default (BFD packing, padding-free) vs TRL's unpacked default, same rows, same
   model, same batch size. Tokens = non-padding tokens trained on (Trainer's num_input_tokens_seen).
2. DPO seconds/step with and without precomputed reference log-probs (precompute time reported apart).
Run: .venv/bin/python benchmarks/train_speed.py [--sft-steps 12] [--dpo-steps 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import data_dir, write

from aloekit.train import dpo, sft
from aloekit.train.config import DPOConfig, SFTConfig


def headqa_sft_rows(limit: int) -> list[dict]:
    """HeadQA train (the SFT pool, never an eval split): real, varied lengths."""
    exams = json.loads((data_dir() / "headqa_en" / "train_HEAD_EN.json").read_text())["exams"]
    rows = []
    for exam in exams.values():
        for q in exam["data"]:
            if q.get("image"):
                continue
            opts = "\n".join(f"{a['aid']}. {a['atext']}" for a in q["answers"])
            right = next(a for a in q["answers"] if str(a["aid"]) == str(q["ra"]))
            rows.append({"messages": [{"role": "user", "content": f"{q['qtext']}\n{opts}"},
                                      {"role": "assistant", "content": f"The answer is {right['aid']}. {right['atext']}"}]})
            if len(rows) >= limit:
                return rows
    return rows


def sft_speed(tmp: Path, steps: int, packing: bool, data: Path) -> dict:
    cfg = SFTConfig(dataset=str(data), output=str(tmp / f"sft_{'packed' if packing else 'unpacked'}"),
                    packing=packing, eval_fraction=0.0, max_length=512, save_steps=10_000, resume="never",
                    optim={"max_steps": steps, "batch_size": 8, "lr": 1e-4})
    m = sft.run(cfg)
    return {"packing": packing, "steps": m["steps"], "tokens": m["tokens_seen"], "seconds": m["train_seconds"],
            "tokens_per_s": m["tokens_per_s"]}


def dpo_speed(tmp: Path, steps: int, precompute: bool) -> dict:
    hh = data_dir() / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"
    cfg = DPOConfig(output=str(tmp / f"dpo_{precompute}"), precompute_ref_log_probs=precompute, max_length=256,
                    save_steps=10_000, resume="never",
                    stages=[{"name": "s", "dataset": str(hh), "max_pairs": steps * 4, "eval_fraction": 0.0,
                             "optim": {"max_steps": steps, "batch_size": 4}}])
    t = time.time()
    m = dpo.run(cfg)["stages"][0]
    total = time.time() - t
    return {"precompute_ref_log_probs": precompute, "steps": m["steps"], "seconds_per_step": m["seconds_per_step"],
            "stage_wall_s": round(total, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft-steps", type=int, default=12)
    ap.add_argument("--dpo-steps", type=int, default=4)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = tmp / "headqa_sft.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in headqa_sft_rows(800)))
        unpacked = sft_speed(tmp, a.sft_steps, False, data)
        packed = sft_speed(tmp, a.sft_steps, True, data)
        d_plain = dpo_speed(tmp, a.dpo_steps, False)
        d_pre = dpo_speed(tmp, a.dpo_steps, True)
    ratio = round(packed["tokens_per_s"] / unpacked["tokens_per_s"], 2)
    md = f"""# Training speed (SmolLM2-135M-Instruct, LoRA r=16 all-linear, CPU bf16 autocast)

## SFT: packing vs TRL's unpacked default (HeadQA train rows, batch 8, max_length 512, {a.sft_steps} steps)

| setup | tokens | s | tokens/s |
|---|---|---|---|
| TRL default (no packing, padded batches) | {unpacked['tokens']} | {unpacked['seconds']} | {unpacked['tokens_per_s']} |
| aloekit default (BFD packing, padding-free) | {packed['tokens']} | {packed['seconds']} | {packed['tokens_per_s']} |

**Packing speed-up: {ratio}×** (goal ≥ 1.5×).

## DPO: seconds/step (HH-RLHF harmless pairs, batch 4, max_length 256, full fine-tune, {a.dpo_steps} steps)

| reference log-probs | s/step | stage wall time (s, incl. load/precompute) |
|---|---|---|
| computed every step | {d_plain['seconds_per_step']} | {d_plain['stage_wall_s']} |
| precomputed once | {d_pre['seconds_per_step']} | {d_pre['stage_wall_s']} |
"""
    write("train_speed", {"sft": {"unpacked": unpacked, "packed": packed, "speedup": ratio},
                          "dpo": {"plain": d_plain, "precomputed": d_pre}}, md)


if __name__ == "__main__":
    main()
