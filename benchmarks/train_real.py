"""The training stages on the real default model (SmolLM2-135M-Instruct, CPU), end to end:

1. `aloekit data build configs/data_demo.yaml` (the bundled demo corpus) -> SFT (LoRA, packing): validation
   loss before/after; the saved model loads and answers.
2. DPO stage 1 on HH-RLHF harmless pairs (train/held-out split of the shared test file): held-out reward
   accuracy and margin after training; stage 2 on the demo corpus's preference pairs at a lower lr, chained.
Run: .venv/bin/python benchmarks/train_real.py [--pairs 160]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, data_dir, write

from aloekit.backends import load_backend
from aloekit.config import SamplingConfig
from aloekit.train import dpo, sft
from aloekit.train.config import DPOConfig, SFTConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the run folders here instead of a temp dir.")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = a.keep or Path(t)
        t0 = time.time()
        if not (tmp / "data" / "manifest.json").is_file() or '"done"' not in (tmp / "data" / "manifest.json").read_text():
            subprocess.run([sys.executable, "-m", "aloekit.cli", "-q", "data", "build",
                            str(REPO / "configs/data_demo.yaml"), "-o", str(tmp / "data")], check=True)
        data_s = time.time() - t0
        s = sft.run(SFTConfig(dataset=str(tmp / "data"), output=str(tmp / "sft"), max_length=512, save_steps=1000,
                              optim={"lr": 2e-4, "epochs": a.sft_epochs, "batch_size": 4}))
        be = load_backend(name=str(tmp / "sft" / "model"))
        answer = be.generate([[{"role": "user", "content": "What is the first-line drug for type 2 diabetes?"}]],
                             SamplingConfig(max_new_tokens=40))[0][0].text
        del be
        hh = data_dir() / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"
        d = dpo.run(DPOConfig(model=str(tmp / "sft" / "model"), output=str(tmp / "dpo"), max_length=256,
                              save_steps=1000, stages=[
                                  {"name": "hh_harmless", "dataset": str(hh), "max_pairs": a.pairs,
                                   "eval_fraction": 0.2, "beta": 0.1, "optim": {"lr": 5e-6, "batch_size": 4}},
                                  {"name": "demo_safety", "dataset": str(tmp / "data"), "beta": 0.1,
                                   "optim": {"lr": 1e-6, "batch_size": 4}}]))
    s1, s2 = d["stages"]
    md = f"""# Training on the real default model (SmolLM2-135M-Instruct, CPU)

## SFT (LoRA r=16 all-linear, packing, bf16 autocast) on the demo data built by the data pipeline

| rows train / validation | steps | tokens | tokens/s | validation loss before | after |
|---|---|---|---|---|---|
| {s['train_rows']} / {s.get('validation_rows')} | {s['steps']} | {s['tokens_seen']} | {s['tokens_per_s']} | {s.get('eval_loss_before', float('nan')):.4f} | {s.get('eval_loss_after', float('nan')):.4f} |

The saved (LoRA-merged) model loads and answers: "{answer.strip()[:200]}"

## DPO, two chained stages (full fine-tune)

| stage | pairs train / held-out | steps | s/step | held-out reward accuracy before → after | held-out margin after |
|---|---|---|---|---|---|
| 1 {s1['stage']} (lr 5e-6) | {s1['pairs']} / {s1.get('validation_pairs')} | {s1['steps']} | {s1['seconds_per_step']} | {s1['before'].get('rewards/accuracies')} → {s1['after'].get('rewards/accuracies'):.3f} | {s1['after'].get('rewards/margins'):.4f} |
| 2 {s2['stage']} (lr 1e-6, policy = stage 1) | {s2['pairs']} / {s2.get('validation_pairs')} | {s2['steps']} | {s2['seconds_per_step']} | {s2.get('before', {}).get('rewards/accuracies')} → {s2.get('after', {}).get('rewards/accuracies')} | {s2.get('after', {}).get('rewards/margins')} |

Before a stage the policy equals its reference, so "before" accuracy/margins only reflect bf16 rounding noise
between the two forward passes (margins ~1e-2); compare held-out loss and margin rather than accuracy there.
"""
    write("train_real", {"sft": s, "dpo": d, "sft_answer": answer, "data_build_s": round(data_s, 1)}, md)


if __name__ == "__main__":
    main()
