"""`aloekit eval --log-to wandb,mlflow`: an evaluation's metrics, samples and results.json sent to an experiment
tracker once the run is scored (and its files written).

- wandb: a run in project `$WANDB_PROJECT` (default "aloekit"), offline when neither `$WANDB_MODE` nor an API key
  (`$WANDB_API_KEY`, or a `wandb login` entry in ~/.netrc) says otherwise, in `$WANDB_DIR` or else the output
  folder. It gets the config (model, dtype, tasks, limit, seed ...), every task's and group's metrics as
  `<task>/<metric>` (history and summary), one table of samples per task (`samples/<task>`) and an artifact
  `results` (type eval_results) holding results.json and the samples files. An open run (`wandb.run`) is
  logged into and left open, as lm-eval's WandbLogger does.
- mlflow: a run in experiment `$MLFLOW_EXPERIMENT_NAME` (default "aloekit") of the store `$MLFLOW_TRACKING_URI`,
  by default a local file store `<output>/mlruns` (`./mlruns` without --output), with the same params and
  metrics and results.json + samples/ as artifacts. MLflow 3 keeps file stores in maintenance mode and refuses
  them unless `MLFLOW_ALLOW_FILE_STORE` is true, which is set for a `file:` store.

lm-eval's WandbLogger is not used: it reads lm-eval's own task configs and sample fields, which these results
do not have. Both packages come with the `tracking` extra; `check` runs before any work so a missing one costs
one line, not an evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from .. import console as con
from ..extras import require

TRACKERS = ("wandb", "mlflow")
PARAMS = ("model", "backend", "dtype", "batch_size", "scoring", "strategy", "limit", "seed", "data_dir")


def check(targets: list[str]) -> None:
    """Stop with one line naming the extra when a tracker's package is missing."""
    for t in targets:
        require("tracking", t, what=f"--log-to {t}")


def log_results(targets: list[str], results: dict[str, Any], output: str | None) -> dict[str, str]:
    """Log an evaluation (the dict `eval.runner.run` returns) to each tracker; tracker -> where it went."""
    where = {}
    for t in targets:
        try:
            where[t] = _wandb(results, output) if t == "wandb" else _mlflow(results, output)
        except Exception as e:  # the evaluation is done (and on disk with --output): a tracker failing loses nothing
            where[t] = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            con.warn(f"--log-to {t}: {where[t]}")
            continue
        con.note(f"[dim]--log-to {t}: {escape(where[t])}[/dim]")
    return where


def params(results: dict[str, Any]) -> dict[str, Any]:
    cfg = results.get("config", {})
    out = {k: cfg.get(k) for k in PARAMS if k in cfg}
    out["tasks"] = ",".join([*results.get("configs", {}), *results.get("groups", {})])
    return out


def metrics(results: dict[str, Any]) -> dict[str, float]:
    """Every numeric lm-eval-style metric of every task and group ("acc,none" -> "<task>/acc"), stderrs too."""
    out = {}
    for task, res in results.get("results", {}).items():
        for key, value in res.items():
            if key.endswith(",none") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{task}/{key.split(',')[0]}"] = float(value)
    return out


def _record(results: dict[str, Any]) -> dict[str, Any]:
    """results.json's content: the run's dict less what it only carries in memory."""
    return {k: v for k, v in results.items() if k not in ("samples", "markdown")}


def _files(output: str | None, results: dict[str, Any]) -> list[Path]:
    """results.json and the samples files the run wrote (none without --output)."""
    if not output:
        return []
    names = ["results.json", *[f"samples_{t}.jsonl" for t in results.get("samples", {})]]
    return [p for p in (Path(output) / n for n in names) if p.is_file()]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)


# ---------------------------------------------------------------- W&B

def _wandb_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _cell(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, ensure_ascii=False, default=str)


def _table(rows: list[dict]):
    import wandb
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    # a column may mix types across tasks' rows (gold: an index, or TruthfulQA MC2's label list, JSON here)
    return wandb.Table(columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows],
                       allow_mixed_types=True)


def _wandb(results: dict[str, Any], output: str | None) -> str:
    import wandb
    run = wandb.run
    opened = run is None
    if opened:
        kw: dict[str, Any] = {"project": os.environ.get("WANDB_PROJECT") or "aloekit", "job_type": "eval",
                              "config": params(results)}
        if not os.environ.get("WANDB_MODE") and not _wandb_api_key():
            kw["mode"] = "offline"  # no account configured: never a network call or a login prompt
        # given explicitly: wandb reads its environment once per process, at the first init
        folder = os.environ.get("WANDB_DIR") or output
        if folder:
            kw["dir"] = str(Path(folder).resolve())
        run = wandb.init(**kw)
    else:
        run.config.update(params(results), allow_val_change=True)
    tables = {f"samples/{t}": _table(rows) for t, rows in results.get("samples", {}).items() if rows}
    run.log({**metrics(results), **tables})
    artifact = wandb.Artifact("results", type="eval_results")
    files = _files(output, results)
    for p in files:
        artifact.add_file(str(p), name=p.name)
    if not files:
        with artifact.new_file("results.json", mode="w", encoding="utf-8") as f:
            json.dump(_record(results), f, indent=2, ensure_ascii=False, default=str)
        for t, rows in results.get("samples", {}).items():
            with artifact.new_file(f"samples_{t}.jsonl", mode="w", encoding="utf-8") as f:
                f.write(_jsonl(rows))
    run.log_artifact(artifact)
    offline = run.settings.mode == "offline"
    folder = str(Path(run.dir).parent)
    if opened:
        run.finish()
    return f"offline run {folder} (upload: wandb sync {folder})" if offline else f"run {run.url}"


# ---------------------------------------------------------------- MLflow

def _mlflow(results: dict[str, Any], output: str | None) -> str:
    import mlflow
    active = mlflow.active_run()
    if active is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (Path(output or ".") / "mlruns").resolve().as_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or "aloekit")
    run = active or mlflow.start_run()
    try:
        mlflow.log_params(params(results))
        mlflow.log_metrics(metrics(results))
        files = _files(output, results)
        for p in files:
            mlflow.log_artifact(str(p), artifact_path=None if p.name == "results.json" else "samples")
        if not files:
            mlflow.log_dict(_record(results), "results.json")
            for t, rows in results.get("samples", {}).items():
                mlflow.log_text(_jsonl(rows), f"samples/samples_{t}.jsonl")
    finally:
        if active is None:
            mlflow.end_run()
    return f"run {run.info.run_id} in {mlflow.get_tracking_uri()}"
