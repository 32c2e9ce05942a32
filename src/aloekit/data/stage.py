"""The data stage (`aloekit data build`) under the stage contract (aloekit/stage.py)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..stage import Estimate, Stage, read_json
from .pipeline import DataConfig


def run(cfg: DataConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .pipeline import run as build
    return build(cfg.model_copy(update={"output": str(out)}))


def estimate(cfg: DataConfig) -> Estimate:
    cot = cfg.cot
    gen = cot.max_records * cot.max_attempts * cot.sampling.max_new_tokens if cot.enabled else None
    return Estimate(generated_tokens=gen, disk_gb=0.01)


def check(cfg: DataConfig, where: str) -> None:
    from .sources import REGISTRY
    for i, s in enumerate(cfg.sources):
        if s.name not in REGISTRY and not getattr(s, "path", None):
            raise UserError(f"{where}.config.sources[{i}].name: unknown source '{s.name}'; known: "
                            f"{', '.join(REGISTRY)} (or give a path)")


def requires(cfg: DataConfig, what: str) -> None:
    from .pipeline import require_extras
    require_extras(cfg, what)


def tokens(run_dir: Path) -> tuple[int | None, str]:
    cot = (read_json(run_dir / "card.json") or {}).get("cot")
    if cot:
        return cot["tokens"]["prompt"] + cot["tokens"]["completion"], "CoT teacher prompt + generated"
    return None, ""


STAGE = Stage(kind="data", config=DataConfig, run=run, model_fields=("cot.teacher.name",), estimate=estimate,
              check=check, requires=requires, section="data", tokens=tokens)
