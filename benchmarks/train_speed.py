"""Training speed on the real default model (SmolLM2-135M-Instruct, LoRA r=16 all-linear, CPU, fp32 weights under
bf16 autocast, one torch thread).

1. SFT: real tokens per CPU-second of three setups, one epoch each over the same rows, so that all see exactly the
   same real (non-padding) tokens (every run's `num_input_tokens_seen` must agree: checked):
   - TRL unpacked: TRL's `SFTTrainer` as its defaults have it, `--batch-size` rows per step padded to the longest;
   - TRL `padding_free=True`: the same `SFTTrainer`, `--batch-size` rows per step flattened into one sequence
     (position ids restart at each row; TRL requires `max_length=None` then, harmless as no row is longer);
   - ours: `aloekit.train.sft.run` (TRL's BFD packing into rows of `--max-length`, padding-free), with
     `--ours-batch-size` packed rows per step; "auto" picks the count whose tokens per step come closest to the
     peers' (same effective batch), and the table gives every setup's tokens per step.
   Peers get the same model, LoRA, dtype, optimizer and seed as ours (aloekit's own trainer settings), and the same
   dataset object (`train_eval`: prompt-completion rows, completion-only loss). CPU seconds = process CPU time spent
   inside `SFTTrainer.train` (with one thread: the work done, nearly free of the load of a shared machine); wall
   seconds are given too. `--runs` rounds, each round running all setups in turn (order reversed every other round,
   so that drift in the machine's load falls on all of them); median (min-max), and the ours/peer ratio taken
   within each round.
2. DPO seconds/step with and without precomputed reference log-probs (wall; the precompute pass
   counts in the stage wall time only, not in s/step), in `--runs`
   paired rounds (order alternating); `--dpo-steps 0` skips it and keeps the last measurement.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py [--sft-rows 60] [--runs 3] [--dpo-steps 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import data_dir, fmt, spread, write

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


def pubmedqa_sft_rows(limit: int) -> list[dict]:
    """PubMedQA PQA-L minus its 500 test ids: an abstract, a question, a long answer and the decision (~300-600
    tokens, where HeadQA rows are ~130)."""
    root = data_dir() / "pubmedqa_pqal"
    items = json.loads((root / "ori_pqal.json").read_text())
    test = set(json.loads((root / "test_ground_truth.json").read_text()))
    rows = []
    for pid, it in items.items():
        if pid in test:
            continue
        ctx = "\n".join(it["CONTEXTS"])
        rows.append({"messages": [{"role": "user", "content": f"{ctx}\n\nQuestion: {it['QUESTION']}"},
                                  {"role": "assistant",
                                   "content": f"{it['LONG_ANSWER']} So the answer is {it['final_decision']}."}]})
        if len(rows) >= limit:
            break
    return rows


def mixed_sft_rows(limit: int) -> list[dict]:
    """An Aloe-like mix: short exam questions and long abstract-grounded answers, interleaved (the order a shuffled
    multi-source SFT set has)."""
    short, long_ = headqa_sft_rows(limit // 2), pubmedqa_sft_rows(limit - limit // 2)
    return [r for pair in zip(short, long_) for r in pair]


TRAIN_RECORDS: list[dict] = []


def record_train_calls() -> None:
    """Record every `SFTTrainer.train` call: process CPU seconds and wall seconds spent inside it, and what the
    trainer did (steps, tokens seen, rows per step, padding-free or not, the model's attention implementation)."""
    from trl import SFTTrainer
    orig = SFTTrainer.train

    def timed(self, *args, **kwargs):
        c, w = time.process_time(), time.perf_counter()
        out = orig(self, *args, **kwargs)
        cpu, wall = time.process_time() - c, time.perf_counter() - w
        cfg = getattr(self.model, "config", None)
        TRAIN_RECORDS.append({
            "cpu_s": cpu, "wall_s": wall, "steps": self.state.global_step,
            "tokens": int(self.state.num_input_tokens_seen), "rows_per_step": self.args.per_device_train_batch_size,
            "padding_free": bool(getattr(self, "padding_free", False)), "packing": bool(self.args.packing),
            "attn_implementation": getattr(cfg, "_attn_implementation", None)})
        return out
    SFTTrainer.train = timed


def sft_cfg(tmp: Path, data: Path, out: str, packing: bool, batch_size: int, max_length: int) -> SFTConfig:
    return SFTConfig(dataset=str(data), output=str(tmp / out), packing=packing, eval_fraction=0.0,
                     max_length=max_length, save_steps=10_000, resume="never",
                     optim={"epochs": 1.0, "batch_size": batch_size, "lr": 1e-4})


def ours(cfg: SFTConfig) -> None:
    """aloekit's SFT as a user runs it (it also merges and saves the model after training: not timed)."""
    sft.run(cfg)


def trl_peer(cfg: SFTConfig, padding_free: bool) -> None:
    """TRL's SFTTrainer on the same dataset, model, LoRA and trainer settings; unpacked, padded or padding-free."""
    from transformers import set_seed
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    from aloekit.models import resolve
    from aloekit.train.common import load_policy, load_tokenizer, lora_config, set_threads, trainer_kwargs
    from aloekit.train.data import train_eval
    set_threads()
    path = resolve(cfg.model)
    tok = load_tokenizer(path, cfg)
    train, _ = train_eval(cfg.dataset, None, 0.0, "sft", cfg.seed)
    set_seed(cfg.seed)
    model = load_policy(path, cfg)
    # padding_free without packing: TRL refuses a max_length (it would not be enforced); no row here is longer
    args = TrlSFTConfig(max_length=None if padding_free else cfg.max_length, packing=False, padding_free=padding_free,
                        include_num_input_tokens_seen="all" if padding_free else "non_padding",
                        **trainer_kwargs(cfg, cfg.optim, Path(cfg.output) / "checkpoints", False))
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok,
                         peft_config=lora_config(cfg.lora, model))
    trainer.train()


def one_run(tmp: Path, data: Path, setup: str, batch_size: int, max_length: int, tag: str) -> dict:
    cfg = sft_cfg(tmp, data, f"sft_{setup}_{tag}", setup == "ours", batch_size, max_length)
    n = len(TRAIN_RECORDS)
    if setup == "ours":
        ours(cfg)
    else:
        trl_peer(cfg, padding_free=setup == "trl_padding_free")
    assert len(TRAIN_RECORDS) == n + 1, "one SFTTrainer.train call per run"
    shutil.rmtree(cfg.output, ignore_errors=True)
    gc.collect()
    r = dict(TRAIN_RECORDS[-1], load_avg_1m_end=round(os.getloadavg()[0], 2))
    r["tokens_per_cpu_s"] = r["tokens"] / r["cpu_s"]
    r["tokens_per_wall_s"] = r["tokens"] / r["wall_s"]
    return r


SETUPS = ("ours", "trl_unpacked", "trl_padding_free")
LABELS = {"ours": "ours: aloekit SFT (TRL BFD packing, padding-free)",
          "trl_unpacked": "TRL SFTTrainer, unpacked (padded batches)",
          "trl_padding_free": "TRL SFTTrainer, `padding_free=True` (no packing)"}


def sft_set(tmp: Path, data: Path, runs: int, batch_sizes: dict, max_length: int) -> dict:
    """`runs` rounds of every setup; a setup that fails on its first run is kept as not runnable, with the reason."""
    per: dict = {s: [] for s in SETUPS}
    not_runnable: dict = {}
    for i in range(runs):
        for setup in (SETUPS if i % 2 == 0 else SETUPS[::-1]):
            if setup in not_runnable:
                continue
            try:
                per[setup].append(one_run(tmp, data, setup, batch_sizes[setup], max_length, str(i)))
            except Exception as e:  # noqa: BLE001 - a peer that refuses this setup is a result, not a crash
                if setup == "ours" or per[setup]:
                    raise
                not_runnable[setup] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"{setup}: not runnable: {not_runnable[setup]}")
    tokens = {r["tokens"] for rs in per.values() for r in rs}
    if len(tokens) != 1:
        raise SystemExit(f"setups saw different token counts, the comparison is void: "
                         f"{ {s: [r['tokens'] for r in rs] for s, rs in per.items()} }")
    out: dict = {"tokens": tokens.pop(), "setups": {}}
    for s in SETUPS:
        if s in not_runnable:
            out["setups"][s] = {"not_runnable": not_runnable[s], "rows_per_step": batch_sizes[s]}
            continue
        rs = per[s]
        first = rs[0]
        out["setups"][s] = {
            "rows_per_step": batch_sizes[s], "steps": first["steps"], "tokens_per_step": round(out["tokens"] / first["steps"]),
            "padding_free": first["padding_free"], "packing": first["packing"],
            "attn_implementation": first["attn_implementation"],
            "cpu_s": spread([r["cpu_s"] for r in rs], 1), "wall_s": spread([r["wall_s"] for r in rs], 1),
            "tokens_per_cpu_s": spread([r["tokens_per_cpu_s"] for r in rs], 1),
            "tokens_per_wall_s": spread([r["tokens_per_wall_s"] for r in rs], 1),
            "load_avg_1m_end": [r["load_avg_1m_end"] for r in rs]}
        if s != "ours":
            # paired: ours and the peer of the same round
            out["setups"][s]["ours_vs_this_per_cpu_s"] = spread(
                [o["tokens_per_cpu_s"] / p["tokens_per_cpu_s"] for o, p in zip(per["ours"], rs)])
            out["setups"][s]["ours_vs_this_per_wall_s"] = spread(
                [o["tokens_per_wall_s"] / p["tokens_per_wall_s"] for o, p in zip(per["ours"], rs)])
    return out


def sft_table(res: dict) -> str:
    lines = []
    for s in SETUPS:
        r = res["setups"][s]
        if "not_runnable" in r:
            lines.append(f"| {LABELS[s]} | {r['rows_per_step']} | not runnable: {r['not_runnable']} | | | | | | |")
            continue
        rows = f"{r['rows_per_step']} packed" if s == "ours" else str(r["rows_per_step"])
        ratio = "—" if s == "ours" else (f"**{fmt(r['ours_vs_this_per_cpu_s'], '×')}** "
                                         f"(wall {fmt(r['ours_vs_this_per_wall_s'], '×')})")
        lines.append(f"| {LABELS[s]} | {rows} | {r['steps']} | {r['tokens_per_step']} | {r['attn_implementation']} | "
                     f"{fmt(r['cpu_s'])} | **{fmt(r['tokens_per_cpu_s'])}** | {fmt(r['tokens_per_wall_s'])} | {ratio} |")
    return "\n".join(lines)


def dpo_speed(tmp: Path, steps: int, precompute: bool, tag: str) -> dict:
    hh = data_dir() / "hh_rlhf_harmless_base_test" / "test.jsonl.gz"
    out = tmp / f"dpo_{precompute}_{tag}"
    cfg = DPOConfig(output=str(out), precompute_ref_log_probs=precompute, max_length=256,
                    save_steps=10_000, resume="never",
                    stages=[{"name": "s", "dataset": str(hh), "max_pairs": steps * 4, "eval_fraction": 0.0,
                             "optim": {"max_steps": steps, "batch_size": 4}}])
    t = time.time()
    m = dpo.run(cfg)["stages"][0]
    total = time.time() - t
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    return {"steps": m["steps"], "seconds_per_step": m["seconds_per_step"], "stage_wall_s": total}


def dpo_rounds(tmp: Path, steps: int, runs: int) -> dict:
    per: dict = {False: [], True: []}
    for i in range(runs):
        for pre in ((False, True) if i % 2 == 0 else (True, False)):
            per[pre].append(dpo_speed(tmp, steps, pre, str(i)))
    return {name: {"steps": rs[0]["steps"], "seconds_per_step": spread([r["seconds_per_step"] for r in rs]),
                   "stage_wall_s": spread([r["stage_wall_s"] for r in rs], 1)}
            for name, rs in (("plain", per[False]), ("precomputed", per[True]))}


DATASETS = {"headqa": ("HeadQA train rows (short, uniform lengths)", headqa_sft_rows),
            "mixed": ("an Aloe-like mix: HeadQA train and PubMedQA PQA-L non-test rows, interleaved (short and "
                      "~300-600 tokens)", mixed_sft_rows)}



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sft-rows", type=int, default=60)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3, help="rounds of every setup (paired runs)")
    ap.add_argument("--batch-size", type=int, default=8, help="the TRL peers' rows per step (TRL's default)")
    ap.add_argument("--ours-batch-size", default="auto",
                    help="our packed rows per step; auto: the count closest to the peers' tokens per step")
    ap.add_argument("--dpo-steps", type=int, default=2, help="0: skip DPO (its last measurement is kept)")
    ap.add_argument("--data", default="headqa,mixed", help="SFT sets to time: headqa, mixed")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(1)  # shared machine; and CPU seconds measure work only with one thread
    record_train_calls()
    results: dict = {}
    d_res = None
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        from transformers import AutoTokenizer

        from aloekit.models import DEFAULT_MODEL, resolve
        tok = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
        for name in a.data.split(","):
            # rows longer than max_length would be truncated unpacked but split by packing: keep whole rows only,
            # so that every setup trains on exactly the same tokens
            lens, rows = [], []
            for r in DATASETS[name][1](a.sft_rows * 2):
                n = len(tok(tok.apply_chat_template(r["messages"], tokenize=False)).input_ids)
                if n < a.max_length and len(rows) < a.sft_rows:
                    rows.append(r)
                    lens.append(n)
            data = tmp / f"{name}_sft.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in rows))
            mean_len = sum(lens) / len(lens)
            ours_bs = (max(1, round(a.batch_size * mean_len / a.max_length)) if a.ours_batch_size == "auto"
                       else int(a.ours_batch_size))
            res = sft_set(tmp, data, a.runs, {"ours": ours_bs, "trl_unpacked": a.batch_size,
                                              "trl_padding_free": a.batch_size}, a.max_length)
            res.update(rows=len(rows), mean_row_tokens=round(mean_len), runs=a.runs)
            results[name] = res
        if a.dpo_steps > 0:
            d_res = dpo_rounds(tmp, a.dpo_steps, a.runs)
    # sets (and DPO) not timed in this invocation keep their last measurement, when it has this file's format
    prev_file = Path(__file__).resolve().parent / "results" / "train_speed.json"
    prev = json.loads(prev_file.read_text()) if prev_file.is_file() else {}
    if prev.get("format") == 2:
        results = {**{k: v for k, v in prev["sft"]["sets"].items() if k not in results and k in DATASETS}, **results}
        d_res = d_res or prev.get("dpo")
    sections = []
    for name, res in results.items():
        sections.append(f"""### {res['rows']} rows of {DATASETS[name][0]}; {res['tokens']} real tokens, mean row \
{res['mean_row_tokens']} tokens (chat template), {res['runs']} round(s)

| setup | rows/step | steps | tokens/step | attention | train CPU s | tokens/CPU s | tokens/wall s | ours ÷ this, per CPU s (per wall s) |
|---|---|---|---|---|---|---|---|---|
{sft_table(res)}
""")
    dpo_md = "Not measured yet (`--dpo-steps 0`)." if d_res is None else f"""{d_res['plain']['steps']} steps each.

| reference log-probs | s/step | stage wall time (s, incl. load/precompute) |
|---|---|---|
| computed every step | {fmt(d_res['plain']['seconds_per_step'])} | {fmt(d_res['plain']['stage_wall_s'])} |
| precomputed once | {fmt(d_res['precomputed']['seconds_per_step'])} | {fmt(d_res['precomputed']['stage_wall_s'])} |"""
    md = f"""# Training speed (SmolLM2-135M-Instruct, LoRA r=16 all-linear, CPU bf16 autocast, {torch.get_num_threads()} torch thread(s))

## SFT: ours vs TRL unpacked and TRL `padding_free=True` (1 epoch each, max_length {a.max_length})

Tokens = real (non-padding) tokens trained on; within a data set every run of every setup trains on exactly the same
tokens (checked). Timed in process CPU seconds inside `SFTTrainer.train` (one torch thread), since wall time on this
shared 2-core machine swung 2x between identical runs; wall seconds are given for reference, and the load average
in the JSON. Each cell: median (min–max) over the rounds; "ours ÷ this" is the ratio of tokens/s within each round.
All setups run TRL 1.16's `SFTTrainer` with the same model, LoRA, bf16 autocast, optimizer, schedule and seed.

- TRL unpacked: `--batch-size` rows per step padded to the longest; padding is computed but not counted.
- TRL `padding_free=True`: the same rows per step flattened into one sequence (TRL then requires `max_length=None`;
  no row here is longer than max_length, so nothing would have been truncated).
- ours: aloekit SFT, i.e. TRL's BFD packing into rows of max_length, padding-free; packed rows per step chosen to
  carry about the peers' tokens per step (see tokens/step).

Padding-free with the `sdpa`/`eager` attention on CPU: TRL's docs say padding-free is only supported with
FlashAttention 2/3, but TRL does not check it. Without an attention mask, transformers derives a block-diagonal
causal mask from the restarting position ids (`masking_utils.find_packed_sequence_indices`), so no row attends to
another and the result is right; but the mask is dense, so attention costs (tokens per step)² rather than the sum
of each row's length² that FlashAttention's varlen kernel would cost. The gain is the padding removed from every
other layer.

{chr(10).join(sections)}
## DPO: seconds/step (HH-RLHF harmless pairs, batch 4, max_length 256, full fine-tune, wall)

{dpo_md}
"""
    write("train_speed", {"format": 2, "sft": {"max_length": a.max_length, "batch_size": a.batch_size,
                                               "sets": results}, "dpo": d_res}, md)


if __name__ == "__main__":
    main()
