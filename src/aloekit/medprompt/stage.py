"""The medprompt stage under the stage contract (aloekit/stage.py): an example database built by the model itself
(db/, as `aloekit medprompt build-db`) when a strategy needs one, then the strategies compared on a benchmark
(eval/, as `aloekit medprompt eval`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..config import _format_validation_error
from ..errors import UserError
from ..rundir import RunDir
from ..stage import Estimate, Stage, metrics, read_json
from .config import DBConfig, MedpromptEvalConfig, MedpromptStageConfig, StrategyConfig

RESULTS = "eval/results.json"


def _pkg_path(p: str) -> str:
    if p.startswith("pkg:"):
        from importlib.resources import files
        return str(files("aloekit").joinpath(p[4:]))
    return p


def _params(cfg: MedpromptStageConfig) -> list[StrategyConfig]:
    return [StrategyConfig(strategy=s, **cfg.params) for s in cfg.strategies]


def run(cfg: MedpromptStageConfig, inputs: dict[str, Path], out: Path) -> Path:
    from ..backends import load_backend
    from ..paths import data_dir as find_data_dir
    from .db import ExampleDB, build_from_config
    from .runner import run as compare

    rd = RunDir(out, "medprompt", cfg, seed=cfg.seed)
    model = cfg.backend.model_copy(update={"name": cfg.model})
    db_cfg = DBConfig.model_validate({**cfg.db, "model": model.model_dump(), "pool": _pkg_path(cfg.pool),
                                      "limit": cfg.pool_limit, "output": str(out / "db"), "seed": cfg.seed,
                                      "data_dir": cfg.data_dir,
                                      **({"teacher": {**model.model_dump(), "name": cfg.teacher}}
                                         if cfg.teacher else {})})
    needs_db = any(p.needs_db for p in _params(cfg))
    db = None
    if needs_db:
        with rd.timed("db"):
            _, backend = build_from_config(db_cfg, find_data_dir(cfg.data_dir, required=False))
        db = ExampleDB.load(str(out / "db"), None)
        rd.output("db", "db")
        if db_cfg.teacher:
            backend = load_backend(model)
    else:
        backend = load_backend(model)
    ev = MedpromptEvalConfig.model_validate({
        "model": model.model_dump(), "task": cfg.task, "strategies": cfg.strategies,
        "params": StrategyConfig(**cfg.params).model_dump(), "db": str(out / "db") if needs_db else None,
        "data_dir": cfg.data_dir, "hub": cfg.hub, "limit": cfg.limit, "output": str(out / "eval"), "seed": cfg.seed})
    with rd.timed("eval"):
        res = compare(ev, backend=backend, db=db)  # the database and the model this stage loaded, not reloaded
    rd.output("eval", "eval")
    rd.output("results", RESULTS)
    rd.finish(system_prompt=res["system_prompt"], metrics=metrics(out / "eval"))
    return out


def estimate(cfg: MedpromptStageConfig) -> Estimate:
    members = StrategyConfig(**cfg.params).members
    chain = cfg.db.get("max_new_tokens", DBConfig.model_fields["max_new_tokens"].default)
    # database: up to 3 tries per pool question; evaluation: ~2 answers + the members per question (a pool or
    # benchmark of unknown size is priced at 500 questions)
    return Estimate(generated_tokens=((cfg.pool_limit or 500) * 3 + (cfg.limit or 500) * (2 + members)) * chain)


def check(cfg: MedpromptStageConfig, where: str) -> None:
    from ..benchmarks import question_benchmarks
    if cfg.task not in question_benchmarks():
        raise UserError(f"{where}.config.task: unknown task '{cfg.task}'")
    for s in cfg.strategies:
        try:
            StrategyConfig(strategy=s, **cfg.params)
        except ValidationError as err:
            raise UserError(_format_validation_error(StrategyConfig, err, f"{where}.config.params")) from None


def requires(cfg: MedpromptStageConfig, what: str) -> None:
    from ..extras import require
    if any(p.needs_db for p in _params(cfg)):
        require("retrieval", what=f"{what} with an example database")
    if any(p.uses_rag for p in _params(cfg)):
        require("retrieval", what=f"{what} with a corpus index")


def tokens(run_dir: Path) -> tuple[int | None, str]:
    res = read_json(run_dir / RESULTS)
    total = sum(round(s["n"] * (s["prompt_tokens_per_question"] + s["generated_tokens_per_question"]))
                for s in res["strategies"].values() if s.get("n"))
    return total, "prompt + generated"


STAGE = Stage(kind="medprompt", config=MedpromptStageConfig, run=run, model_fields=("model", "teacher"),
              dataset_fields=("params.rag.index",),  # a corpus index folder, or "@<rag_index stage>"
              estimate=estimate, check=check, requires=requires, section="medprompt", tokens=tokens)
