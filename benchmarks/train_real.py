"""The training stages on the real default model (SmolLM2-135M-Instruct, CPU), end to end:

1. `aloekit data build configs/data_demo.yaml` (the bundled demo corpus) -> SFT (LoRA, packing): validation
   loss before/after; the saved model loads and answers.
2. DPO stage 1 on HH-RLHF harmless pairs (train/held-out split of the shared test file): held-out reward
   accuracy and margin after training; stage 2 on the demo corpus's preference pairs at a lower lr, chained.
Run: .venv/bin/python benchmarks/train_real.py [--pairs 160]

3. `--hh-dpo`: a bigger DPO experiment on HH-RLHF harmless pairs alone (results in train_real_hh_dpo.*). The shared
   file is shuffled (seed) and cut into train / dev / held-out pairs that never overlap; each lr is trained on the
   train pairs and scored on dev, the lr with the best dev reward accuracy (ties: margin) is the one reported on the
   held-out pairs, which play no part in the choice. Only pairs whose chat-rendered prompt+answer fit max_length
   are used, so truncation never cuts an answer away (the filter is the same for every split).
   Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_real.py --hh-dpo [--train-pairs 160] [--lrs 2e-4 5e-4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, data_dir, write

from aloekit.backends import load_backend
from aloekit.config import SamplingConfig
from aloekit.train import dpo, sft
from aloekit.train.common import load_tokenizer
from aloekit.train.config import DPOConfig, SFTConfig


def hh_splits(tok, max_length: int, n_train: int, n_dev: int, n_held: int, seed: int) -> dict[str, list[dict]]:
    """Disjoint train/dev/held-out preference rows (prompt/chosen/rejected conversations) that fit max_length."""
    import random

    from aloekit.train.data import _load_any, to_preference
    ds = to_preference(_load_any(data_dir() / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"), "hh")
    rows = list(ds)
    random.Random(seed).shuffle(rows)
    def n_tokens(msgs: list[dict]) -> int:
        return len(tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"])
    fit = [r for r in rows if max(n_tokens(r["prompt"] + r[k]) for k in ("chosen", "rejected")) <= max_length]
    need = n_train + n_dev + n_held
    if len(fit) < need:
        raise SystemExit(f"only {len(fit)} of {len(rows)} pairs fit max_length {max_length}; need {need}")
    return {"held_out": fit[:n_held], "dev": fit[n_held:n_held + n_dev], "train": fit[n_held + n_dev:need],
            "_fit": len(fit), "_all": len(rows)}


def dpo_scores(policy: str, ref: str, rows_file: Path, beta: float, max_length: int, out: Path) -> dict:
    """TRL's own held-out DPO metrics (reward accuracy, margins, loss) of `policy` against the frozen `ref`.
    fp32: TRL autocasts the policy but not a separately loaded reference, and that mismatch alone gives nonzero
    rewards (seen: margin 0.004, accuracy 0.75 on 8 pairs with policy == reference under bf16)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    from aloekit.train.data import _load_any
    tok = load_tokenizer(ref, DPOConfig(stages=[{"name": "x", "dataset": "x"}]))
    rows = _load_any(rows_file)
    args = TrlDPOConfig(output_dir=str(out), beta=beta, max_length=max_length, per_device_eval_batch_size=8,
                        report_to="none", use_cpu=True, bf16=False)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32),
                         ref_model=AutoModelForCausalLM.from_pretrained(ref, dtype=torch.float32), args=args,
                         train_dataset=rows, eval_dataset=rows, processing_class=tok)
    m = trainer.evaluate()
    return {k.replace("eval_", ""): round(float(v), 4) for k, v in m.items()
            if k in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen",
                     "eval_rewards/rejected", "eval_logps/chosen", "eval_logps/rejected")}


def hh_dpo(a) -> None:
    import torch
    torch.set_num_threads(1)  # the machine is shared: one core, and say the load next to every time
    from aloekit.models import resolve
    base = str(resolve(DPOConfig(stages=[{"name": "x", "dataset": "x"}]).model))
    tok = load_tokenizer(base, DPOConfig(stages=[{"name": "x", "dataset": "x"}]))
    sp = hh_splits(tok, a.max_length, a.train_pairs, a.dev_pairs, a.held_pairs, a.seed)
    tmp = a.keep or Path(tempfile.mkdtemp(prefix="hh_dpo_"))
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    for k in ("train", "dev", "held_out"):
        files[k] = tmp / f"{k}.jsonl"
        files[k].write_text("".join(json.dumps(r) + "\n" for r in sp[k]))
    runs = []
    for lr in a.lrs:
        t = time.time()
        cfg = DPOConfig(output=str(tmp / f"lr{lr:g}"), method=a.method, max_length=a.max_length, save_steps=10_000,
                        resume="never", seed=a.seed, logging_steps=10,
                        stages=[{"name": "hh", "dataset": str(files["train"]), "eval_dataset": str(files["dev"]),
                                 "beta": a.beta, "optim": {"lr": lr, "batch_size": 4, "epochs": 1.0}}])
        st = dpo.run(cfg)["stages"][0]
        runs.append({"lr": lr, "steps": st["steps"], "seconds_per_step": st["seconds_per_step"],
                     "wall_s": round(time.time() - t, 1), "load_avg_1m_end": round(os.getloadavg()[0], 2),
                     "dev_before": st["before"], "dev_after": st["after"], "model": st["model"]})
        print(json.dumps(runs[-1]), flush=True)
    best = max(runs, key=lambda r: (r["dev_after"].get("rewards/accuracies", 0), r["dev_after"].get("rewards/margins", 0)))
    t = time.time()
    held_before = dpo_scores(base, base, files["held_out"], a.beta, a.max_length, tmp / "eval_before")
    held_after = dpo_scores(best["model"], base, files["held_out"], a.beta, a.max_length, tmp / "eval_after")
    eval_s = round(time.time() - t, 1)
    res = {"model": base, "method": a.method, "beta": a.beta, "max_length": a.max_length, "seed": a.seed,
           "pairs": {"train": len(sp["train"]), "dev": len(sp["dev"]), "held_out": len(sp["held_out"]),
                     "fit_max_length": sp["_fit"], "all": sp["_all"]},
           "runs": [{k: v for k, v in r.items() if k != "model"} for r in runs], "chosen_lr": best["lr"],
           "held_out_before": held_before, "held_out_after": held_after, "held_out_eval_s": eval_s,
           "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    rows = "\n".join(f"| {r['lr']:g} | {r['steps']} | {r['seconds_per_step']} | {r['wall_s']} | "
                     f"{r['dev_after'].get('rewards/accuracies', float('nan')):.3f} | "
                     f"{r['dev_after'].get('rewards/margins', float('nan')):.4f} | "
                     f"{r['dev_after'].get('loss', float('nan')):.4f} | {r['load_avg_1m_end']} |" for r in runs)
    hb, ha = held_before, held_after
    md = f"""# DPO on HH-RLHF harmless pairs (SmolLM2-135M-Instruct, {a.method}, CPU, 1 thread)

Pairs: {len(sp['train'])} train / {len(sp['dev'])} dev (lr choice) / {len(sp['held_out'])} held-out (report only),
disjoint, shuffled with seed {a.seed} from the {sp['_all']} usable pairs of the shared HH-RLHF harmless-base test
file, keeping the {sp['_fit']} whose chat-rendered prompt+answer fit max_length {a.max_length} tokens. beta {a.beta},
batch 4, 1 epoch, cosine schedule, bf16 autocast, torch threads 1.

## lr choice on the dev pairs

| lr | steps | s/step | wall s | dev reward acc. | dev margin | dev DPO loss | load avg (1 min) at end |
|---|---|---|---|---|---|---|---|
{rows}

Chosen lr (best dev reward accuracy, then margin): **{best['lr']:g}**.

## Held-out pairs (never used for training or for the lr choice)

| policy | DPO loss | reward accuracy | reward margin | logp chosen | logp rejected |
|---|---|---|---|---|---|
| start model (= reference) | {hb.get('loss')} | {hb.get('rewards/accuracies')} | {hb.get('rewards/margins')} | {hb.get('logps/chosen')} | {hb.get('logps/rejected')} |
| after DPO, lr {best['lr']:g} | {ha.get('loss')} | {ha.get('rewards/accuracies')} | {ha.get('rewards/margins')} | {ha.get('logps/chosen')} | {ha.get('logps/rejected')} |

Held-out scores are computed in fp32 (dev scores during training use bf16 autocast). Before training the policy
is the reference, so every implicit reward is 0: reward accuracy (chosen strictly above rejected) is 0 and the
loss is ln 2 = 0.693 by construction; chance level for a trained policy is 0.5.
"""
    write("train_real_hh_dpo", res, md)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=160)
    ap.add_argument("--sft-epochs", type=float, default=2.0)
    ap.add_argument("--keep", type=Path, default=None, help="Keep the run folders here instead of a temp dir.")
    ap.add_argument("--hh-dpo", action="store_true", help="Run only the HH-RLHF DPO experiment (3. above).")
    ap.add_argument("--train-pairs", type=int, default=160)
    ap.add_argument("--dev-pairs", type=int, default=40)
    ap.add_argument("--held-pairs", type=int, default=100)
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 5e-4])
    ap.add_argument("--method", default="lora")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.hh_dpo:
        return hh_dpo(a)
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
