"""`aloekit eval`: run medical benchmarks, or list them with --list.

`--strategy` answers with a medprompt strategy: the command line (aloekit/cli.py) passes `strategies`, a factory
of answerers (medprompt/runner.py StrategyAnswerer), since this package does not import another stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .. import console as con

# `strategy: <name>`, `strategy_params: {shots, members, ...}` and `db: <folder>` (YAML, --set or flags) answer with a
# medprompt strategy instead of a scoring mode
STRATEGY_KEYS = ("strategy", "strategy_params", "db")


def register(app: typer.Typer, strategies: Callable[..., Any] | None = None, lm_eval_model: Any = None) -> None:
    """`strategies(strategy, db=, seed=, params=)` returns an answerer for eval.runner.run (None: --strategy is
    refused); `lm_eval_model` (eval.harness.LMEvalModel, aloekit-hf) answers lm-eval's tasks (None: `--tasks`
    takes aloekit's tasks only)."""

    @app.command("eval")
    def eval_cmd(
        tasks: Optional[str] = typer.Option(None, "--tasks", "-t",
                                            help="Comma-separated tasks or groups (default: multimedqa): "
                                                 "aloekit's (--list), any lm-eval task, group or tag, or "
                                                 "lm-eval task YAML files or folders."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name, hub id or HF folder."),
        scoring: Optional[str] = typer.Option(None, "--scoring", help="loglik (lm-eval) | letter | generate"),
        limit: Optional[int] = typer.Option(None, "--limit", help="First N questions of each task."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Contexts per forward pass."),
        seed: Optional[int] = typer.Option(None, "--seed"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory for results.json etc."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir",
                                                help="Benchmark files (default $ALOEKIT_DATA_DIR or ../shared/data)."),
        hub: bool = typer.Option(False, "--hub", help="Load the benchmarks from the Hugging Face hub instead."),
        skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help="Skip (and count) malformed rows."),
        backend: Optional[str] = typer.Option(None, "--backend", "-b", help="hf | vllm | llamacpp | openai"),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | bfloat16 | float16 | float32"),
        max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens",
                                                     help="generate scoring; with --strategy the chain cap."),
        strategy: Optional[str] = typer.Option(None, "--strategy", "-s",
                                               help="Answer with a medprompt strategy instead of --scoring: "
                                                    "zeroshot | fewshot | cot | sc-cot | knn | medprompt | rag | rag-cot"),
        db: Optional[Path] = typer.Option(None, "--db", help="Example database (fewshot, knn, medprompt)."),
        index: Optional[Path] = typer.Option(None, "--index", help="Corpus index (aloekit rag index): rag, rag-cot "
                                             "(knn, medprompt: passages too)."),
        members: Optional[int] = typer.Option(None, "--members", help="Ensemble size (sc-cot, medprompt)."),
        shots: Optional[int] = typer.Option(None, "--shots", help="Examples in the prompt (fewshot, knn, medprompt)."),
        system_prompt: Optional[str] = typer.Option(None, "--system-prompt",
                                                    help="Registered name (aloe_medical) or text: letter/generate "
                                                         "scoring and open-ended answers (never loglik)."),
        judge: Optional[List[str]] = typer.Option(None, "--judge", "--judges",
                                                  help="Open-ended tasks: judge model(s), comma-separated or "
                                                       "repeated (two give Cohen's kappa): name, backend:name, "
                                                       "openai:model@http://host/v1."),
        judge_mode: Optional[str] = typer.Option(None, "--judge-mode", help="generate (JSON verdict + rationale) | "
                                                 "likelihood (most likely verdict word; hf judges)."),
        rewriter: Optional[str] = typer.Option(None, "--rewriter", help="Open-ended tasks: an LLM rewrites the "
                                               "questions (default: rules)."),
        use_similarity: bool = typer.Option(False, "--similarity", help="Open-ended tasks: embedding similarity "
                                            "next to ROUGE-L (retrieval extra)."),
        no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip scoring the judges on the bundled "
                                          "labelled answers."),
        list_tasks: bool = typer.Option(False, "--list", help="List the benchmarks and groups, then exit."),
        as_json: bool = typer.Option(False, "--json", help="With --list: print JSON."),
        lm_eval_tasks_path: bool = typer.Option(False, "--lm-eval-tasks-path",
                                                help="Print the folder of aloekit's lm-eval task YAMLs (for "
                                                     "lm-eval's --include_path), then exit."),
        log_to: Optional[str] = typer.Option(None, "--log-to", help="wandb | mlflow (comma-separated): log the "
                                             "metrics, samples and results.json there (offline by default)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with EvalConfig keys."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config key: key.sub=value."),
        model_args: Optional[str] = typer.Option(None, "--model-args", help="lm-eval tasks: more arguments of the "
                                                 "lm-eval model, k=v,k2=v2 (max_length, add_bos_token)."),
    ) -> None:
        """Evaluate a model on medical benchmarks (lm-eval-compatible loglik, letter or generate scoring, or a
        medprompt strategy with --strategy)."""
        if lm_eval_tasks_path:
            # a path, not an import: this stage may not import aloekit.lmeval
            print(Path(__file__).resolve().parents[1] / "lmeval" / "tasks")
            return
        if list_tasks:
            _print_list(data_dir, as_json)
            return
        from pydantic import ValidationError

        from ..config import _format_validation_error, deep_merge, parse_overrides, read_yaml
        from ..errors import UserError
        from .runner import EvalConfig, check_output, run

        flags = {"tasks": tasks.split(",") if tasks else None, "model.name": model, "scoring": scoring,
                 "limit": limit, "model.batch_size": batch_size, "seed": seed,
                 "output": str(output) if output else None, "data_dir": str(data_dir) if data_dir else None,
                 "hub": hub or None, "skip_bad_rows": skip_bad_rows or None, "model.backend": backend,
                 "model.dtype": dtype, "strategy": strategy, "db": str(db) if db else None,
                 "strategy_params.rag.index": str(index) if index else None,
                 "strategy_params.members": members, "strategy_params.shots": shots,
                 "system_prompt": system_prompt, "similarity": use_similarity or None,
                 "calibrate": False if no_calibrate else None, "judge_mode": judge_mode,
                 "log_to": [x.strip() for x in log_to.split(",") if x.strip()] if log_to else None}
        if model_args:
            flags["lm_eval_model_args"] = _parse_model_args(model_args)
        from .openended import parse_model_spec
        if judge:
            specs = [x for j in judge for x in j.split(",") if x.strip()]
            flags["judges"] = [parse_model_spec(x).model_dump(exclude_defaults=True) for x in specs]
        if rewriter:
            flags["rewriter"] = parse_model_spec(rewriter, "--rewriter").model_dump(exclude_defaults=True)
        overrides = list(sets or []) + [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
        data = deep_merge(read_yaml(config) if config else {}, parse_overrides(overrides))
        # the strategy keys (in the YAML, --set or the flags) configure the answerer, the rest is an EvalConfig
        given = {k: data.pop(k) for k in STRATEGY_KEYS if k in data}
        strategy = given.get("strategy")
        if strategy and data.get("system_prompt"):  # a strategy builds its own prompts: it takes the policy too
            given["strategy_params"] = {**given.get("strategy_params", {}), "system_prompt": data["system_prompt"]}
        # one flag, two caps: the free-text answer of generate scoring, or a strategy's chain of thought
        if max_new_tokens is not None:
            if strategy:
                given["strategy_params"] = {**given.get("strategy_params", {}), "max_new_tokens": max_new_tokens}
            else:
                data["max_new_tokens"] = max_new_tokens
        try:
            cfg = EvalConfig.model_validate(data)
        except ValidationError as err:
            raise UserError(_format_validation_error(EvalConfig, err, str(config) if config else "config")) from None
        if strategy and scoring:
            raise UserError(f"--scoring {scoring} and --strategy {strategy} exclude each other; give one")
        strategy_only = [f for f, v in (("--db", db), ("--index", index), ("--members", members), ("--shots", shots))
                         if v is not None]
        if strategy_only and not strategy:
            raise UserError(f"{', '.join(strategy_only)}: only used with --strategy; add --strategy or drop them")
        check_output(cfg.output)
        answerer = None
        if strategy:
            if strategies is None:
                raise UserError("--strategy: no strategies are installed with this command line")
            # before the benchmarks and the model: a bad strategy or a missing --db fails at once
            answerer = strategies(strategy, db=given.get("db"), seed=cfg.seed,
                                  params=given.get("strategy_params") or {})
        out = run(cfg, answerer=answerer, lm_eval_model=lm_eval_model)
        con.out.print(out["markdown"], highlight=False, markup=False)
        if cfg.output:
            con.note(f"[dim]wrote {cfg.output}/results.json and samples_<task>.jsonl[/dim]")


def _print_list(data_dir: Optional[Path], as_json: bool) -> None:
    from ..paths import data_dir as resolve
    from .tasks import GROUPS, PARTIAL_GROUPS, TASKS
    root = resolve(data_dir, required=False)
    rows = []
    for t in TASKS.values():
        local = "-"
        if root is not None:
            p = root / t.local_path
            local = "yes" if p.exists() or (t.name == "bbq" and (root / "bbq" / "data").is_dir()) else "no"
        if t.bundled:
            local = "bundled"
        rows.append({"task": t.name, "title": t.title, "n": t.full_size, "metrics": t.kind,
                     "scoring": "/".join(t.modes), "local_file": t.local_path, "local": local, "hub": t.hub_id})
    if as_json:
        print(json.dumps({"tasks": rows, "groups": GROUPS}, indent=2))
        return
    from rich.table import Table
    table = Table("task", "n", "scoring", "found", "local file (under --data-dir)", "hub")
    for r in rows:
        table.add_row(r["task"], str(r["n"]), r["scoring"], r["local"], r["local_file"], r["hub"])
    con.out.print(table)
    for g, members in GROUPS.items():
        partial = " (members without their file are skipped)" if g in PARTIAL_GROUPS else ""
        con.out.print(f"group [bold]{g}[/bold]: {', '.join(members)}{partial}", highlight=False)


def _parse_model_args(text: str) -> dict[str, Any]:
    """lm-eval's `--model_args` form, k=v,k2=v2; values typed as YAML reads them (512, true)."""
    import yaml

    from ..errors import UserError
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--model-args {text}: give key=value pairs separated by commas, e.g. max_length=2048")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out
