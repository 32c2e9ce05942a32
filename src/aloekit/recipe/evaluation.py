"""The recipe's evaluation of one model (stage eval:<model>), a stage of the contract (aloekit/stage.py) that the
plan adds after each model of `evaluation.models`: the benchmarks (an `aloekit eval` run directory in
benchmarks/) and the safety red team (an `aloekit redteam` run directory in safety/, pairs off), each part
loading its own backend. `items.json` keeps every item's value so gates can compute intervals (recipe/gates.py).
It lives in the recipe, not in a stage package, because it runs two stages (eval, redteam) on one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import ModelConfig, StrictModel
from ..io import atomic_write_json
from ..rundir import RunDir
from ..stage import Estimate, Stage, metrics, read_json
from . import registry

PARTS = {"benchmarks": "benchmark", "safety": "redteam"}  # sub-folder -> the stage kind that writes it


class EvalStageConfig(StrictModel):
    model: ModelConfig
    benchmarks: dict[str, Any] | None = None  # a `benchmark` stage config (EvalConfig; model and output filled in)
    safety: dict[str, Any] | None = None  # a `redteam` stage config (RedteamConfig; output filled in)


def parts(cfg: EvalStageConfig, out: Path | None, where: str = "eval") -> list[tuple[str, Stage, Any]]:
    """(sub-folder, stage, its validated config) of each part the config asks for."""
    found = []
    for part in PARTS:
        data = getattr(cfg, part)
        if data is None:
            continue
        stage = registry.get(PARTS[part])
        data = {**data, "output": str(out / part) if out else "<stage dir>"}
        if part == "benchmarks":
            data["model"] = cfg.model.model_dump()
        found.append((part, stage, stage.validate(data, f"{where}.{part}")))
    return found


def run(cfg: EvalStageConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .gates import ITEMS, items_from_outputs
    rd = RunDir(out, "eval", cfg, seed=(cfg.benchmarks or cfg.safety or {}).get("seed"))
    m: dict[str, float] = {}
    # each part loads its own backend: the red team generates in the default (bf16) dtype
    for part, stage, part_cfg in parts(cfg, out):
        with rd.timed(part):
            m.update(metrics(stage.run(part_cfg, {}, out / part)))
        rd.output(part, part)
    atomic_write_json(rd.output("items", ITEMS), items_from_outputs(out))
    rd.finish(system_prompts=system_prompts(out), metrics=m)
    return out


def system_prompts(out: Path) -> dict[str, Any]:
    """The system prompt label each part's numbers were measured with, as the parts recorded it: per task for the
    benchmarks (loglik tasks say none whatever the config), one for the red team."""
    found: dict[str, Any] = {}
    results = out / "benchmarks" / "results.json"
    if results.is_file():
        found["benchmarks"] = {t: c.get("system_prompt") for t, c in read_json(results).get("configs", {}).items()}
    summary = out / "safety" / "summary.json"
    if summary.is_file():
        found["safety"] = read_json(summary).get("system_prompt")
    return found


def check(cfg: EvalStageConfig, where: str) -> None:
    """Both parts are full stage configs of their own, with their own checks (the tasks must exist)."""
    for part, stage, part_cfg in parts(cfg, None, where):
        if stage.check is not None:
            stage.check(part_cfg, f"{where}.{part}")


def estimate(cfg: EvalStageConfig) -> Estimate:
    est = {part: stage.estimate(part_cfg) for part, stage, part_cfg in parts(cfg, None)}
    return Estimate(scored_tokens=est["benchmarks"].scored_tokens if "benchmarks" in est else None,
                    generated_tokens=est["safety"].generated_tokens if "safety" in est else None)


def tokens(run_dir: Path) -> tuple[int | None, str]:
    f = run_dir / "safety" / "summary.json"
    if f.is_file():
        return read_json(f)["throughput"]["completion_tokens"], "generated (red team)"
    return None, ""


STAGE = Stage(kind=registry.EVALUATION, config=EvalStageConfig, run=run, model_fields=("model.name",),
              estimate=estimate, check=check, section="eval", tokens=tokens)
