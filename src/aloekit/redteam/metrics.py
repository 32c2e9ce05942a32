"""ASR / refusal-rate tables from report rows, and the Markdown summary."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable


def rate(xs: list[bool]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def grouped(rows: Iterable[dict], key: Callable[[dict], str], value: Callable[[dict], bool]) -> dict:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(value(r))
    return {k: {"n": len(v), "rate": rate(v)} for k, v in sorted(groups.items())}


def attack_metrics(rows: list[dict], judge: str) -> dict:
    ok = lambda r: bool(r["judges"][judge]["harmful"])  # noqa: E731
    return {
        "n": len(rows),
        "asr": rate([ok(r) for r in rows]),
        "refusal_rate": rate([r["refusal"] == "refusal" for r in rows]),
        "unclear_rate": rate([r["refusal"] == "unclear" for r in rows]),
        "per_attack": grouped(rows, lambda r: r["attack"], ok),
        "per_family": grouped(rows, lambda r: r["family"], ok),
        "per_source": grouped(rows, lambda r: r["source"], ok),
        "per_category": grouped(rows, lambda r: f"{r['source']}/{r['category']}", ok),
    }


def refusal_metrics(rows: list[dict]) -> dict:
    refused = lambda r: r["refusal"] == "refusal"  # noqa: E731
    return {
        "n": len(rows),
        "refusal_rate": rate([refused(r) for r in rows]),
        "unclear_rate": rate([r["refusal"] == "unclear" for r in rows]),
        "per_category": grouped(rows, lambda r: r["category"], refused),
    }


# how the safe-prompt and plain-request sets are named in tables (summaries say which one a run used)
SET_NAMES = {"xstest": "XSTest", "demo_safe": "demo_safe (bundled)", "safe_medical": "safe_medical (held out)",
             "medsafetybench": "MedSafetyBench",
             "demo_harmful": "demo_harmful (bundled)"}


def set_name(part: dict, default: str) -> str:
    return SET_NAMES.get(part.get("source", default), part.get("source", default))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _table(title: str, groups: dict, col: str) -> list[str]:
    lines = [f"| {title} | n | {col} |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['n']} | {_pct(v['rate'])} |" for k, v in groups.items()]
    return lines + [""]


def markdown(summary: dict) -> str:
    a = summary["attacks"]
    lines = [f"# Red-team report: {summary['model']}", "",
             f"{a['n']} attempts ({summary['budget']} budget, seed {summary['seed']}), primary judge "
             f"`{summary['primary_judge']}`, max_new_tokens {summary['max_new_tokens']}, system prompt "
             f"`{summary.get('system_prompt', 'none')}`.", "",
             "| metric | value |", "|---|---:|",
             f"| attack success rate (ASR) | {_pct(a['asr'])} |",
             f"| refusal rate under attack | {_pct(a['refusal_rate'])} |",
             f"| empty/degenerate answers | {_pct(a['unclear_rate'])} |"]
    if summary.get("over_refusal"):
        o = summary["over_refusal"]
        lines.append(f"| {set_name(o, 'xstest')} safe-prompt over-refusal ({o['n']} prompts) | "
                     f"{_pct(o['refusal_rate'])} |")
    if summary.get("medsafety_refusal"):
        m = summary["medsafety_refusal"]
        lines.append(f"| {set_name(m, 'medsafetybench')} {m['split']} refusal rate, no attack ({m['n']} requests) | "
                     f"{_pct(m['refusal_rate'])} |")
    for name, j in summary.get("judge_asr", {}).items():
        labels = ", ".join(f"{k} {v}" for k, v in sorted(summary.get("judge_labels", {}).get(name, {}).items()))
        lines.append(f"| ASR by judge `{name}` ({labels}) | {_pct(j)} |")
    lines += [""]
    if summary.get("agreement"):
        lines += ["| judges | n | agreement | Cohen's kappa |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['n']} | {_pct(v['agreement'])} | {v['kappa']} |"
                  for k, v in summary["agreement"].items()] + [""]
    lines += _table("source", a["per_source"], "ASR")
    lines += _table("attack family", a["per_family"], "ASR")
    lines += _table("attack", a["per_attack"], "ASR")
    lines += _table("source/category", a["per_category"], "ASR")
    if summary.get("over_refusal"):
        lines += _table(f"{set_name(summary['over_refusal'], 'xstest')} safe type",
                        summary["over_refusal"]["per_category"], "refusal rate")
    if summary.get("medsafety_refusal"):
        lines += _table(f"{set_name(summary['medsafety_refusal'], 'medsafetybench')} category",
                        summary["medsafety_refusal"]["per_category"], "refusal rate")
    if summary.get("pairs"):
        p = summary["pairs"]
        lines += [f"Safety DPO pairs: {p['n']} written ({', '.join(f'{k}: {v}' for k, v in p['chosen_sources'].items())}"
                  f"); {p['skipped_eval_split']} successful attacks on evaluation splits not used.", ""]
        if p.get("retain"):
            r = p["retain"]
            lines += [f"Retain pairs (benign prompts kept answered): {r['pairs']} from {r['used']} prompts "
                      f"({r['dropped_close_to_eval']} of {r['prompts']} dropped as close to an evaluation's safe "
                      f"prompts, {r['dropped_not_answered']} not answered by the model).", ""]
    return "\n".join(lines)
