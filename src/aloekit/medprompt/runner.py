"""`run(cfg)`: the strategies of `cfg.strategies` on one benchmark, with results.json, samples_<strategy>.jsonl,
results.md and accuracy_vs_tokens.png in the run directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import console as con
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from ..prompts import system_prompt_label
from .config import MedpromptEvalConfig, StrategyConfig
from .engine import evaluate, summarize


def load_task_docs(task: str, data_dir: str | None, hub: bool, skip_bad: bool, limit: int | None):
    from ..benchmarks import data_root, question_benchmarks
    tasks = question_benchmarks()  # what `aloekit eval --list` lists
    if task not in tasks:
        raise UserError(f"--task: unknown task '{task}'; valid: {', '.join(tasks)}")
    t = tasks[task]
    if t.kind != "mcq":
        raise UserError(f"--task {task}: medprompt strategies answer single-choice questions (mcq tasks) only")
    return t.load(data_root([task], data_dir, hub), skip_bad, limit)


def load_db(params: list[StrategyConfig], db_dir: str | None, embedding_model: str | None):
    """The example database if one of the strategies needs it, else None; a missing --db is a UserError."""
    if not any(p.needs_db for p in params):
        return None
    if not db_dir:
        need = ", ".join(p.strategy for p in params if p.needs_db)
        raise UserError(f"strategies {need} need an example database: pass --db DIR "
                        f"(build one with `aloekit medprompt build-db`)")
    from .db import ExampleDB
    return ExampleDB.load(db_dir, embedding_model)


def load_index(params: list[StrategyConfig]):
    """The corpus index if one of the strategies retrieves passages, else None; a missing index is a UserError
    (before any benchmark or model is loaded). Strategies of one run share one rag.index."""
    rag = [p for p in params if p.uses_rag]
    if not rag:
        return None
    dirs = {p.rag.index for p in rag if p.rag is not None and p.rag.index}
    if not dirs:
        raise UserError(f"strategies {', '.join(p.strategy for p in rag)} need a corpus index: pass --index DIR "
                        f"or set rag.index (build one with `aloekit rag index CORPUS --output DIR`)")
    if len(dirs) > 1:
        raise UserError(f"rag.index: one index per run, got {', '.join(sorted(dirs))}")
    from ..retrieval.index import load_index as load
    return load(dirs.pop(), rag[0].rag.embedding_model)


def run_strategy(backend, docs, p: StrategyConfig, db, task: str, index=None) -> tuple[list[dict], dict]:
    """One strategy over one task's docs: the per-question results and their summary (with wall seconds)."""
    t0 = time.time()
    res = evaluate(backend, docs, p, db, desc=f"{task} {p.strategy}", index=index)
    s = summarize(res)
    s["wall_seconds"] = round(time.time() - t0, 2)
    con.note(f"{task} {p.strategy}: acc {100 * s['accuracy']:.1f}  gen tok/q "
             f"{s['generated_tokens_per_question']}  ({s['wall_seconds']} s)")
    return res, s


def markdown(task: str, summaries: dict[str, dict], system_prompt: str = "none") -> str:
    lines = ["| strategy | n | accuracy | generated tok/q | prompt tok/q | members/q | stop rule | s/q |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {s['n']} | {100 * s['accuracy']:.1f} | {s['generated_tokens_per_question']} | "
                     f"{s['prompt_tokens_per_question']} | {s['members_per_question']} | "
                     f"{s.get('stop_rule', '')} | {s['seconds_per_question']} |")
    return f"## {task}\n\nSystem prompt: {system_prompt}\n\n" + "\n".join(lines) + "\n"


def run(cfg: MedpromptEvalConfig, backend=None, db=None) -> dict[str, Any]:
    rows = load_task_docs(cfg.task, cfg.data_dir, cfg.hub, cfg.skip_bad_rows, cfg.limit)
    params = [cfg.params.model_copy(update={"strategy": s, "seed": cfg.seed}) for s in cfg.strategies]
    if not params:
        raise UserError("strategies: give at least one strategy")
    if db is None:
        db = load_db(params, cfg.db, cfg.params.embedding_model)
    index = load_index(params)
    run_dir = None
    if cfg.output:
        from ..rundir import RunDir
        inputs = {"benchmark": rows.source} if Path(rows.source).exists() else {}
        if cfg.db:
            inputs["db"] = str(Path(cfg.db) / "records.jsonl")
        if index is not None:
            inputs["index"] = str(index.path / "index.json")
        run_dir = RunDir(cfg.output, "medprompt", cfg, seed=cfg.seed, inputs=inputs)
    if backend is None:
        from ..backends import load_backend
        backend = load_backend(cfg.model)
    summaries: dict[str, dict] = {}
    for p in params:
        res, summaries[p.strategy] = run_strategy(backend, rows.docs, p, db, cfg.task, index)
        if run_dir:
            with run_dir.timed(p.strategy):
                atomic_write_jsonl(run_dir.output(f"samples_{p.strategy}", f"samples_{p.strategy}.jsonl"), res)
    out = {"task": cfg.task, "source": rows.source, "skipped_rows": rows.skipped, "model": cfg.model.name,
           "db": cfg.db, "db_meta": getattr(db, "meta", None), "params": cfg.params.model_dump(mode="json"),
           "system_prompt": system_prompt_label(cfg.params.system), "strategies": summaries}
    if index is not None:
        out["index"] = index_record(index)
    if run_dir:
        from .plot import plot_accuracy_vs_tokens
        atomic_write_json(run_dir.output("results", "results.json"), out)
        atomic_write_text(run_dir.output("table", "results.md"), markdown(cfg.task, summaries, out["system_prompt"]))
        plot_accuracy_vs_tokens(summaries, run_dir.output("plot", "accuracy_vs_tokens.png"),
                                f"{cfg.task}, {cfg.model.name}")
        run_dir.finish(**{f"{k}_accuracy": v["accuracy"] for k, v in summaries.items()},
                       system_prompt=out["system_prompt"], metrics=strategy_metrics(summaries))
    return out


def index_record(index) -> dict[str, Any] | None:
    """What a results file keeps of the corpus index: where, what it holds and how it was built."""
    if index is None:
        return None
    c = index.card
    return {"path": str(index.path), "corpus_sha256": c["corpus"]["sha256"], "counts": c["counts"],
            "chunking": c["chunking"], "embedding_model": c["embedding_model"], "dense": c["dense"]["kind"]}


def strategy_metrics(summaries: dict[str, dict]) -> dict[str, float]:
    """The run's metrics map (numbers): each strategy's accuracy, generated tokens and members per question, and
    with the risky stop the mean estimated overturn risk at the stop."""
    m = {}
    for s, v in summaries.items():
        m[f"{s}.accuracy"] = v["accuracy"]
        m[f"{s}.generated_tokens_per_question"] = v["generated_tokens_per_question"]
        m[f"{s}.members_per_question"] = v["members_per_question"]
        if "mean_stop_risk" in v:  # the risky stop (params.stop_risk): its rule's δ is in results.json's params
            m[f"{s}.mean_stop_risk"] = v["mean_stop_risk"]
    return m


class StrategyAnswerer:
    """A strategy answering a benchmark's questions, for the eval runner (`aloekit eval --strategy`): the same
    `run_strategy` as `aloekit medprompt eval`, behind eval's `Answerer` protocol (eval/runner.py). The example
    database is loaded here, so a missing --db fails before any benchmark or model is loaded."""

    def __init__(self, strategy: str, params: StrategyConfig | dict | None = None, db: str | None = None,
                 seed: int = 0, loaded_db=None, system_prompt: str | None = None):
        from pydantic import ValidationError

        from ..config import _format_validation_error
        base = params.model_dump() if isinstance(params, StrategyConfig) else dict(params or {})
        if system_prompt is not None:  # the caller's knob (eval's system_prompt) wins over the params' key
            base = {k: v for k, v in base.items() if k not in ("system", "system_prompt")}
            base["system"] = system_prompt
        try:
            self.params = StrategyConfig.model_validate({**base, "strategy": strategy, "seed": seed})
        except ValidationError as err:
            raise UserError(_format_validation_error(StrategyConfig, err, "--strategy")) from None
        self.name = self.params.strategy
        self.db_dir = db
        self.db = loaded_db if loaded_db is not None else load_db([self.params], db, self.params.embedding_model)
        self.index = load_index([self.params])

    def inputs(self) -> dict[str, str]:
        out = {"db": str(Path(self.db_dir) / "records.jsonl")} if self.db_dir else {}
        if self.index is not None:
            out["index"] = str(self.index.path / "index.json")
        return out

    def answer(self, backend, docs, task: str) -> tuple[list[dict], dict]:
        return run_strategy(backend, docs, self.params, self.db, task, self.index)

    def record(self) -> dict[str, Any]:
        rec = {"name": self.name, "params": self.params.model_dump(mode="json"), "db": self.db_dir,
               "db_meta": getattr(self.db, "meta", None), "system_prompt": system_prompt_label(self.params.system)}
        if self.index is not None:
            rec["index"] = index_record(self.index)
        return rec
