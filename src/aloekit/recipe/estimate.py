"""`--dry-run` estimates: tokens, GPU hours and disk per stage, from the configs (and `estimate:` hints).

Rough by design, and the assumptions are printed with the table: training costs 6·P·T FLOPs (full) or 4·P·T
(LoRA: no weight gradients), DPO adds a reference forward (+2·P per token, unless precomputed) and runs chosen
and rejected; scoring costs 2·P·T; generation is memory-bound, so it is priced by a throughput. One H100 at
989 TFLOP/s bf16 dense with 40% MFU for training, 50% for scoring; vLLM generation at 2,500 tok/s for an 8B
model (batched), scaled by model size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .. import models as M
from .plan import Plan, Stage, _get_all

H100_FLOPS = 989e12
MFU_TRAIN, MFU_SCORE = 0.40, 0.50
GEN_TOK_S_8B = 2500.0
ASSUMPTIONS = ("H100 bf16 989 TFLOP/s; MFU 40% train, 50% scoring; generation 2,500 tok/s at 8B (scaled by size); "
               "train 6PT (full) / 4PT (LoRA), DPO x2 sequences + reference; disk bf16 weights + checkpoints "
               "(full: +12 bytes/param optimizer state)")


def params_of(name: str) -> float | None:
    """Parameter count of a registry model, a local HF folder (from config.json) or a hub id like org/X-8B."""
    spec = M.REGISTRY.get(name)
    text = spec.params if spec else None
    if text is None:
        cfg = Path(name) / "config.json"
        if cfg.is_file():
            c = json.loads(cfg.read_text())
            h, n, v, i = (c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size"),
                          c.get("intermediate_size"))
            if all((h, n, v, i)):
                return float(n * (4 * h * h + 3 * h * i) + v * h)
        m = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", name, re.I)
        text = m.group(0) if m else None
    if not text:
        return None
    m = re.match(r"(\d+(?:\.\d+)?)\s*([BM])", text, re.I)
    return float(m.group(1)) * (1e9 if m.group(2).upper() == "B" else 1e6) if m else None


def _root_params(plan: Plan, st: Stage) -> float | None:
    by = plan.by_name()
    if st.kind == "eval":
        of = st.of
        name = by[of].root if of in by else plan.recipe.models.get(of)
    elif st.root:
        name = st.root
    else:
        vals = [v for p in ("model", "model.name", "cot.teacher.name") for _, v in _get_all(st.config, p)]
        name = next((v for v in vals if not v.startswith("@")), None)
        if name is None and vals:
            name = by[vals[0][1:]].root
    return params_of(name) if name else None


def _gen_hours(tokens: float, p: float) -> float:
    return tokens / (GEN_TOK_S_8B * 8e9 / max(p, 1e8)) / 3600


def estimate_stage(plan: Plan, st: Stage) -> dict[str, Any]:
    c, hint = st.config, (st.estimate.model_dump() if st.estimate else {})
    p = _root_params(plan, st)
    row: dict[str, Any] = {"stage": st.name, "kind": st.kind, "params": p, "train_tokens": None,
                           "generated_tokens": None, "scored_tokens": None, "gpu_hours": None, "disk_gb": None}
    if st.kind == "eval":
        ev = plan.recipe.evaluation
        hint = ev.estimate.model_dump()
        b = c.get("benchmarks")
        if b and not hint.get("scored_tokens"):
            # multimedqa-sized default: ~7k questions x 4 options x 250 tokens when no limit is set
            n = (b.get("limit") or 800) * max(len(b.get("tasks", [])), 1)
            row["scored_tokens"] = n * 4 * 250
        s = c.get("safety")
        if s:
            per = (s.get("budget", 100) + (s.get("xstest", {}).get("limit") or 50)
                   + (s.get("medsafety_refusal", {}).get("limit") or 45))
            row["generated_tokens"] = per * (s.get("sampling", {}).get("max_new_tokens") or 96)
    elif st.kind == "data":
        cot = c.get("cot", {})
        if cot.get("enabled"):
            row["generated_tokens"] = (cot.get("max_records", 16) * cot.get("max_attempts", 2)
                                       * (cot.get("sampling", {}).get("max_new_tokens") or 256))
        row["disk_gb"] = 0.01
    elif st.kind == "redteam":
        per = c.get("budget", 100) + (c.get("xstest", {}).get("limit") or 50) + \
            (c.get("medsafety_refusal", {}).get("limit") or 45)
        row["generated_tokens"] = per * (c.get("sampling", {}).get("max_new_tokens") or 96)
    elif st.kind == "medprompt":
        members = c.get("params", {}).get("members", 5)
        mnt = c.get("db", {}).get("max_new_tokens", 192)
        row["generated_tokens"] = ((c.get("pool_limit") or 500) * 3 + (c.get("limit") or 500) * (2 + members)) * mnt
    elif st.kind in ("sft", "dpo"):
        if not hint.get("train_tokens"):
            if st.kind == "dpo":
                pairs = sum((s.get("max_pairs") or 0) for s in c.get("stages", []))
                epochs = max((s.get("optim", {}).get("epochs", 1.0) for s in c.get("stages", [])), default=1.0)
                row["train_tokens"] = pairs * 2 * c.get("max_length", 512) * epochs if pairs else None
        full = c.get("method", "lora" if st.kind == "sft" else "full") == "full"
        if p:
            row["disk_gb"] = (2 * p + (c.get("save_total_limit", 2) * (2 + 12) * p if full else 0.05 * p)) / 1e9
    elif st.kind == "merge" and p:
        row["disk_gb"] = 2 * p / 1e9
    for k in ("train_tokens", "generated_tokens", "scored_tokens"):
        if hint.get(k):
            row[k] = hint[k]
    if p:
        hours = 0.0
        if row["train_tokens"]:
            full = c.get("method", "lora" if st.kind == "sft" else "full") == "full"
            f = (6 if full else 4) * p * row["train_tokens"]
            if st.kind == "dpo":
                f = f * 2 + (0 if c.get("precompute_ref_log_probs") else 2 * p * row["train_tokens"] * 2)
            hours += f / (H100_FLOPS * MFU_TRAIN) / 3600
        if row["scored_tokens"]:
            hours += 2 * p * row["scored_tokens"] / (H100_FLOPS * MFU_SCORE) / 3600
        if row["generated_tokens"]:
            hours += _gen_hours(row["generated_tokens"], p)
        if st.kind == "merge":
            hours += 0.1  # streaming a few models through mergekit: I/O bound, minutes
        row["gpu_hours"] = hours
    return row


def estimate_plan(plan: Plan) -> list[dict[str, Any]]:
    return [estimate_stage(plan, st) for st in plan.stages]


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{suf}{unit}"
    return f"{x:.3g}{unit}"


def plan_table(plan: Plan, rows: list[dict[str, Any]], chosen: list[str]) -> str:
    by = plan.by_name()
    lines = [f"recipe {plan.recipe.name}: {len(plan.stages)} stages -> {plan.out}",
             f"data dir: {plan.data_root or 'not found (with_data overrides and data_tasks are off)'}", "",
             f"{'stage':<16} {'kind':<10} {'key':<10} {'after':<18} {'params':>7} {'train tok':>9} {'gen tok':>8} "
             f"{'scored':>8} {'GPU h':>7} {'disk GB':>8}  run"]
    tot_h = tot_d = 0.0
    for r in rows:
        st = by[r["stage"]]
        tot_h += r["gpu_hours"] or 0
        tot_d += r["disk_gb"] or 0
        lines.append(f"{r['stage']:<16} {r['kind']:<10} {st.key[:10]:<10} {','.join(st.deps) or '-':<18} "
                     f"{_fmt(r['params']).replace('G', 'B'):>7} {_fmt(r['train_tokens']):>9} {_fmt(r['generated_tokens']):>8} "
                     f"{_fmt(r['scored_tokens']):>8} "
                     f"{('%.2f' % r['gpu_hours']) if r['gpu_hours'] is not None else '?':>7} "
                     f"{('%.2f' % r['disk_gb']) if r['disk_gb'] is not None else '?':>8}  "
                     f"{'yes' if r['stage'] in chosen else 'no'}")
    lines += ["", f"total: ~{tot_h:.1f} GPU hours, ~{tot_d:.1f} GB disk "
                  "('?' = unknown: add estimate.train_tokens / generated_tokens to the stage)",
              f"gates: {len(plan.recipe.gates)}", f"assumptions: {ASSUMPTIONS}"]
    from .plan import expected_items
    by = plan.by_name()
    for i, g in enumerate(plan.recipe.gates):
        n = expected_items(by[f"eval:{g.after}"].config, g.metric)
        lines.append(f"  gate {i}: after {g.after}: {g.metric} {g.rule()}" + (f" vs {g.vs}" if g.vs else "")
                     + f"; {g.confidence * 100:g}% interval on {n if n else 'all the'} items"
                     + f"; inconclusive -> {g.on_inconclusive}")
    return "\n".join(lines)
