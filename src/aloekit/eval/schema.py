"""lm-eval 0.4's file schema: what `results.json` and `samples_<task>.jsonl` hold besides aloekit's own fields.

Tools built for lm-eval (its table printer, its W&B logger, leaderboards, `datasets.load_dataset("json")`) read
these files, so every key lm-eval 0.4.13 writes is here, computed the way lm-eval computes it: hashes are sha256 of
the same strings (`doc_hash` of the doc dumped with indent 2, `prompt_hash` of the first request's first argument,
`target_hash` of str(target); `task_hashes` of their concatenation), and a sample row is written as lm-eval's
EvaluationTracker writes it (arguments as `gen_args_<i>.arg_<j>`, responses and target as strings). lm-eval
itself is not needed: it is an optional extra.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from typing import Any, Sequence

# the version results.json gives each aloekit task (lm-eval: a task's `metadata.version`); raise it when a task's
# prompt or metric changes, so numbers from before and after are not compared
TASK_VERSION = 1.0

# lm-eval's direction of each metric aloekit reports (None: neither, e.g. bias scores best at 0)
HIGHER_IS_BETTER = {
    "acc": True, "acc_norm": True, "acc_macro": True, "acc_norm_macro": True, "acc_ambig": True,
    "acc_disambig": True, "acc_lenient": True, "judge_kappa": True, "rouge_l": True, "rouge_l_recall": True,
    "similarity": True, "bias_score_ambig": None, "bias_score_disambig": None, "pct_stereotype": False,
    "likelihood_diff": False, "pct_refused": False, "pct_unparsed": False, "generated_tokens_per_question": False,
    "prompt_tokens_per_question": False, "members_per_question": False, "seconds_per_question": False,
}


def hash_string(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def metric_keys(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, metric, filter) of each metric value in a results entry ("acc,none"), stderrs left out."""
    out = []
    for key in res:
        metric, sep, filt = key.partition(",")
        if sep and not metric.endswith("_stderr"):
            out.append((key, metric, filt))
    return out


def higher_is_better(res: dict[str, Any]) -> dict[str, bool | None]:
    return {m: HIGHER_IS_BETTER.get(m) for _, m, _ in metric_keys(res)}


def doc_of(question) -> dict[str, Any]:
    """A Question as the `doc` of a sample row: its content, without the position and the file path (so the
    doc_hash of a question does not depend on where the file lives)."""
    return {k: v for k, v in dataclasses.asdict(question).items()
            if k not in ("doc_id", "where") and v not in ("", None, {}, [])}


def sample_fields(doc: dict[str, Any], target: Any, arguments: Sequence[Sequence[Any]], resps: list,
                  filtered_resps: list, metrics: Sequence[str], filter_name: str = "none") -> dict[str, Any]:
    """lm-eval's fields of one sample row, as its EvaluationTracker writes them. `arguments`: one tuple per request
    (multiple choice: (context, " option") per option; generation: (prompt, generation kwargs)); `resps`: per
    request, its responses (a loglikelihood response is [logprob, is_greedy]); `filtered_resps`: per request, the
    filtered response."""
    first = arguments[0][0] if arguments and arguments[0] else ""
    row = {"doc": doc, "target": str(target), "arguments": arguments, "resps": resps,
           "filtered_resps": filtered_resps, "filter": filter_name, "metrics": list(metrics),
           "doc_hash": hash_string(json.dumps(doc, indent=2, default=str, ensure_ascii=False)),
           "prompt_hash": hash_string(first if isinstance(first, str) else json.dumps(first, ensure_ascii=False)),
           "target_hash": hash_string(str(target))}
    return written(row)


def written(row: dict[str, Any]) -> dict[str, Any]:
    """A sample row in lm-eval's file form (the form `datasets` can load): arguments keyed gen_args_<i> ->
    arg_<j>, responses as (nested lists of) strings, target as a string. Idempotent."""
    out = dict(row)
    args = out.get("arguments")
    if isinstance(args, (list, tuple)):
        out["arguments"] = {f"gen_args_{i}": {f"arg_{j}": a for j, a in enumerate(req)} for i, req in enumerate(args)}
    for key in ("resps", "filtered_resps"):
        if key in out:
            out[key] = _strings(out[key])
    if "target" in out:
        out["target"] = str(out["target"])
    return out


def _strings(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_strings(v) for v in x]
    return str(x)


def task_hashes(samples: dict[str, list[dict]]) -> dict[str, str]:
    return {task: hash_string("".join(r["doc_hash"] + r["prompt_hash"] + r["target_hash"] for r in rows))
            for task, rows in samples.items() if rows and all("doc_hash" in r for r in rows)}


def sanitize_model_name(name: str) -> str:
    """A model name as lm-eval makes it a folder name."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


@functools.cache
def env_info() -> dict[str, Any]:
    """lm-eval's environment keys. torch's environment report takes about a second: once per process."""
    from importlib.metadata import PackageNotFoundError, version

    from torch.utils.collect_env import get_pretty_env_info

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "N/A"
    try:
        pretty = get_pretty_env_info()
    except Exception as err:  # noqa: BLE001 - a report of the machine: whatever fails in it is recorded, not fatal
        pretty = str(err)
    return {"pretty_env_info": pretty, "transformers_version": pkg("transformers"), "lm_eval_version": pkg("lm_eval"),
            "upper_git_hash": None}


def tokenizer_info(backend) -> dict[str, Any]:
    """lm-eval's tokenizer keys, from a backend that holds a transformers tokenizer (None otherwise)."""
    tok = getattr(backend, "tok", None) or getattr(backend, "tokenizer", None)
    info: dict[str, Any] = {"tokenizer_pad_token": None, "tokenizer_eos_token": None, "tokenizer_bos_token": None,
                            "eot_token_id": None, "max_length": getattr(backend, "max_length", None)}
    if tok is not None and hasattr(tok, "eos_token_id"):
        info.update({f"tokenizer_{k}_token": [getattr(tok, f"{k}_token"), str(getattr(tok, f"{k}_token_id"))]
                     for k in ("pad", "eos", "bos")})
        info["eot_token_id"] = tok.eos_token_id
    return info


def chat_template(backend) -> str | None:
    tok = getattr(backend, "tok", None) or getattr(backend, "tokenizer", None)
    template = getattr(tok, "chat_template", None)
    return template if isinstance(template, str) else None


def num_parameters(backend) -> int | None:
    model = getattr(backend, "model", None)
    params = getattr(model, "parameters", None)
    return sum(p.numel() for p in params()) if callable(params) else None
