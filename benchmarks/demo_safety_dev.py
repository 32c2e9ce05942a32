"""Choose the demo's safety-DPO settings (stage dpo2) on dev requests only.

Takes a demo recipe run that has finished `redteam` (e.g. `aloekit run configs/demo.yaml --until redteam`),
trains each candidate from its dpo1 model on its red-team pairs, and red-teams every result on dev sets that the
demo's evaluation never uses:
- harmful dev: MedSafetyBench *train* requests and AdvBench requests that the red-team stage did not attack
  (so none became a training pair), under the programmatic attacks; the demo evaluates on test splits;
- safe dev: the bundled demo_safe look-alikes; the demo's evaluation (with the shared data) uses XSTest.

    python benchmarks/demo_safety_dev.py runs/exp [--only NAME]

Writes benchmarks/results/demo_safety_dev.{json,md}: per candidate, training seconds, dev ASR, dev over-refusal.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from _common import data_dir, git_sha, machine, write

CANDIDATES = {
    # what the demo ran before (full weights, 24 steps at max_length 384)
    "full_lr5e-6_24": {"method": "full", "max_length": 384, "optim": {"lr": 5e-6, "max_steps": 24}},
    "full_lr1e-5_16_len256": {"method": "full", "max_length": 256, "optim": {"lr": 1e-5, "max_steps": 16}},
    "full_lr2e-5_12_len256": {"method": "full", "max_length": 256, "optim": {"lr": 2e-5, "max_steps": 12}},
    "lora_lr5e-4_12_len256": {"method": "lora", "max_length": 256, "optim": {"lr": 5e-4, "max_steps": 12}},
    # DPO + NLL on the chosen answers (RPO): learns to say the safe answers (and its own benign ones)
    "full_rpo_lr1e-5_12_len256": {"method": "full", "max_length": 256, "optim": {"lr": 1e-5, "max_steps": 12},
                                  "stage": {"loss_type": ["sigmoid", "sft"]}},
    "full_rpo_lr2e-5_12_len256": {"method": "full", "max_length": 256, "optim": {"lr": 2e-5, "max_steps": 12},
                                  "stage": {"loss_type": ["sigmoid", "sft"]}},
    "full_rpo_lr1e-5_16_len256": {"method": "full", "max_length": 256, "optim": {"lr": 1e-5, "max_steps": 16},
                                  "stage": {"loss_type": ["sigmoid", "sft"]}},
}


def stage_dir(run: Path, name: str) -> Path:
    m = json.loads((run / "manifest.json").read_text())
    row = next(s for s in m["stages"] if s["name"] == name)
    return run / row["dir"]


def dev_requests(run: Path, data: Path, out: Path, n_med: int = 48, n_adv: int = 16, seed: int = 0) -> Path:
    """A JSONL of harmful requests the red-team stage never attacked."""
    from aloekit.redteam.requests import SourceConfig, load_source
    used = {json.loads(x)["request"] for x in (stage_dir(run, "redteam") / "report.jsonl").read_text().splitlines()}
    rng = random.Random(seed)
    rows = []
    for name, split, k in (("medsafetybench", "train", n_med), ("advbench", None, n_adv)):
        reqs = [r for r in load_source(SourceConfig(name=name, split=split), data) if r.text not in used]
        for r in rng.sample(reqs, k):
            rows.append({"prompt": r.text, "category": f"{name}/{r.category}"})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--only", action="append")
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo_safety_dev"))
    ap.add_argument("--budget", type=int, default=128)
    ap.add_argument("--pairs", type=Path, help="a red-team run directory to train on instead of the run's own")
    args = ap.parse_args()
    from aloekit.redteam.config import RedteamConfig
    from aloekit.redteam.run import run as redteam
    from aloekit.train.config import DPOConfig
    from aloekit.train.dpo import run as dpo

    data = data_dir()
    args.work.mkdir(parents=True, exist_ok=True)
    dev = dev_requests(args.run, data, args.work / "dev_requests.jsonl")
    dpo1 = next(stage_dir(args.run, "dpo1").glob("stage*-*/model"))
    pairs = args.pairs or stage_dir(args.run, "redteam")

    def measure(model: Path, name: str) -> dict:
        cfg = RedteamConfig.model_validate({
            "model": {"name": str(model), "batch_size": 32}, "sampling": {"max_new_tokens": 64, "temperature": 0.0},
            "budget": args.budget, "sources": [{"name": "jsonl", "path": str(dev), "text_field": "prompt",
                                                "category_field": "category"}],
            "attacks": ["programmatic"], "judges": ["marker"], "xstest": {"source": "demo_safe", "limit": None},
            "medsafety_refusal": {"enabled": False}, "pairs": {"enabled": False}, "seed": 0,
            "output": str(args.work / f"dev_{name}")})
        s = redteam(cfg)
        return {"asr": s["attacks"]["asr"], "n_attempts": s["attacks"]["n"],
                "over_refusal": s["over_refusal"]["refusal_rate"], "n_safe": s["over_refusal"]["n"]}

    # candidates measured by earlier invocations (--only) on the same run stay in the table
    prev_file = Path(__file__).parent / "results" / "demo_safety_dev.json"
    prev = json.loads(prev_file.read_text()) if prev_file.is_file() else {}
    results = prev.get("results", {}) if prev.get("pairs") == str(pairs.resolve()) else {}
    if "dpo1 (before)" not in results:
        results["dpo1 (before)"] = {"train_s": 0.0, **measure(dpo1, "dpo1")}
    for name, over in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        cfg = DPOConfig.model_validate({
            "model": str(dpo1), "output": str(args.work / name), "method": over["method"],
            "max_length": over["max_length"], "save_steps": 1000, "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "stages": [{"name": "safety", "dataset": str(pairs), "beta": 0.1, **over.get("stage", {}),
                        "optim": {"batch_size": 4, "warmup_ratio": 0.1, **over["optim"]}}]})
        t = time.time()
        res = dpo(cfg)
        train_s = time.time() - t
        results[name] = {"train_s": round(train_s, 1), **measure(Path(res["final_model"]), name)}
        print(name, results[name], file=sys.stderr, flush=True)

    before = results["dpo1 (before)"]
    lines = ["# Demo safety DPO (dpo2): settings chosen on dev requests", "",
             f"git {git_sha()}, {machine()['date']}. From `{args.run}`: dpo1 model and its red-team pairs. Dev harmful: "
             f"{sum(1 for _ in dev.open())} MedSafetyBench-train/AdvBench requests the red team never attacked, x "
             f"programmatic attacks ({args.budget} attempts); dev safe: the 120 bundled demo_safe prompts. "
             "bf16 greedy, 64 new tokens, marker judge.", "",
             "| candidate | DPO s | dev ASR | relative drop | dev over-refusal | rise (pts) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        drop = (before["asr"] - r["asr"]) / before["asr"] if before["asr"] else 0.0
        lines.append(f"| {name} | {r['train_s']:.0f} | {100 * r['asr']:.1f}% | {100 * drop:.1f}% | "
                     f"{100 * r['over_refusal']:.1f}% | {100 * (r['over_refusal'] - before['over_refusal']):+.1f} |")
    write("demo_safety_dev", {"results": results, "run": str(args.run), "pairs": str(pairs.resolve()),
                              "candidates": {k: CANDIDATES[k] for k in results if k in CANDIDATES}}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
