"""Gates that know their noise: each decision comes from a confidence interval, not from two point estimates.

An evaluation stage writes `items.json`: for every gateable metric, the value of each item (question, attack
attempt, safe prompt) keyed by a stable id. A gate then computes an interval at its `confidence`:

- `min` / `max`: the interval of the metric itself (Wilson for 0/1 items, bootstrap otherwise);
- `max_drop` / `max_rise`: the interval of the change `value - reference`. When both models were measured on the
  same items (the usual case: same seed, same prompts) the interval is paired (Newcombe's method 10, or a paired
  bootstrap); otherwise unpaired (Newcombe's hybrid score).

Decision (the interval is two-sided, so each side is a one-sided test at (1 + confidence) / 2):
- `pass`: the whole interval is on the allowed side of the limit;
- `fail`: the whole interval is beyond the limit (the change is significant and larger than allowed);
- `inconclusive`: the interval straddles the limit; the entry says about how many items would decide it at the
  observed rates. `on_inconclusive: warn` goes on (the run is then not releasable), `stop` stops like a failure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .. import stats
from .config import Gate

ITEMS = "items.json"


# --- per-item values, written by the evaluation stage -------------------------------------------------------------

def benchmark_items(results: dict) -> dict[str, dict[str, float]]:
    """`<task>.<metric>` -> {doc id: value} from an eval run's samples; a group pools its members' items (its
    score is the size-weighted mean of theirs, i.e. the mean over the pooled items)."""
    out: dict[str, dict[str, float]] = {}
    for task, rows in (results.get("samples") or {}).items():
        for row in rows:
            for k, v in row.items():
                if k in ("acc", "acc_norm", "pct_stereotype") and isinstance(v, (int, float)):
                    out.setdefault(f"{task}.{k}", {})[f"{task}/{row['doc_id']}"] = float(v)
    for group, members in (results.get("group_subtasks") or {}).items():
        for metric in ("acc", "acc_norm"):
            parts = [out.get(f"{m}.{metric}") for m in members]
            if all(p is not None for p in parts):
                out[f"{group}.{metric}"] = {k: v for p in parts for k, v in p.items()}
    return out


def safety_items(rows: list[dict]) -> dict[str, dict[str, float]]:
    """From a red-team report: ASR (overall and per attack) and refusal rate over attack attempts, over-refusal
    over safe prompts, refusal of plain harmful requests."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["kind"] == "attack":
            key = f"{r['source']}/{r['request_id']}/{r['attack']}"
            out.setdefault("safety.asr", {})[key] = float(bool(r["success"]))
            out.setdefault(f"safety.asr.{r['attack']}", {})[key] = float(bool(r["success"]))
            out.setdefault("safety.refusal_rate", {})[key] = float(r["refusal"] == "refusal")
        elif r["kind"] == "xstest_safe":
            out.setdefault("safety.over_refusal", {})[r["request_id"]] = float(r["refusal"] == "refusal")
        elif r["kind"] == "medsafety_direct":
            out.setdefault("safety.medsafety_refusal", {})[r["request_id"]] = float(r["refusal"] == "refusal")
    return out


def items_from_outputs(eval_dir: Path) -> dict[str, dict[str, float]]:
    """Every gateable metric's per-item values, from an evaluation stage's samples and red-team report."""
    items: dict[str, dict[str, float]] = {}
    res = eval_dir / "benchmarks" / "results.json"
    if res.is_file():
        results = json.loads(res.read_text())
        results["samples"] = {
            p.stem[len("samples_"):]: [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
            for p in sorted((eval_dir / "benchmarks").glob("samples_*.jsonl"))}
        items.update(benchmark_items(results))
    report = eval_dir / "safety" / "report.jsonl"
    if report.is_file():
        items.update(safety_items([json.loads(x) for x in report.read_text().splitlines() if x.strip()]))
    return items


def load_items(eval_dir: Path | None) -> dict[str, dict[str, float]]:
    """An evaluation stage's items.json; for a stage finished before items.json existed, the same values from its
    outputs (so old runs keep their gates decidable)."""
    if eval_dir is None:
        return {}
    f = eval_dir / ITEMS
    return json.loads(f.read_text()) if f.is_file() else items_from_outputs(eval_dir)


# --- the decision -----------------------------------------------------------------------------------------------

def _binary(values) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def interval(new: dict[str, float], ref: dict[str, float] | None, confidence: float,
             seed: int = 0) -> dict[str, Any]:
    """The interval of the metric (ref None) or of its change new - ref, with how it was computed."""
    if ref is None:
        vals = list(new.values())
        if _binary(vals):
            lo, hi = stats.wilson(int(sum(vals)), len(vals), confidence)
            method = "Wilson"
        else:
            lo, hi = stats.bootstrap_mean(vals, confidence, seed)
            method = "bootstrap"
        return {"interval": [lo, hi], "method": method, "n": len(vals), "paired": None}
    paired = set(new) == set(ref)
    if paired:
        ids = sorted(new)
        a, b = [ref[i] for i in ids], [new[i] for i in ids]
        if _binary(a + b):
            lo, hi = stats.newcombe_paired(*stats.paired_table(a, b), confidence=confidence)
            method = "Newcombe paired (method 10)"
        else:
            lo, hi = stats.bootstrap_paired_diff(a, b, confidence, seed)
            method = "paired bootstrap"
    else:
        a, b = list(ref.values()), list(new.values())
        if _binary(a + b):
            lo, hi = stats.newcombe_unpaired(int(sum(a)), len(a), int(sum(b)), len(b), confidence)
            method = "Newcombe hybrid score (unpaired)"
        else:
            ra, rb = stats.bootstrap_mean(a, confidence, seed), stats.bootstrap_mean(b, confidence, seed + 1)
            d = sum(b) / len(b) - sum(a) / len(a)
            lo = d - math.hypot(sum(a) / len(a) - ra[0], rb[1] - sum(b) / len(b))
            hi = d + math.hypot(ra[1] - sum(a) / len(a), sum(b) / len(b) - rb[0])
            method = "bootstrap (unpaired)"
    return {"interval": [lo, hi], "method": method, "n": len(new), "n_reference": len(ref), "paired": paired}


def limit_of(g: Gate) -> tuple[float, str]:
    """(limit, side): the quantity (the value, or the change value - reference) must stay `side` of `limit`."""
    if g.min is not None:
        return g.min, "above"
    if g.max is not None:
        return g.max, "below"
    if g.max_drop is not None:
        return -g.max_drop, "above"
    return g.max_rise, "below"


def decide(lo: float, hi: float, limit: float, side: str) -> str:
    eps = 1e-12
    if side == "above":
        return "pass" if lo >= limit - eps else "fail" if hi < limit - eps else "inconclusive"
    return "pass" if hi <= limit + eps else "fail" if lo > limit + eps else "inconclusive"


def needed_items(n: int, estimate: float, lo: float, hi: float, limit: float) -> int | None:
    """About how many items would decide the gate if the observed rates held (the interval narrows as
    1/sqrt(n)); None when the estimate sits on the limit (no n decides it)."""
    gap = abs(estimate - limit)
    if gap < 1e-9:
        return None
    half = (hi - estimate) if estimate < limit else (estimate - lo)
    return max(n + 1, math.ceil(n * (half / gap) ** 2))


def check(g: Gate, value: float | None, reference: float | None, new_items: dict[str, float] | None,
          ref_items: dict[str, float] | None) -> dict[str, Any]:
    """One gate's entry: decision, interval, n, message."""
    relative = g.relative
    entry: dict[str, Any] = {"confidence": g.confidence, "on_inconclusive": g.on_inconclusive, "interval": None,
                             "n": None, "needed_n": None}
    if value is None:
        return {**entry, "decision": "fail", "message": f"{g.metric} was not measured for {g.after}"}
    if relative and reference is None:
        return {**entry, "decision": "fail", "message": f"{g.metric} was not measured for the reference"}
    if not new_items or (relative and not ref_items):
        return {**entry, "decision": "inconclusive",
                "message": f"{g.metric}: no per-item values ({ITEMS}) to compute an interval from"}
    iv = interval(new_items, ref_items if relative else None, g.confidence)
    lo, hi = iv["interval"]
    estimate = (value - reference) if relative else value
    limit, side = limit_of(g)
    decision = decide(lo, hi, limit, side)
    rule = g.rule()
    pct = g.confidence * 100
    what = "change" if relative else "value"
    shown = (f"{reference:.4f} -> {value:.4f} ({estimate:+.4f})" if relative else f"{value:.4f}")
    msg = (f"{g.metric} {shown}, {pct:g}% interval of the {what} [{lo:+.4f}, {hi:+.4f}] "
           f"(n={iv['n']}, {iv['method']}): ")
    if decision == "pass":
        msg += f"holds {rule}"
    elif decision == "fail":
        msg += f"beyond {rule}"
    else:
        need = needed_items(iv["n"], estimate, lo, hi, limit)
        entry["needed_n"] = need
        msg += (f"cannot tell against {rule}; about {need} items would decide it at these rates" if need
                else f"cannot tell against {rule}; the estimate sits on the limit")
    return {**entry, **iv, "estimate": estimate, "decision": decision, "message": msg}


# --- dry run: can the gate ever be decided with its n? ---------------------------------------------------------------

def decidable(g: Gate, n: int) -> str | None:
    """None if some outcome over n items passes the gate and some other fails it; else why not."""
    c = g.confidence
    if g.relative:  # the extreme paired outcomes: every item flips, all the same way
        up, down = stats.newcombe_paired(0, 0, n, 0, c), stats.newcombe_paired(0, n, 0, 0, c)
        outcome = "a change of every item"
    else:
        up, down = stats.wilson(n, n, c), stats.wilson(0, n, c)
        outcome = "a perfect score"
    limit, side = limit_of(g)
    good, bad = (up, down) if side == "above" else (down, up)
    if decide(*good, limit, side) != "pass":
        return (f"with {n} items even {outcome} has the {c * 100:g}% interval [{good[0]:+.3f}, {good[1]:+.3f}], "
                f"which never clears {g.rule()}")
    # a limit at the end of the scale (max_rise 1, min 0) cannot fail by construction: that is the rule, not n
    inside = -1 < limit < 1 if g.relative else 0 < limit < 1
    if inside and decide(*bad, limit, side) != "fail":
        return (f"with {n} items even the worst outcome has the {c * 100:g}% interval [{bad[0]:+.3f}, "
                f"{bad[1]:+.3f}], which never fails {g.rule()}")
    return None


def min_items(g: Gate, upto: int = 1_000_000) -> int | None:
    """The smallest n at which the gate can be decided at all (for the dry run's error message)."""
    n = 1
    while n <= upto and decidable(g, n) is not None:
        n *= 2
    if n > upto:
        return None
    lo = n // 2 + 1
    while lo < n:
        mid = (lo + n) // 2
        if decidable(g, mid) is None:
            n = mid
        else:
            lo = mid + 1
    return n
