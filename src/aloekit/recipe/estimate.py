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
    row["vllm"] = vllm_engines(plan, st)
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
    lines[-2:-2] = vllm_table(rows)
    from .plan import expected_items
    by = plan.by_name()
    for i, g in enumerate(plan.recipe.gates):
        n = expected_items(by[f"eval:{g.after}"].config, g.metric)
        lines.append(f"  gate {i}: after {g.after}: {g.metric} {g.rule()}" + (f" vs {g.vs}" if g.vs else "")
                     + f"; {g.confidence * 100:g}% interval on {n if n else 'all the'} items"
                     + f"; inconclusive -> {g.on_inconclusive}")
    return "\n".join(lines)


# --- vLLM engines: GPUs and memory per GPU ---------------------------------------------------------------------
# vLLM takes gpu_memory_utilization x the GPU's memory up front and fills what the weights and activations leave
# with KV cache; an engine whose weights do not fit in that share does not start. Rough by design, like the rest.

H100_GIB = 80.0  # the GPU memory assumed where model.vllm.gpu_memory_gib is unset (the H100 of the estimates)
ENGINE_OVERHEAD_GIB = 2.0  # activations at the profiled batch, CUDA graphs, NCCL buffers: per GPU, assumed
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}  # auto: checkpoints of this size are bf16
VLLM_ASSUMPTIONS = (f"weights = params x dtype bytes (auto: 2) / (tensor x pipeline); KV cache = "
                    f"gpu_memory_utilization x GPU memory (default {H100_GIB:g} GiB, an H100) - weights - "
                    f"{ENGINE_OVERHEAD_GIB:g} GiB activations; one stage's engines share its first GPUs")


def _vllm_dicts(node: Any, where: list) -> list[tuple[list, dict]]:
    """Every model config of a stage config that names backend vllm, with its location."""
    if isinstance(node, dict):
        found = [(where, node)] if node.get("backend") == "vllm" else []
        return found + [f for k, v in node.items() for f in _vllm_dicts(v, where + [k])]
    if isinstance(node, list):
        return [f for i, v in enumerate(node) for f in _vllm_dicts(v, where + [i])]
    return []


def vllm_engines(plan: Plan, st: Stage) -> list[dict[str, Any]]:
    """The stage's vLLM engines (equal configs are one engine: a stage loads a model config once) with the GPUs
    and memory per GPU each needs."""
    from pydantic import ValidationError

    from ..config import ModelConfig, VLLMSettings
    from .plan import _where
    by = plan.by_name()
    engines: dict[str, dict[str, Any]] = {}
    for loc, d in _vllm_dicts(st.config, []):
        try:
            mc = ModelConfig.model_validate(d)
        except ValidationError:  # the stage's own validation reports it
            continue
        name = d.get("name")
        if not name:  # "name is filled in" from the stage's model (medprompt's backend:)
            p = _root_params(plan, st)
        elif name.startswith("@"):
            p = params_of(by[name[1:]].root) if by[name[1:]].root else None
        else:
            p = params_of(plan.recipe.models.get(name, name))
        key = mc.model_dump_json(exclude={"name"}) + json.dumps(name or "")
        if key in engines:
            continue
        v = mc.vllm or VLLMSettings()
        mem = v.gpu_memory_gib or H100_GIB
        shard = v.tensor_parallel_size * v.pipeline_parallel_size
        weights = p * DTYPE_BYTES[mc.dtype] / shard / 2**30 if p else None
        budget = v.gpu_memory_utilization * mem
        engines[key] = {
            "where": _where(loc), "params": p, "gpus": v.gpus, "tensor": v.tensor_parallel_size,
            "pipeline": v.pipeline_parallel_size, "data": v.data_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization, "gpu_memory_gib": mem,
            "gpu_memory_stated": v.gpu_memory_gib is not None, "max_model_len": v.max_model_len,
            "prefix_caching": v.enable_prefix_caching, "weights_gib_per_gpu": weights,
            "kv_cache_gib_per_gpu": budget - weights - ENGINE_OVERHEAD_GIB if weights is not None else None}
    return list(engines.values())


def vllm_fit(engines: list[dict[str, Any]]) -> list[str]:
    """Why the stage's engines do not fit their GPUs (empty: they fit, as far as the estimate can tell)."""
    why = [f"{e['where']}: {e['weights_gib_per_gpu']:.1f} GiB of weights per GPU leave no KV cache in "
           f"{e['gpu_memory_utilization']:g} x {e['gpu_memory_gib']:g} GiB; raise tensor_parallel_size"
           for e in engines if e["kv_cache_gib_per_gpu"] is not None and e["kv_cache_gib_per_gpu"] <= 0]
    share = sum(e["gpu_memory_utilization"] for e in engines)
    if len(engines) > 1 and share > 1:
        why.append(f"its {len(engines)} engines ({', '.join(e['where'] for e in engines)}) are loaded together "
                   f"and ask for {share:g} of a GPU's memory; lower their gpu_memory_utilization to sum to 1 or less")
    return why


def vllm_table(rows: list[dict[str, Any]]) -> list[str]:
    """The dry run's vLLM section: per engine its GPUs (tensor x pipeline x data) and memory per GPU."""
    rows = [r for r in rows if r.get("vllm")]
    if not rows:
        return []
    lines = ["", "vLLM engines: GPUs = tensor x pipeline x data parallel; memory per GPU",
             f"{'stage':<16} {'engine':<22} {'params':>7} {'GPUs':>4} {'tp x pp x dp':>12} {'weights':>9} "
             f"{'KV cache':>9} {'of':>14}  context"]
    for r in rows:
        for e in r["vllm"]:
            w, kv = e["weights_gib_per_gpu"], e["kv_cache_gib_per_gpu"]
            of = f"{e['gpu_memory_utilization']:g}x{e['gpu_memory_gib']:g}" + ("" if e["gpu_memory_stated"] else "*")
            lines.append(f"{r['stage']:<16} {e['where']:<22} {_fmt(e['params']).replace('G', 'B'):>7} "
                         f"{e['gpus']:>4} {'%d x %d x %d' % (e['tensor'], e['pipeline'], e['data']):>12} "
                         f"{'?' if w is None else '%.1f GiB' % w:>9} {'?' if kv is None else '%.1f GiB' % kv:>9} "
                         f"{of + ' GiB':>14}  {e['max_model_len'] or 'model default'}"
                         + ("" if e["prefix_caching"] else ", no prefix caching"))
        gpus = max(e["gpus"] for e in r["vllm"])
        if r["gpu_hours"] and gpus > 1:
            lines.append(f"{'':<16} {'':<22} ~{r['gpu_hours'] / gpus:.1f} h wall on {gpus} GPU(s)")
        for why in vllm_fit(r["vllm"]):
            lines.append(f"{'':<16} DOES NOT FIT: {why}")
    lines.append(f"(* GPU memory assumed, not stated: set model.vllm.gpu_memory_gib; {VLLM_ASSUMPTIONS})")
    return lines
