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
from . import harness as H
from . import metrics as M
from . import openended as O
from . import schema as S
from .data import LETTERS, listed
from .scoring import generate_answers, generate_chat, letter_prompt, parse_answer, score_letter, score_loglik
from .tasks import GROUPS, OPEN_TASKS, TASKS, data_root, expand, present, sources
from .tracking import check as check_trackers
from .tracking import log_results

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
    # lm-eval tasks (eval/harness.py): model arguments of the lm-eval model beyond --model/--dtype/--batch-size/--seed
    lm_eval_model_args: dict[str, Any] = Field(default_factory=dict)
    # experiment trackers the finished run is logged to (tracking.py): metrics, samples, results.json
    log_to: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)


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


def run(cfg: EvalConfig, backend=None, answerer: Answerer | None = None,
        lm_eval_model: H.LMEvalModel | None = None) -> dict[str, Any]:
    """Evaluate and return the results dict (also written to cfg.output/results.json when output is set).
    `--tasks` names that are not aloekit's run through lm-eval with `lm_eval_model` (eval/harness.py)."""
    ours, theirs = H.split(cfg.tasks)
    bos = cfg.lm_eval_model_args.get("add_bos_token")
    if bos is not None and cfg.model.add_bos_token is None:
        # one BOS policy per run: the backend that scores aloekit's tasks (and packs lm-eval's) is told it too
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"add_bos_token": bos})})
    strategy = answerer.name if answerer is not None else None
    H.check(theirs, cfg.model, cfg.lm_eval_model_args, strategy, lm_eval_model)
    names, groups = expand(ours) if ours else ([], {})
    check_trackers(cfg.log_to)
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
    names, groups, absent = present(ours, root) if ours else ([], {}, {})
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
    harness = None
    if theirs and lm_eval_model is not None:
        # lm-eval's task metadata: the model arguments, as its CLI passes them, and how aloekit's packaged
        # lm-eval tasks (aloe_*) read their benchmark files
        meta = {**_model_args(cfg), **({"data_dir": cfg.data_dir} if cfg.data_dir else {}),
                **({"hub": True} if cfg.hub else {}), **({"skip_bad_rows": True} if cfg.skip_bad_rows else {})}
        harness = H.load(theirs, lm_eval_model.task_paths(), meta)
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
    # on the backend just loaded: one copy of the model answers both aloekit's tasks and lm-eval's
    lm = None
    if harness is not None and lm_eval_model is not None:
        lm = lm_eval_model.build(eval_model_config(cfg.model), backend, cfg.seed, cfg.lm_eval_model_args)
    t_load_model = time.time() - t1
    # after the models: a judge endpoint that cannot be reached fails before the run directory is written
    run_dir = None
    if cfg.output:
        from ..rundir import RunDir
        inputs = {n: r.source for n, r in loaded.items() if Path(r.source).exists()}
        if answerer is not None:
            inputs.update(answerer.inputs())
        if harness is not None:
            inputs.update({f"lm_eval:{t}": f for t, f in harness.sources.items() if Path(f).is_file()})
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
            results[name] = {"name": name, "sample_len": len(samples[name]), **results[name]}
            subjects[name] = {}
            rw = open_info[name]["rewrite"]
            n_samples[name] = {"original": len(rows.docs) + rows.skipped, "effective": rw["kept"],
                               "skipped": rows.skipped, "dropped_by_rewrite": rw["dropped"]}
            gen = {"until": [], "max_gen_toks": cfg.max_new_tokens, "do_sample": False}
            by_id = {d.doc_id: d for d in rows.docs}
            for row in samples[name]:
                row.update(S.sample_fields(
                    S.doc_of(by_id[row["doc_id"]]), row["reference"], [(row["rewritten"], gen)], [[row["response"]]],
                    [row["response"]], [k for k in ("acc", "rouge_l", "rouge_l_recall", "similarity") if k in row]))
            configs[name] = {**_lm_eval_config(name, rows.source, "generate_until", results[name], gen=gen,
                                               text="rewritten (the question without its options)",
                                               target="options[gold] (the gold option's text)", choice=None),
                             "task": name, "title": f"open-ended {', '.join(OPEN_TASKS[name])}", "kind": "open",
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
        res = {"name": name, "alias": name, "sample_len": len(docs), **M.aggregate(task.kind, docs, per)}
        if scoring == "strategy":
            res.update({f"{k},none": strategy_summaries[name][k] for k in COMPUTE_KEYS})
        res["baselines"] = M.baselines(task.kind, docs)
        results[name] = res
        subjects[name] = M.by_subject(task.kind, docs, per)
        n_samples[name] = {"original": _original(name, rows, root, cfg.limit), "effective": len(docs),
                           "skipped": rows.skipped}
        doc_labels = bool(docs) and docs[0].labels is not None  # TruthfulQA MC2: the target is every option's label
        gen = {"until": [], "max_gen_toks": cfg.max_new_tokens, "do_sample": False} if scoring == "generate" else \
            {"strategy": strategy} if scoring == "strategy" else None
        configs[name] = {**_lm_eval_config(name, rows.source, "multiple_choice" if gen is None else "generate_until",
                                           res, gen=gen, delimiter=task.delimiter,
                                           **{**DOC_TO[scoring], **({"target": "labels"} if doc_labels else {})},
                                           shots=_shots(answerer), split=next(iter(task.splits))),
                         "task": name, "title": task.title, "kind": task.kind, "scoring": scoring,
                         "source": rows.source, "target_delimiter": task.delimiter,
                         "prompt": "loglik context, e.g. " + repr(docs[0].context[-200:])
                         if scoring == "loglik" else f"chat template; {strategy or scoring}",
                         # loglik scores raw text (lm-eval parity); a strategy states its own prompt in "strategy"
                         "system_prompt": "none" if scoring == "loglik" else
                         "see strategy" if scoring == "strategy" else system_prompt_label(cfg.system_prompt)}
        fields = [_lm_eval_fields(backend, d, scoring, s, x, p, a, task.delimiter, gen, system)
                  for d, s, x, p, a in zip(docs, scores, texts, per, answers)]
        samples[name] = [_sample(*row) for row in zip(docs, scores, preds, texts, per, answers, fields)]

    lm_res: dict[str, Any] = {}
    if lm is not None and harness is not None:
        t = time.time()
        lm_res = H.evaluate(harness, lm, cfg.limit, cfg.seed)
        timings["lm_eval"] = round(time.time() - t, 3)

    n_shot = {n: configs[n]["num_fewshot"] for n in names}
    for g, members in groups.items():
        results[g] = {"name": g, "alias": g, "sample_len": sum(n_samples[m]["effective"] for m in members),
                      **M.group_metrics([(results[m], n_samples[m]["effective"]) for m in members])}
        if len({n_shot[m] for m in members}) == 1:
            n_shot[g] = n_shot[members[0]]

    dtype = str(getattr(backend, "dtype", cfg.model.dtype)).replace("torch.", "")
    chat = any(c["scoring"] not in ("loglik",) for c in configs.values())
    used_system = system if any(configs[n]["system_prompt"] != "none" for n in names) else None
    # lm-eval's keys (result_schema.EvalResults), then aloekit's own
    out = {
        "results": results,
        "groups": {g: results[g] for g in groups},
        "group_subtasks": dict(groups),
        "configs": configs,
        "versions": {t: S.TASK_VERSION for t in results},
        "n-shot": n_shot,
        "higher_is_better": {t: S.higher_is_better(r) for t, r in results.items()},
        "n-samples": n_samples,
        "config": {**lm_res.get("config", {}),
                   "model": cfg.model.name, "model_args": _model_args(cfg),
                   "model_num_parameters": S.num_parameters(backend), "model_dtype": dtype, "model_revision": "",
                   "model_sha": "", "batch_size": cfg.model.batch_size, "batch_sizes": [],
                   "device": str(getattr(backend, "device", cfg.model.device)), "use_cache": None,
                   # aloekit's stderrs are analytic (lm-eval's mean_stderr); lm-eval's tasks used its default
                   "limit": cfg.limit, "bootstrap_iters": lm_res.get("config", {}).get("bootstrap_iters", 0),
                   "gen_kwargs": {"max_gen_toks": cfg.max_new_tokens, "do_sample": False}
                   if cfg.scoring == "generate" else None,
                   "random_seed": cfg.seed, "numpy_seed": cfg.seed + 1234, "torch_seed": cfg.seed + 1234,
                   "fewshot_seed": cfg.seed + 1234,
                   "backend": cfg.model.backend, "dtype": dtype, "scoring": "strategy" if strategy else cfg.scoring,
                   "strategy": strategy, "seed": cfg.seed,
                   "data_dir": "hub" if cfg.hub else "none (lm-eval tasks only)" if not names else str(root)
                   if root else "none (bundled tasks only)"},
        "git_hash": _git_sha(),
        "date": t0,
        **S.env_info(),
        **S.tokenizer_info(backend),
        "task_hashes": {},
        "model_source": f"aloekit-{cfg.model.backend}",
        "model_name": cfg.model.name,
        "model_name_sanitized": S.sanitize_model_name(cfg.model.name),
        "system_instruction": used_system,
        "system_instruction_sha": S.hash_string(used_system) if used_system else None,
        "fewshot_as_multiturn": False,
        "chat_template": S.chat_template(backend) if chat else None,
        "chat_template_sha": None,
        "total_evaluation_time_seconds": None,
        "tasks_skipped": absent,  # members of a partial group whose files were absent, and why
        "subjects": subjects,
        "aloekit_versions": _versions(),
        "timings_s": {"load_data": round(t_load_data, 3), "load_model": round(t_load_model, 3),
                      "scoring": timings, "total": None},
    }
    if lm_res:
        H.merge(out, lm_res, samples)
    out["task_hashes"] = S.task_hashes(samples)
    if out["chat_template"]:
        out["chat_template_sha"] = S.hash_string(out["chat_template"])
    out["timings_s"]["total"] = round(time.time() - t0, 3)
    out["total_evaluation_time_seconds"] = str(time.time() - t0)
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
        for name, rows in samples.items():
            atomic_write_jsonl(run_dir.output(f"samples_{name}", f"samples_{name}.jsonl"), rows)
        atomic_write_json(run_dir.output("results", "results.json"), out)
        atomic_write_text(run_dir.output("table", "results.md"), table)
        run_dir.finish(**{f"{n}/{_metric_label(m, f)}": out["results"][n][k] for n in samples
                          for k, m, f in S.metric_keys(out["results"].get(n, {}))}, metrics=benchmark_metrics(out))
    out["samples"] = samples
    out["markdown"] = table
    if cfg.log_to:
        log_results(cfg.log_to, out, cfg.output)
    return out


def benchmark_metrics(results: dict) -> dict[str, float]:
    """The run's metrics map: "<task or group>.<metric>" for every lm-eval metric (stderrs left out); a metric
    under a filter other than lm-eval's "none" keeps it: "gsm8k.exact_match,strict-match"."""
    out = {}
    for task, res in results["results"].items():
        for k, metric, filt in S.metric_keys(res):
            v = res[k]
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{task}.{_metric_label(metric, filt)}"] = float(v)
    return out


def _metric_label(metric: str, filt: str) -> str:
    return metric if filt == "none" else f"{metric},{filt}"


# lm-eval's doc_to_text / doc_to_choice / doc_to_target of each scoring mode, over the sample rows' `doc` (a
# Question: a field name is lm-eval's way to say "this field of the doc")
DOC_TO: dict[str, dict[str, Any]] = {
    "loglik": {"text": "context", "choice": "options", "target": "gold"},
    "letter": {"text": "chat template: question, options A-E, letter instruction; assistant turn opened with "
                       "'Answer:'", "choice": "the letters A-E of the options", "target": "gold"},
    "generate": {"text": "chat template: question, options A-E, instruction to end with 'Answer: X'",
                 "choice": "options", "target": "gold"},
    "strategy": {"text": "the medprompt strategy's prompts (see strategy)", "choice": "options", "target": "gold"},
}


def _lm_eval_config(name: str, source: str, output_type: str, res: dict[str, Any], *, text: str,
                    choice: str | None, target: str, gen: dict | None = None, delimiter: str = " ", shots: int = 0,
                    split: str = "test") -> dict[str, Any]:
    """The keys lm-eval's task config dump has (configs[task] in its results.json), for an aloekit task."""
    cfg: dict[str, Any] = {
        "task": name, "dataset_path": source, "dataset_kwargs": {}, "test_split": split, "doc_to_text": text,
        "doc_to_target": target, "unsafe_code": False, "doc_to_choice": choice, "description": "",
        "target_delimiter": delimiter, "fewshot_delimiter": "\n\n",
        "fewshot_config": {"sampler": "default", "split": None}, "num_fewshot": shots,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": S.HIGHER_IS_BETTER.get(m)}
                        for _, m, _ in S.metric_keys(res)],
        "output_type": output_type, "repeats": 1, "should_decontaminate": False,
        "metadata": {"version": S.TASK_VERSION, "config_source": f"aloekit: {name}"}}
    if gen is not None:
        cfg["generation_kwargs"] = gen
    return cfg


def _lm_eval_fields(backend, doc, scoring: str, scores, text, per: dict, answer, delimiter: str, gen,
                    system: str | None) -> dict[str, Any]:
    """lm-eval's fields of one sample row: what was asked (arguments), what came back (resps), the target."""
    target = doc.gold if doc.labels is None else doc.labels
    if scores is not None:  # loglik and letter: one request per option, each [log-likelihood, is_greedy]
        if scoring == "loglik":
            args = [(doc.context, delimiter + o) for o in doc.options]
        else:
            prompt = letter_prompt(backend, doc, system)
            args = [(prompt, f" {x}") for x in LETTERS[:len(doc.options)]]
        resps = [[[float(x), False]] for x in scores]
        filtered: list = [[float(x), False] for x in scores]
    elif scoring == "strategy":  # one request, the ensemble's chains its repeats, the vote its filtered answer
        args = [(listed(doc.question, doc.options), gen)]
        resps = [list((answer or {}).get("chains") or [])]
        filtered = [(answer or {}).get("pred") or ""]
    else:
        args = [(_rendered(backend, generate_chat(doc, system)), gen)]
        resps, filtered = [[text]], [text]
    return S.sample_fields(S.doc_of(doc), target, args, resps, filtered, list(per))


def _rendered(backend, chat) -> str:
    try:
        return backend.render(chat)
    except UserError:  # a server backend that renders chats itself: the chat as sent
        import json
        return json.dumps(chat, ensure_ascii=False)


def _shots(answerer) -> int:
    """Examples in each prompt: a strategy's shots when it has an example database, else zero-shot."""
    if answerer is None:
        return 0
    rec = answerer.record()
    return int(rec.get("params", {}).get("shots") or 0) if rec.get("db") else 0


def _original(name: str, rows, root, limit: int | None) -> int:
    """lm-eval's n-samples "original": rows in the split. A --limit run read only its first rows; the rest are
    counted (not parsed into questions) only then."""
    seen = len(rows.docs) + rows.skipped
    if limit is None or seen < limit:
        return seen
    return sum(1 for _ in TASKS[name].items(root))


def _model_args(cfg: EvalConfig) -> dict[str, Any]:
    m = eval_model_config(cfg.model)
    return {"pretrained": m.name, "dtype": m.dtype, "batch_size": m.batch_size, **cfg.lm_eval_model_args}


def _git_sha() -> str | None:
    from ..rundir import git_sha
    return git_sha()


def eval_model_config(model: ModelConfig) -> ModelConfig:
    """On CPU, `auto` means float32 for evaluation: bf16 matmuls round differently with the batch shape, which
    flips ~1 answer in 60 between batch sizes, and fp32 matches lm-eval's numbers exactly."""
    if model.dtype == "auto" and model.backend == "hf":
        from ..backends import resolve_device
        if resolve_device(model.device) == "cpu":
            return model.model_copy(update={"dtype": "float32"})
    return model


def _sample(doc, scores, pred, text, per, answer=None, fields=None) -> dict[str, Any]:
    row: dict[str, Any] = {"doc_id": doc.doc_id, "where": doc.where, "subject": doc.subject,
                           "gold": doc.gold if doc.labels is None else doc.labels, "pred": pred}
    if scores is not None:
        row["scores"] = [round(float(s), 6) for s in scores]
    if text is not None:
        row["response"] = text
    row.update({k: v for k, v in per.items()})
    if answer is not None:  # a strategy's votes, chains, examples used and tokens (gold/pred stay indices)
        row.update({k: v for k, v in answer.items() if k not in ("doc_id", "gold", "pred", "correct")})
    row.update(fields or {})  # lm-eval's fields (eval/schema.py)
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
        n = _size(out, name)
        base = res.get("baselines", {})
        for key, metric, filt in S.metric_keys(res):
            v = res[key]
            err = res.get(f"{metric}_stderr,{filt}")
            pct = metric.startswith(("acc", "pct_"))  # bias scores (-1..1) and likelihood gaps stay raw
            lines.append(f"| {name} | {n} | {_metric_label(metric, filt)} | {_fmt(v, pct)} | {_fmt(err, pct)} | "
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


def _size(out: dict[str, Any], name: str) -> int | str:
    """Questions behind a task or group (lm-eval groups can hold groups)."""
    if name in out["n-samples"]:
        return out["n-samples"][name].get("effective", "")
    members = out["group_subtasks"].get(name)
    if not members:
        return ""
    sizes = [_size(out, m) for m in members]
    return sum(x for x in sizes if isinstance(x, int))


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
