"""One adapter per stage kind: recipe config dict -> the stage's own Config -> its `run(...)` -> metrics.

The adapters add nothing to the stages: each stage reads and writes the same artifacts as its own CLI verb, so
a recipe run can be inspected, resumed or redone stage by stage with the stage commands.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ..config import ModelConfig, StrictModel, _format_validation_error, dump_config
from ..errors import UserError
from ..extras import require


class MedpromptStageConfig(StrictModel):
    """Build an example database with the model, then compare strategies on a benchmark."""

    model: str = "smollm2-135m-instruct"
    teacher: str | None = None
    backend: ModelConfig = Field(default_factory=ModelConfig, description="backend settings; name is filled in")
    pool: str = "pkg:resources/demo_corpus/mcq.jsonl"
    pool_limit: int | None = Field(None, ge=1)
    task: str = "aloekit_demo"
    hub: bool = Field(False, description="load the task from the hub instead of the data dir")
    limit: int | None = Field(None, ge=1)
    strategies: list[str] = Field(default_factory=lambda: ["zeroshot", "cot", "medprompt"])
    db: dict[str, Any] = Field(default_factory=dict, description="more DBConfig keys (max_new_tokens, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="StrategyConfig keys (shots, members, ...)")
    data_dir: str | None = None
    seed: int = 0


class EvalStageConfig(StrictModel):
    model: ModelConfig
    benchmarks: dict[str, Any] | None = None
    safety: dict[str, Any] | None = None


# kind -> (module, class) of the stage's own config; imported on use so `aloekit --help` stays light
CONFIG_CLASSES = {"data": ("..data.pipeline", "DataConfig"), "sft": ("..train.config", "SFTConfig"),
                  "dpo": ("..train.config", "DPOConfig"), "merge": ("..merge.config", "MergeConfig"),
                  "redteam": ("..redteam.config", "RedteamConfig")}


def _cls(kind: str):
    if kind == "medprompt":
        return MedpromptStageConfig
    if kind == "eval":
        return EvalStageConfig
    module, name = CONFIG_CLASSES[kind]
    return getattr(importlib.import_module(module, __package__), name)


def build_config(kind: str, cfg: dict, where: str, output: Path | None) -> Any:
    """Validate a stage's config with its own class; `output` None validates only (dry run)."""
    data = dict(cfg)
    if kind != "medprompt" and kind != "eval":
        data["output"] = str(output) if output else "<stage dir>"
    try:
        obj = _cls(kind).model_validate(data)
    except ValidationError as err:
        raise UserError(_format_validation_error(_cls(kind), err, where)) from None
    if kind == "eval":  # its two parts are full stage configs of their own
        from ..eval.runner import EvalConfig
        from ..redteam.config import RedteamConfig
        for part, c in (("benchmarks", EvalConfig), ("safety", RedteamConfig)):
            sub = getattr(obj, part)
            if sub is None:
                continue
            sub = {**sub, "output": str(output / part) if output else "<stage dir>"}
            if part == "benchmarks":
                sub["model"] = obj.model.model_dump()
            try:
                c.model_validate(sub)
            except ValidationError as err:
                raise UserError(_format_validation_error(c, err, f"{where}.{part}")) from None
    return obj


def validate_static(kind: str, obj: Any, where: str) -> None:
    """Checks that need no model and no data: unknown sources, tasks, strategies."""
    if kind == "data":
        from ..data.sources import REGISTRY
        for i, s in enumerate(obj.sources):
            if s.name not in REGISTRY and not getattr(s, "path", None):
                raise UserError(f"{where}.config.sources[{i}].name: unknown source '{s.name}'; known: "
                                f"{', '.join(REGISTRY)} (or give a path)")
    if kind == "eval" and obj.benchmarks:
        from ..eval.tasks import expand
        expand(list(obj.benchmarks.get("tasks", [])))
    if kind == "medprompt":
        from ..eval.tasks import TASKS
        from ..medprompt.config import StrategyConfig
        if obj.task not in TASKS:
            raise UserError(f"{where}.config.task: unknown task '{obj.task}'")
        for s in obj.strategies:
            try:
                StrategyConfig(strategy=s, **obj.params)
            except ValidationError as err:
                raise UserError(_format_validation_error(StrategyConfig, err, f"{where}.config.params")) from None


def require_extras(kind: str, obj: Any, launch, where: str) -> None:
    """What a stage needs beyond the core install; the recipe checks its stages before the first one runs."""
    what = f"{where} ({kind})"
    if kind == "data":
        from ..data.pipeline import require_extras as data_extras
        data_extras(obj, what)
    if kind in ("sft", "dpo"):
        from ..train.common import require_extras as train_extras
        train_extras(obj, what)
        if launch and launch.accelerate_config and _deepspeed(launch.accelerate_config):
            require("gpu", "deepspeed", what=f"{where}.launch.accelerate_config {launch.accelerate_config}")
    if kind == "merge":
        require("merge", what=what)
    if kind == "medprompt":
        from ..medprompt.config import StrategyConfig
        if any(StrategyConfig(strategy=s, **obj.params).needs_db for s in obj.strategies):
            require("retrieval", what=f"{what} with an example database")


def _deepspeed(accelerate_config: str) -> bool:
    import yaml
    cfg = yaml.safe_load(Path(accelerate_config).read_text(encoding="utf-8"))
    return isinstance(cfg, dict) and cfg.get("distributed_type") == "DEEPSPEED"


def _pkg_path(p: str) -> str:
    if p.startswith("pkg:"):
        from importlib.resources import files
        return str(files("aloekit").joinpath(p[4:]))
    return p


# --- running ---------------------------------------------------------------------------------------------------

def run_stage(kind: str, obj: Any, out: Path, launch=None) -> dict[str, Any]:
    """Run one stage into `out`; returns {"metrics": {...}} plus stage-specific fields."""
    if launch is not None and kind in ("sft", "dpo") and (launch.num_processes > 1 or launch.accelerate_config):
        return _launch(kind, obj, out, launch)
    if kind == "data":
        from ..data.pipeline import run
        run(obj)
        card = json.loads((out / "card.json").read_text())
        return {"metrics": _data_metrics(card)}
    if kind == "sft":
        from ..train.sft import run
        return {"metrics": _numbers(run(obj))}
    if kind == "dpo":
        from ..train.dpo import run
        res = run(obj)
        last = res["stages"][-1] if res.get("stages") else {}
        return {"metrics": _numbers(last)}
    if kind == "merge":
        from ..merge.run import run
        res = run(obj)
        return {"metrics": {f"check.{k}": float(bool(v)) for k, v in res.get("checks", {}).items()}}
    if kind == "redteam":
        from ..redteam.run import run
        return {"metrics": safety_metrics(run(obj, output=out))}
    if kind == "medprompt":
        return {"metrics": _medprompt(obj, out)}
    if kind == "eval":
        return {"metrics": _eval(obj, out)}
    raise AssertionError(kind)


def _numbers(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _data_metrics(card: dict) -> dict[str, float]:
    out = {}
    for k in ("sft_train", "sft_validation", "preference_train", "preference_validation"):
        if isinstance(card.get("outputs", {}).get(k), (int, float)):
            out[f"rows.{k}"] = float(card["outputs"][k])
    return out


def safety_metrics(summary: dict) -> dict[str, float]:
    a = summary["attacks"]
    out = {"safety.asr": a["asr"], "safety.refusal_rate": a["refusal_rate"]}
    out.update({f"safety.asr.{k}": v["rate"] for k, v in a.get("per_attack", {}).items()})
    if summary.get("over_refusal"):
        out["safety.over_refusal"] = summary["over_refusal"]["refusal_rate"]
    if summary.get("medsafety_refusal"):
        out["safety.medsafety_refusal"] = summary["medsafety_refusal"]["refusal_rate"]
    return {k: v for k, v in out.items() if v is not None}


def benchmark_metrics(results: dict) -> dict[str, float]:
    out = {}
    for task, res in results["results"].items():
        for k, v in res.items():
            if k.endswith(",none") and "_stderr" not in k and isinstance(v, (int, float)):
                out[f"{task}.{k.split(',')[0]}"] = float(v)
    return out


def _eval(obj: EvalStageConfig, out: Path) -> dict[str, float]:
    """Benchmarks and safety on one model; `items.json` keeps every item's value so gates can compute
    intervals (recipe/gates.py)."""
    from ..io import atomic_write_json
    from .gates import ITEMS, items_from_outputs
    metrics: dict[str, float] = {}
    if obj.benchmarks is not None:
        from ..eval.runner import EvalConfig, run
        cfg = EvalConfig.model_validate({**obj.benchmarks, "model": obj.model.model_dump(),
                                         "output": str(out / "benchmarks")})
        metrics.update(benchmark_metrics(run(cfg)))
    if obj.safety is not None:  # loads its own backend: generation runs in the default (bf16) dtype
        from ..redteam.config import RedteamConfig
        from ..redteam.run import run as redteam
        cfg = RedteamConfig.model_validate({**obj.safety, "output": str(out / "safety")})
        metrics.update(safety_metrics(redteam(cfg, output=out / "safety")))
    atomic_write_json(out / ITEMS, items_from_outputs(out))
    return metrics


def _medprompt(obj: MedpromptStageConfig, out: Path) -> dict[str, float]:
    from ..backends import load_backend
    from ..medprompt.config import DBConfig, MedpromptEvalConfig, StrategyConfig
    from ..medprompt.db import Embedder, ExampleDB, build_db
    from ..medprompt.pools import load_pool
    from ..medprompt.runner import run
    from ..paths import data_dir as find_data_dir

    pool = _pkg_path(obj.pool)
    root = find_data_dir(obj.data_dir, required=False)
    model = obj.backend.model_copy(update={"name": obj.model})
    db_cfg = DBConfig.model_validate({**obj.db, "model": model.model_dump(), "pool": pool,
                                      "limit": obj.pool_limit, "output": str(out / "db"), "seed": obj.seed,
                                      "data_dir": obj.data_dir,
                                      **({"teacher": {**model.model_dump(), "name": obj.teacher}}
                                         if obj.teacher else {})})
    needs_db = any(StrategyConfig(strategy=s, **obj.params).needs_db for s in obj.strategies)
    db = None
    if needs_db:
        rows = load_pool(db_cfg.pool, root, limit=db_cfg.limit)
        Embedder(db_cfg.embedding_model)
        gen = db_cfg.teacher or db_cfg.model
        backend = load_backend(gen)
        build_db(backend, rows.docs, db_cfg, model_name=gen.name, pool_source=rows.source)
        db = ExampleDB.load(str(out / "db"), None)
        if db_cfg.teacher:
            backend = load_backend(model)
    else:
        backend = load_backend(model)
    ev = MedpromptEvalConfig.model_validate({
        "model": model.model_dump(), "task": obj.task, "strategies": obj.strategies,
        "params": StrategyConfig(**obj.params).model_dump(), "db": str(out / "db") if needs_db else None,
        "data_dir": obj.data_dir, "hub": obj.hub, "limit": obj.limit, "output": str(out / "eval"),
        "seed": obj.seed})
    res = run(ev, backend=backend, db=db)
    m = {}
    for s, v in res["strategies"].items():
        m[f"{s}.accuracy"] = v["accuracy"]
        m[f"{s}.generated_tokens_per_question"] = v["generated_tokens_per_question"]
    return m


def _launch(kind: str, obj: Any, out: Path, launch) -> dict[str, Any]:
    """A distributed training stage: the same `aloekit train` verb under `accelerate launch`."""
    from ..io import atomic_write_text
    cfg_file = out / "stage_config.yaml"
    atomic_write_text(cfg_file, dump_config(obj))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(launch.num_processes),
           "--num_machines", str(launch.num_machines)]
    if launch.accelerate_config:
        cmd += ["--config_file", launch.accelerate_config]
    cmd += ["-m", "aloekit.cli", "train", kind, str(cfg_file)]
    r = subprocess.run(cmd)
    if r.returncode != 0:
        raise RuntimeError(f"{kind} stage: `{' '.join(cmd)}` exited with {r.returncode}")
    if kind == "sft":
        done = json.loads((out / "train_run.json").read_text())
        return {"metrics": _numbers(done.get("metrics", {}))}
    res = json.loads((out / "metrics.json").read_text())
    return {"metrics": _numbers(res["stages"][-1] if res.get("stages") else {})}
