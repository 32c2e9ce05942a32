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
from .plan import Plan, Stage, _get_all, resolved_config

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
    """Parameters of the model the stage runs: the model evaluated, a model stage's root model, else the first
    model field of the stage (a "@stage" there: that stage's root model)."""
    by = plan.by_name()
    if st.of is not None:
        name = by[st.of].root if st.of in by else plan.recipe.models.get(st.of)
    elif st.root:
        name = st.root
    else:
        fields = st.spec.model_fields[:1]
        vals = [v for p in fields for _, v in _get_all(st.config, p)]
        name = next((v for v in vals if not v.startswith("@")), None)
        if name is None and vals:
            name = by[vals[0][1:]].root
    return params_of(name) if name else None


def _gen_hours(tokens: float, p: float) -> float:
    return tokens / (GEN_TOK_S_8B * 8e9 / max(p, 1e8)) / 3600


def estimate_stage(plan: Plan, st: Stage) -> dict[str, Any]:
    """The stage's own estimate (its Stage.estimate on its validated config), the recipe's `estimate:` hints on
    top, priced with the parameter count of the model it runs."""
    from .stages import build_config
    est = st.spec.estimate(build_config(st.spec, resolved_config(plan, st), f"stages.{st.name}", None))
    hint = st.estimate.model_dump() if st.estimate else {}
    p = _root_params(plan, st)
    row: dict[str, Any] = {"stage": st.name, "kind": st.kind, "params": p, "train_tokens": est.train_tokens,
                           "generated_tokens": est.generated_tokens, "scored_tokens": est.scored_tokens,
                           "gpu_hours": None, "disk_gb": est.disk_gb}
    for k in ("train_tokens", "generated_tokens", "scored_tokens"):
        if hint.get(k):
            row[k] = hint[k]
    if p and est.disk_bytes_per_param is not None:
        row["disk_gb"] = (row["disk_gb"] or 0.0) + est.disk_bytes_per_param * p / 1e9
    if p:
        hours = 0.0
        if row["train_tokens"] and est.train_flops_per_param_token:
            hours += est.train_flops_per_param_token * p * row["train_tokens"] / (H100_FLOPS * MFU_TRAIN) / 3600
        if row["scored_tokens"]:
            hours += 2 * p * row["scored_tokens"] / (H100_FLOPS * MFU_SCORE) / 3600
        if row["generated_tokens"]:
            hours += _gen_hours(row["generated_tokens"], p)
        row["gpu_hours"] = hours + est.extra_gpu_hours
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
