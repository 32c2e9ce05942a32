"""`run(cfg)`: load the benchmarks, score them, write results.json + samples_<task>.jsonl + a Markdown table.

With an `answerer` (`aloekit eval --strategy`: a medprompt strategy, medprompt/runner.py StrategyAnswerer), each
question is answered by it instead of a scoring mode; accuracy goes through the same metrics and tokens/question
are added to each task's results. This package does not import medprompt: the command line composes the two."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence

from pydantic import Field

from .. import console as con
from ..config import ModelConfig, SamplingConfig, StrictModel
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..prompts import resolve_system_prompt, system_prompt_label
from . import metrics as M
from . import openended as O
from .data import LETTERS
from .scoring import generate_answers, parse_answer, score_letter, score_loglik
from .tasks import GROUPS, OPEN_TASKS, TASKS, data_root, expand, present, sources

Scoring = Literal["loglik", "letter", "generate"]


class EvalConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    tasks: list[str] = Field(default_factory=lambda: ["multimedqa"])
    scoring: Scoring = "loglik"
    limit: int | None = Field(None, ge=1, description="first N questions of each task, as lm-eval's --limit")
    data_dir: str | None = None
    hub: bool = False  # load from the Hugging Face hub instead of --data-dir
    skip_bad_rows: bool = False
    max_new_tokens: int = Field(256, ge=1, description="generate scoring only")
    seed: int = 0
    output: str | None = None
    # a registered name (aloe_medical) or text: letter and generate scoring, strategies and open-ended answers
    # use it; loglik scoring never does (lm-eval parity), and results.json says which prompt each task used
    system_prompt: str | None = None
    # open-ended tasks (open_<benchmark>, eval/openended.py): LLM judges (two give Cohen's kappa), an optional LLM
    # rewriter (default: rules), embedding similarity next to ROUGE-L, retries of a judge reply that is not JSON
    judges: list[ModelConfig] = Field(default_factory=list, max_length=2)
    rewriter: ModelConfig | None = None
    similarity: bool = False
    judge_retries: int = Field(2, ge=0)
    # "generate" | "likelihood", one for all judges or one per judge, comma-separated ("generate,likelihood")
    judge_mode: str = "generate"
    calibrate: bool = True  # also score each judge on the bundled labelled answers (resources/judge_calibration)


# tokens/question etc. of a strategy run, added to each task's results as "<key>,none"
COMPUTE_KEYS = ("generated_tokens_per_question", "prompt_tokens_per_question", "members_per_question",
                "seconds_per_question")


class Answerer(Protocol):
    """Answers single-choice questions itself (a strategy): `answer` returns one dict per doc with the option
    letter in "pred" (None: no answer), and a summary with the COMPUTE_KEYS."""

    name: str

    def answer(self, backend, docs: Sequence, task: str) -> tuple[list[dict], dict]: ...

    def inputs(self) -> dict[str, str]: ...  # files it reads, for the run manifest

    def record(self) -> dict[str, Any]: ...  # what results.json keeps under "strategy" (name, params, ...)


def run(cfg: EvalConfig, backend=None, answerer: Answerer | None = None) -> dict[str, Any]:
    """Evaluate and return the results dict (also written to cfg.output/results.json when output is set)."""
    names, groups = expand(cfg.tasks)
    strategy = answerer.name if answerer is not None else None
    if answerer is not None:
        not_mcq = [n for n in names if n in OPEN_TASKS or TASKS[n].kind != "mcq"]
        if not_mcq:
            raise UserError(f"--strategy {strategy}: strategies answer single-choice questions; "
                            f"{', '.join(not_mcq)} are not (drop them, or score them without --strategy)")
    system = resolve_system_prompt(cfg.system_prompt, "system_prompt")
    open_names = [n for n in names if n in OPEN_TASKS]
    if (cfg.judges or cfg.rewriter) and not open_names:
        raise UserError("--judge/--rewriter: only open-ended tasks (open_<benchmark>) are judged; add one to --tasks")
    root = data_root(sources(names), cfg.data_dir, cfg.hub)
    names, groups, absent = present(cfg.tasks, root)
    for name, why in absent.items():  # a partial group's member without its file (aloe_medical)
        owners = ", ".join(g for g in groups if name in GROUPS[g])
        con.note(f"[yellow]{name}: skipped ({why}); {owners} averaged without it[/yellow]")
    t0 = time.time()

    loaded = {}
    for name in names:  # load everything first: a bad file fails before minutes of scoring
        if name in OPEN_TASKS:  # whole files: the rewrite filter drops some, --limit counts the questions kept
            loaded[name] = _load_open(name, root, cfg.skip_bad_rows)
        else:
            loaded[name] = TASKS[name].load(root, cfg.skip_bad_rows, cfg.limit)
        if loaded[name].skipped:
            con.note(f"[yellow]{name}: skipped {loaded[name].skipped} bad row(s), first at "
                     f"{loaded[name].skipped_where[0]}[/yellow]")
    t_load_data = time.time() - t0

    t1 = time.time()
    from ..backends import load_backend
    if backend is None:
        backend = load_backend(eval_model_config(cfg.model))
    modes = _judge_modes(cfg.judge_mode, len(cfg.judges))
    judges = [O.Judge(backend if _same(j, cfg.model) else load_backend(eval_model_config(j)), j,
                      cfg.judge_retries, cfg.seed, label=_label(j, cfg.judges[:i], modes[i]), mode=modes[i])
              for i, j in enumerate(cfg.judges)]
    for j in judges:
        j.probe()
    rewriter = None
    if cfg.rewriter is not None:
        rewriter = backend if _same(cfg.rewriter, cfg.model) else load_backend(eval_model_config(cfg.rewriter))
    t_load_model = time.time() - t1
    # after the models: a judge endpoint that cannot be reached fails before the run directory is written
    run_dir = None
    if cfg.output:
        from ..rundir import RunDir
        inputs = {n: r.source for n, r in loaded.items() if Path(r.source).exists()}
        if answerer is not None:
            inputs.update(answerer.inputs())
        run_dir = RunDir(cfg.output, "eval", cfg, seed=cfg.seed, inputs=inputs)
    open_info: dict[str, Any] = {}

    results: dict[str, Any] = {}
    samples: dict[str, list[dict]] = {}
    configs: dict[str, Any] = {}
    subjects: dict[str, Any] = {}
    n_samples: dict[str, Any] = {}
    timings: dict[str, float] = {}
    strategy_summaries: dict[str, dict] = {}
    for name in names:
        rows = loaded[name]
        if name in OPEN_TASKS:
            t = time.time()
            results[name], samples[name], open_info[name] = O.run_task(
                name, rows.docs, backend, O.model_id(cfg.model), judges, limit=cfg.limit,
                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, system=system, use_similarity=cfg.similarity,
                rewriter=rewriter, rewriter_id=O.model_id(cfg.rewriter) if cfg.rewriter else "",
                out_dir=Path(cfg.output) if cfg.output else None)
            timings[name] = round(time.time() - t, 3)
            subjects[name] = {}
            rw = open_info[name]["rewrite"]
            n_samples[name] = {"effective": rw["kept"], "skipped": rows.skipped, "dropped_by_rewrite": rw["dropped"]}
            configs[name] = {"task": name, "title": f"open-ended {', '.join(OPEN_TASKS[name])}", "kind": "open",
                             "scoring": "open-ended", "source": rows.source, "sources": OPEN_TASKS[name],
                             "system_prompt": system_prompt_label(cfg.system_prompt),
                             "judges": [j.label for j in judges], "rewriter": rw["rewriter"] or "rules",
                             "prompt": O.ANSWER_INSTRUCTION}
            continue
        task = TASKS[name]
        docs = rows.docs
        scoring = cfg.scoring if cfg.scoring in task.modes else "loglik"
        if answerer is not None:
            scoring = "strategy"
        elif scoring != cfg.scoring:
            con.note(f"{name}: scored with loglik ({cfg.scoring} does not apply to {task.kind})")
        t = time.time()
        texts: list[str | None] = [None] * len(docs)
        answers: list[dict | None] = [None] * len(docs)  # the medprompt engine's result per question
        if scoring == "strategy":
            answers, strategy_summaries[name] = answerer.answer(backend, docs, name)
            scores = [None] * len(docs)
            preds = [LETTERS.index(a["pred"]) if a["pred"] else -1 for a in answers]
        elif scoring == "loglik":
            scores = score_loglik(backend, docs, task.delimiter, name)
            preds = [M.argmax(s) for s in scores]
        elif scoring == "letter":
            scores = score_letter(backend, docs, name, system)
            preds = [M.argmax(s) for s in scores]
        else:
            sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, seed=cfg.seed)
            texts = generate_answers(backend, docs, sampling, name, system)
            scores = [None] * len(docs)
            preds = [parse_answer(x, len(d.options)) for x, d in zip(texts, docs)]
        timings[name] = round(time.time() - t, 3)

        per = [M.per_doc(task.kind, scoring, d, s, p) for d, s, p in zip(docs, scores, preds)]
        res = {"alias": name, **M.aggregate(task.kind, docs, per)}
        if scoring == "strategy":
            res.update({f"{k},none": strategy_summaries[name][k] for k in COMPUTE_KEYS})
        res["baselines"] = M.baselines(task.kind, docs)
        results[name] = res
        subjects[name] = M.by_subject(task.kind, docs, per)
        n_samples[name] = {"effective": len(docs), "skipped": rows.skipped}
        configs[name] = {"task": name, "title": task.title, "kind": task.kind, "scoring": scoring,
                         "source": rows.source, "target_delimiter": task.delimiter,
                         "prompt": "loglik context, e.g. " + repr(docs[0].context[-200:])
                         if scoring == "loglik" else f"chat template; {strategy or scoring}",
                         # loglik scores raw text (lm-eval parity); a strategy states its own prompt in "strategy"
                         "system_prompt": "none" if scoring == "loglik" else
                         "see strategy" if scoring == "strategy" else system_prompt_label(cfg.system_prompt)}
        samples[name] = [_sample(*row) for row in zip(docs, scores, preds, texts, per, answers)]

    for g, members in groups.items():
        results[g] = {"alias": g, **M.group_metrics([(results[m], n_samples[m]["effective"]) for m in members])}

    out = {
        "results": results,
        "groups": {g: results[g] for g in groups},
        "group_subtasks": dict(groups),
        "tasks_skipped": absent,  # members of a partial group whose files were absent, and why
        "subjects": subjects,
        "n-samples": n_samples,
        "configs": configs,
        "config": {"model": cfg.model.name, "backend": cfg.model.backend,
                   "dtype": str(getattr(backend, "dtype", cfg.model.dtype)).replace("torch.", ""),
                   "batch_size": cfg.model.batch_size, "scoring": "strategy" if strategy else cfg.scoring,
                   "strategy": strategy, "limit": cfg.limit, "seed": cfg.seed,
                   "data_dir": "hub" if cfg.hub else str(root) if root else "none (bundled tasks only)"},
        "versions": _versions(),
        "timings_s": {"load_data": round(t_load_data, 3), "load_model": round(t_load_model, 3),
                      "scoring": timings, "total": round(time.time() - t0, 3)},
    }
    if answerer is not None:
        out["strategy"] = {**answerer.record(), "summaries": strategy_summaries}
    if open_names:
        out["open_ended"] = {"tasks": open_info, "answer_instruction": O.ANSWER_INSTRUCTION,
                             "judge_prompt": {"system": O.JUDGE_RUBRIC, "user": O.JUDGE_TEMPLATE,
                                              "reply_opened_with": O.PREFILL},
                             "judges": [{"label": j.label, "model": j.cfg.model_dump(exclude={"api_key_env"}),
                                         "reply_opened": j.prefill, "retries": j.retries, "mode": j.mode}
                                        for j in judges]}
        if judges and cfg.calibrate:
            cache = O.cache_for(Path(cfg.output) if cfg.output else None, "judge")
            out["open_ended"]["calibration"] = {j.label: O.calibrate(j, cache) for j in judges}
    table = markdown(out)
    if run_dir is not None:
        for name in names:
            atomic_write_jsonl(run_dir.output(f"samples_{name}", f"samples_{name}.jsonl"), samples[name])
        atomic_write_json(run_dir.output("results", "results.json"), out)
        atomic_write_text(run_dir.output("table", "results.md"), table)
        run_dir.finish(**{f"{n}/{k.split(',')[0]}": v for n in names for k, v in results[n].items()
                          if k.endswith(",none") and "_stderr" not in k}, metrics=benchmark_metrics(out))
    out["samples"] = samples
    out["markdown"] = table
    return out


def benchmark_metrics(results: dict) -> dict[str, float]:
    """The run's metrics map: "<task or group>.<metric>" for every lm-eval metric (stderrs left out)."""
    out = {}
    for task, res in results["results"].items():
        for k, v in res.items():
            if k.endswith(",none") and "_stderr" not in k and isinstance(v, (int, float)):
                out[f"{task}.{k.split(',')[0]}"] = float(v)
    return out


def eval_model_config(model: ModelConfig) -> ModelConfig:
    """On CPU, `auto` means float32 for evaluation: bf16 matmuls round differently with the batch shape, which
    flips ~1 answer in 60 between batch sizes, and fp32 matches lm-eval's numbers exactly."""
    if model.dtype == "auto" and model.backend == "hf":
        from ..backends import resolve_device
        if resolve_device(model.device) == "cpu":
            return model.model_copy(update={"dtype": "float32"})
    return model


def _sample(doc, scores, pred, text, per, answer=None) -> dict[str, Any]:
    row: dict[str, Any] = {"doc_id": doc.doc_id, "where": doc.where, "subject": doc.subject,
                           "gold": doc.gold if doc.labels is None else doc.labels, "pred": pred}
    if scores is not None:
        row["scores"] = [round(float(s), 6) for s in scores]
    if text is not None:
        row["response"] = text
    row.update({k: v for k, v in per.items()})
    if answer is not None:  # a strategy's votes, chains, examples used and tokens (gold/pred stay indices)
        row.update({k: v for k, v in answer.items() if k not in ("doc_id", "gold", "pred", "correct")})
    return row


def _versions() -> dict[str, str]:
    from ..rundir import versions
    return versions()


def _fmt(v: Any, percent: bool = True) -> str:
    if v is None:
        return "-"
    if not isinstance(v, float):
        return str(v)
    return f"{100 * v:.2f}" if percent else f"{v:.3f}"


def markdown(out: dict[str, Any]) -> str:
    """Tasks then groups, as percentages, with baselines; then each task's per-subject breakdown."""
    lines = ["| task | n | metric | value (% for acc) | ± stderr | chance % | majority % |", "|---|---:|---|---:|---:|---:|---:|"]
    for name, res in out["results"].items():
        n = out["n-samples"].get(name, {}).get("effective", "")
        if name in out["groups"]:
            n = sum(out["n-samples"][m]["effective"] for m in out["group_subtasks"][name])
        base = res.get("baselines", {})
        for key, v in res.items():
            if not key.endswith(",none") or "_stderr" in key:
                continue
            metric = key.split(",")[0]
            err = res.get(f"{metric}_stderr,none")
            pct = metric.startswith(("acc", "pct_"))  # bias scores (-1..1) and likelihood gaps stay raw
            lines.append(f"| {name} | {n} | {metric} | {_fmt(v, pct)} | {_fmt(err, pct)} | "
                         f"{_fmt(base.get('chance'))} | {_fmt(base.get('majority'))} |")
            name, n, base = "", "", {}
        if res.get("unparsed") is not None:
            lines.append(f"| | | unparsed answers | {res['unparsed']} | | | |")
    for name, subs in out["subjects"].items():
        if not subs:
            continue
        metric = next(k for k in next(iter(subs.values())) if k != "n")
        lines += ["", f"**{name}** by subject", "", f"| subject | n | {metric} |", "|---|---:|---:|"]
        lines += [f"| {s} | {v['n']} | {_fmt(v[metric])} |" for s, v in subs.items()]
    return "\n".join(lines) + "\n"


def check_output(path: str | None) -> None:
    if path and Path(path).exists() and not Path(path).is_dir():
        raise UserError(f"--output {path}: exists and is not a directory")


def _load_open(name: str, root, skip_bad_rows: bool):
    """An open task's questions: its benchmarks' default splits, concatenated (doc ids renumbered)."""
    from ..benchmarks import Rows
    parts = [TASKS[m].load(root, skip_bad_rows, None) for m in OPEN_TASKS[name]]
    docs = [d for p in parts for d in p.docs]
    for i, d in enumerate(docs):
        d.doc_id = i
    return Rows(docs, ", ".join(p.source for p in parts), sum(p.skipped for p in parts),
                [w for p in parts for w in p.skipped_where])


def _same(a: ModelConfig, b: ModelConfig) -> bool:
    """A judge or rewriter that is the evaluated model reuses its loaded backend."""
    return (a.name, a.backend, a.base_url, a.dtype, a.device) == (b.name, b.backend, b.base_url, b.dtype, b.device)


def _label(j: ModelConfig, before: list[ModelConfig], mode: str) -> str:
    label = O.model_id(j) + ("" if mode == "generate" else f" ({mode})")
    return label + (f"#{len(before) + 1}" if any(O.model_id(b) == O.model_id(j) for b in before) and mode ==
                    "generate" else "")


def _judge_modes(value: str, n: int) -> list[str]:
    modes = [m.strip() for m in value.split(",") if m.strip()] or ["generate"]
    bad = [m for m in modes if m not in ("generate", "likelihood")]
    if bad or len(modes) not in (1, n):
        raise UserError(f"judge_mode {value}: give generate or likelihood, once for all judges or once per judge "
                        f"({n} judge(s))")
    return modes * n if len(modes) == 1 else modes
