"""`aloekit medprompt build-db | eval` and `aloekit infer`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import console as con

MODEL_HELP = "Registry name, hub id or HF folder."
SYSTEM_HELP = "System prompt: a registered name (aloe_medical), the prompt's text, or 'none'."
STOP_RISK_HELP = ("Opt-in risky early stop (sc-cot, medprompt): stop a question once the estimated chance that its "
                  "remaining members overturn the current winner is at most this (e.g. 0.05; a Polya-urn model of "
                  "the votes, docs/medprompt.md). Default: the exact rule, which never changes the answer.")


def _system_prompt(value: str | None) -> str | None:
    """--system-prompt, checked; it is set after the config loads, so it wins over a `system` or `system_prompt`
    key of the YAML or --set."""
    if value is not None:
        from ..prompts import resolve_system_prompt
        resolve_system_prompt(value, "--system-prompt")
    return value


def _overrides(sets, flags: dict) -> list[str]:
    return list(sets or []) + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]


def register(app: typer.Typer) -> None:
    mp = typer.Typer(no_args_is_help=True, help="Medprompt-style inference: example database and strategies.")
    app.add_typer(mp, name="medprompt")

    @mp.command("build-db")
    def build_db_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
        pool: Optional[str] = typer.Option(None, "--pool", help="pubmedqa | headqa | mmlu | medmcqa | file.jsonl"),
        teacher: Optional[str] = typer.Option(None, "--teacher", help="Model that writes the chains (default: --model)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Database folder (resumable)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="First N pool questions."),
        embedding_model: Optional[str] = typer.Option(None, "--embedding-model",
                                                      help="sentence-transformers model id or folder (offline)."),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
        backend: Optional[str] = typer.Option(None, "--backend", "-b"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help=SYSTEM_HELP),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with DBConfig keys."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value."),
    ) -> None:
        """Self-generated chains of thought over a training pool, kept where they reach the gold answer."""
        from ..config import load_config
        from ..paths import data_dir as resolve_data_dir
        from .config import DBConfig
        from .db import build_from_config
        cfg = load_config(DBConfig, config, _overrides(sets, {
            "model.name": model, "pool": pool, "teacher.name": teacher, "output": str(output) if output else None,
            "limit": limit, "embedding_model": embedding_model, "max_new_tokens": max_new_tokens,
            "data_dir": str(data_dir) if data_dir else None, "model.backend": backend, "seed": seed}))
        if _system_prompt(system_prompt) is not None:
            cfg.system = system_prompt
        root = None if cfg.pool == "medmcqa" or cfg.pool.endswith((".jsonl", ".json")) else \
            resolve_data_dir(cfg.data_dir)
        meta, _ = build_from_config(cfg, root)
        con.out.print(json.dumps(meta, indent=2), highlight=False, markup=False)

    @mp.command("eval")
    def eval_cmd(
        task: Optional[str] = typer.Option(None, "--task", "-t", help="An mcq benchmark of `aloekit eval --list`."),
        strategies: Optional[str] = typer.Option(None, "--strategies", "-s",
                                                 help="Comma-separated: zeroshot,fewshot,cot,sc-cot,knn,medprompt,"
                                                      "rag,rag-cot"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
        db: Optional[Path] = typer.Option(None, "--db", help="Example database folder (build-db)."),
        index: Optional[Path] = typer.Option(None, "--index", help="Corpus index (aloekit rag index): rag, rag-cot; "
                                             "knn and medprompt get passages too."),
        limit: Optional[int] = typer.Option(None, "--limit"),
        members: Optional[int] = typer.Option(None, "--members", help="Ensemble size (sc-cot, medprompt)."),
        shots: Optional[int] = typer.Option(None, "--shots"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Chain-of-thought cap."),
        no_adaptive: bool = typer.Option(False, "--no-adaptive", help="Run every member (no early stop)."),
        stop_risk: Optional[float] = typer.Option(None, "--stop-risk", help=STOP_RISK_HELP),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
        hub: bool = typer.Option(False, "--hub"),
        backend: Optional[str] = typer.Option(None, "--backend", "-b"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size"),
        seed: Optional[int] = typer.Option(None, "--seed"),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help=SYSTEM_HELP),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with MedpromptEvalConfig keys."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value."),
    ) -> None:
        """Run strategies on a benchmark: accuracy, tokens/question, and a plot of accuracy vs tokens."""
        from ..config import load_config
        from .config import MedpromptEvalConfig
        from .runner import markdown, run
        cfg = load_config(MedpromptEvalConfig, config, _overrides(sets, {
            "task": task, "strategies": strategies.split(",") if strategies else None, "model.name": model,
            "db": str(db) if db else None, "params.rag.index": str(index) if index else None,
            "limit": limit, "params.members": members, "params.shots": shots,
            "params.max_new_tokens": max_new_tokens, "params.adaptive": False if no_adaptive else None,
            "params.stop_risk": stop_risk,
            "output": str(output) if output else None, "data_dir": str(data_dir) if data_dir else None,
            "hub": hub or None, "model.backend": backend, "model.batch_size": batch_size, "seed": seed}))
        if _system_prompt(system_prompt) is not None:
            cfg.params.system = system_prompt
        out = run(cfg)
        con.out.print(markdown(out["task"], out["strategies"], out["system_prompt"]), highlight=False, markup=False)

    @app.command("infer")
    def infer_cmd(
        model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
        strategy: str = typer.Option("medprompt", "--strategy", "-s",
                                     help="zeroshot | fewshot | cot | sc-cot | knn | medprompt | rag | rag-cot"),
        question_file: Optional[Path] = typer.Option(None, "--question-file", "-f",
                                                     help="JSON {question, options} or a list; default stdin."),
        db: Optional[Path] = typer.Option(None, "--db", help="Example database (fewshot, knn, medprompt)."),
        index: Optional[Path] = typer.Option(None, "--index", help="Corpus index (aloekit rag index): rag, rag-cot; "
                                             "knn and medprompt get passages too."),
        k: Optional[int] = typer.Option(None, "-k", "--k", help="Passages retrieved (rag strategies)."),
        members: Optional[int] = typer.Option(None, "--members"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens"),
        stop_risk: Optional[float] = typer.Option(None, "--stop-risk", help=STOP_RISK_HELP),
        backend: Optional[str] = typer.Option(None, "--backend", "-b"),
        seed: int = typer.Option(0, "--seed"),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt", help=SYSTEM_HELP),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="StrategyConfig key=value."),
    ) -> None:
        """Answer questions with a strategy: answer, vote distribution and chains of thought, as JSON."""
        from ..config import ModelConfig, load_config
        from ..errors import UserError
        from ..io import read_text_utf8
        from ..prompts import system_prompt_label
        from .config import StrategyConfig
        from .engine import evaluate
        from .pools import read_questions
        cfg = load_config(StrategyConfig, None, _overrides(sets, {
            "strategy": strategy, "members": members, "max_new_tokens": max_new_tokens, "seed": seed,
            "stop_risk": stop_risk,
            "rag.index": str(index) if index else None, "rag.k": k}))
        if _system_prompt(system_prompt) is not None:
            cfg.system = system_prompt
        if question_file is not None:
            if not question_file.is_file():
                raise UserError(f"--question-file {question_file}: file not found")
            text, source = read_text_utf8(question_file), str(question_file)
        else:
            if sys.stdin.isatty():
                raise UserError("give --question-file q.json or pipe a JSON question on stdin")
            text, source = sys.stdin.read(), "stdin"
        docs = read_questions(text, source)
        exdb = None
        if cfg.needs_db:
            if db is None:
                raise UserError(f"strategy '{cfg.strategy}' needs --db (build one with `aloekit medprompt build-db`)")
            from .db import ExampleDB
            exdb = ExampleDB.load(db, cfg.embedding_model)
        from .runner import load_index
        corpus = load_index([cfg])  # before the model: a missing or mismatched index fails at once
        from ..backends import load_backend
        mcfg = ModelConfig(**{f: v for f, v in {"name": model, "backend": backend}.items() if v is not None})
        # a user's own question: the leakage guard is off unless rag.leak_guard says otherwise
        res = evaluate(load_backend(mcfg), docs, cfg, exdb, index=corpus, evaluating=False)
        out = []
        for d, r in zip(docs, res):
            row = {"question": d.question, "options": d.options, "answer": r["pred"],
                   "answer_text": d.options["ABCDEFGHIJ".index(r["pred"])] if r["pred"] else None,
                   "votes": r["votes"], "members": r["members"], "stop_rule": r["stop_rule"], "chains": r["chains"],
                   "prompt_tokens": r["prompt_tokens"], "generated_tokens": r["generated_tokens"],
                   "seconds": r["seconds"], "system_prompt": system_prompt_label(cfg.system)}
            if "stop_risk" in r:
                row["stop_risk"] = r["stop_risk"]
            if "passages" in r:
                row["sources"] = r["passages"]
                row["leaks_removed"] = r["leaks_removed"]
            out.append(row)
        con.out.print(json.dumps(out[0] if len(out) == 1 else out, indent=2, ensure_ascii=False),
                      highlight=False, markup=False, soft_wrap=True)
