"""The benchmark evaluation (`aloekit eval`) under the stage contract (aloekit/stage.py), kind `benchmark`. The
recipe's evaluation of each model (recipe/evaluation.py) runs it into benchmarks/."""

from __future__ import annotations

from pathlib import Path

from ..stage import Estimate, Stage
from .runner import EvalConfig

# a task without a limit is priced at a multimedqa-sized 800 questions; a question at 4 options x 250 tokens
UNLIMITED_QUESTIONS, OPTIONS, TOKENS_PER_OPTION = 800, 4, 250


def run(cfg: EvalConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .runner import run as evaluate
    evaluate(cfg.model_copy(update={"output": str(out)}))
    return out


def estimate(cfg: EvalConfig) -> Estimate:
    return Estimate(scored_tokens=(cfg.limit or UNLIMITED_QUESTIONS) * max(len(cfg.tasks), 1) * OPTIONS
                    * TOKENS_PER_OPTION)


def check(cfg: EvalConfig, where: str) -> None:
    from .tasks import expand
    expand(list(cfg.tasks))


STAGE = Stage(kind="benchmark", config=EvalConfig, run=run, model_fields=("model.name",), estimate=estimate,
              check=check)
