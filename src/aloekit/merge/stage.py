"""The merge stage (`aloekit merge`) under the stage contract (aloekit/stage.py)."""

from __future__ import annotations

from pathlib import Path

from ..extras import require
from ..stage import Estimate, Stage
from .config import MergeConfig


def run(cfg: MergeConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .run import run as merge
    merge(cfg.model_copy(update={"output": str(out)}))  # a search's scorer comes from search.scorer
    return out


def estimate(cfg: MergeConfig) -> Estimate:
    # streaming a few models through mergekit is I/O bound: minutes, priced as a fixed 0.1 GPU hour
    return Estimate(disk_bytes_per_param=2, extra_gpu_hours=0.1)


def requires(cfg: MergeConfig, what: str) -> None:
    require("merge", what=what)


STAGE = Stage(kind="merge", config=MergeConfig, run=run, model_fields=("base_model", "models[].model", "tokenizer_from"),
              model_output=lambda config: "model", starts_from="base_model", merges="models[].model",
              estimate=estimate, requires=requires, section="merge")
