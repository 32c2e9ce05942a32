"""The Aloe merge on the real default model: two quick LoRA SFTs, then a searched dare_ties merge over the base.

1. Two tiny LoRA SFTs of SmolLM2-135M-Instruct with `aloekit.train.sft.run` (CPU-sized: a few steps each):
   A on HEAD-QA *train* questions (medical QA), B on MedSafetyBench *train* demonstrations (safe refusals).
2. `aloekit merge` with search: dare_ties over the default model, a grid over weights x density, each candidate
   scored by the built-in dev scorer (PubMedQA non-test ids + MMLU-medical dev, loglikelihood accuracy).
3. The inputs are scored the same way, and the chosen merge's checks and generation are recorded.

There is no offline pretrained (non-instruct) SmolLM2-135M, so the "base" is the instruct model itself: the
merge recombines the two fine-tunes' task vectors relative to it, the shape of Aloe's recipe at toy scale.

    python benchmarks/merge_real.py [--steps 10]   # writes benchmarks/results/merge_real.{json,md}
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir, write  # noqa: E402


def headqa_rows(root: Path, n: int, seed: int) -> list[dict]:
    from aloekit.benchmarks import REGISTRY
    qs = [q for q in REGISTRY["headqa"].load(root, split="train").docs if not q.source.get("image")]
    rows = []
    for q in sorted(qs, key=lambda q: q.source["exam"]):
        aids = q.source["aids"]
        listed = "\n".join(f"{aid}. {text}" for aid, text in zip(aids, q.options))
        rows.append({"prompt": [{"role": "user", "content": f"{q.question}\n{listed}"}],
                     "completion": [{"role": "assistant",
                                     "content": f"The answer is {aids[q.gold]}: {q.options[q.gold]}"}]})
    return random.Random(seed).sample(rows, n)


def safety_rows(root: Path, n: int, seed: int) -> list[dict]:
    from aloekit.benchmarks.requests import read_medsafetybench
    rows = [{"prompt": [{"role": "user", "content": r.text}],
             "completion": [{"role": "assistant", "content": r.safe_response or ""}]}
            for r in read_medsafetybench(root / "medsafetybench" / "train", "train", ["gpt4"])]
    return random.Random(seed).sample(rows, n)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--pubmedqa", type=int, default=20, help="PubMedQA non-test items in the dev set")
    ap.add_argument("--work", default="runs/merge_real")
    ap.add_argument("--b-perturbed", action="store_true",
                    help="CPU too scarce for a second SFT: B is a deterministic weight perturbation of the default "
                         "model (seeded Gaussian noise, 0.01 x each tensor's std; the merge_memory benchmark's copy)")
    args = ap.parse_args()

    from aloekit.io import atomic_write_jsonl
    from aloekit.merge import MergeConfig, run
    from aloekit.merge.config import DevSet, SearchSettings
    from aloekit.merge.scoring import dev_accuracy
    from aloekit.train.config import LoraSettings, OptimSettings, SFTConfig
    from aloekit.train.sft import run as sft_run

    work = Path(args.work)
    root = data_dir()
    data = {"headqa": headqa_rows(root, 8 * args.steps, 0), "safety": safety_rows(root, 8 * args.steps, 0)}
    fts, train_metrics = {}, {}
    if args.b_perturbed:
        from merge_memory import make_copies
        del data["safety"]
        fts["safety"] = str(make_copies()[1][0])
    for name, rows in data.items():
        atomic_write_jsonl(work / "data" / f"{name}.jsonl", rows)
        cfg = SFTConfig(dataset=str(work / "data" / f"{name}.jsonl"), output=str(work / f"sft_{name}"),
                        method="lora", lora=LoraSettings(r=8, alpha=16, dropout=0.0), max_length=256,
                        eval_fraction=0.0, save_steps=1000, logging_steps=1,
                        optim=OptimSettings(lr=5e-4, max_steps=args.steps, batch_size=2, grad_accum=1), seed=0)
        train_metrics[name] = sft_run(cfg)
        fts[name] = str(work / f"sft_{name}")  # a training run directory: merge finds its model/ output
    # from the runs' own metrics: a finished SFT is skipped on a rerun, so wall time here may be near zero
    t_train = sum(m.get("train_seconds", 0.0) for m in train_metrics.values())

    search = SearchSettings(weights=[[0.5, 0.5], [0.7, 0.3]], density=[args.density],
                            dev_sets=[DevSet(name="pubmedqa_dev", limit=args.pubmedqa),
                                      DevSet(name="mmlu_medical_dev")])
    # fp32 compute (the default): ten LoRA steps move weights by less than a bf16 ulp, so bf16 deltas would
    # be mostly rounding
    mcfg = MergeConfig(method="dare_ties", base_model="smollm2-135m-instruct", output=str(work / "merged"),
                       models=[{"model": fts["headqa"]}, {"model": fts["safety"]}], search=search, seed=0)
    t1 = time.time()
    run(mcfg)
    t_merge = time.time() - t1

    # the inputs, scored exactly like the candidates
    b_label = ("B: weight perturbation (NOT a fine-tune; seeded noise 0.01 x std)" if args.b_perturbed
               else "SFT B (MedSafetyBench train)")
    inputs = {"base (smollm2-135m-instruct)": "smollm2-135m-instruct", "SFT A (HEAD-QA train)": fts["headqa"],
              b_label: fts["safety"]}
    from aloekit.merge.inputs import resolve_input
    scores = {label: dev_accuracy(resolve_input(spec, label), mcfg) for label, spec in inputs.items()}
    search_table = json.loads((work / "merged" / "search.json").read_text())
    checks = json.loads((work / "merged" / "checks.json").read_text())
    n_items = args.pubmedqa + 30
    payload = {
        "what": "two LoRA SFTs of the default model merged with dare_ties over it; grid searched on dev accuracy",
        "sft_steps": args.steps, "train_metrics": train_metrics, "dev_items": n_items,
        "b_is_perturbation": args.b_perturbed, "inputs": fts,
        "input_scores": scores, "search": search_table, "checks": checks,
        "train_seconds": round(t_train, 1), "merge_search_seconds": round(t_merge, 1),
    }
    what = (f"A: LoRA SFT ({args.steps} steps of 2 packed 256-token rows, r=8, lr 5e-4) on HEAD-QA train; "
            + ("B: **a deterministic weight perturbation, not a fine-tune** (the shared 2-core CPU ran at ~250 s per "
               "SFT step during this run, too slow for a second SFT). " if args.b_perturbed else
               "B: the same on MedSafetyBench train. "))
    md = ["# Real-model merge (SmolLM2-135M-Instruct, CPU)", "", what +
          f"Merged with dare_ties over the instruct model; {len(search_table['candidates'])} candidates scored on "
          f"{n_items} dev items (PubMedQA non-test {args.pubmedqa} + MMLU-medical dev 30, loglikelihood accuracy).", "",
          "| model | dev accuracy |", "|---|---|"]
    md += [f"| {k} | {v:.4f} |" for k, v in scores.items()]
    best = search_table["best"]
    md += [f"| **merged (best: weights {best['weights']}, density {best['density']})** | **{best['score']:.4f}** |",
           "", "Search table (best first):", "", (work / "merged" / "search.md").read_text().strip(), "",
           f"Checks: same vocab {checks['same_vocab']}, same chat template {checks['same_chat_template']}, "
           f"finite weights {checks['finite_weights']}, generates {checks['generates']}.", "",
           f"Merged model's greedy answer to \"{checks['generation']['prompt']}\": "
           f"\"{checks['generation']['text'].strip()}\"", "",
           f"Time: SFT training {t_train:.0f}s, merge search (merges, scoring, checks) {t_merge:.0f}s on a shared "
           "2-core CPU.", "",
           f"With {n_items} dev items one item is {100 / n_items:.0f} points: these differences are noise. What this "
           "run shows is the pipeline on the real model (LoRA SFT output folded in through its run directory, "
           "dare_ties over the base, checks, scoring, search table), not a quality gain."]
    write("merge_real", payload, "\n".join(md))


if __name__ == "__main__":
    main()
