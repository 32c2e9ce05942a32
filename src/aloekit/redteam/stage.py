"""The red-team stage (`aloekit redteam`) under the stage contract (aloekit/stage.py)."""

from __future__ import annotations

from pathlib import Path

from ..stage import Estimate, Stage, read_json
from .config import RedteamConfig


def run(cfg: RedteamConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .run import run as redteam
    redteam(cfg.model_copy(update={"output": str(out)}), output=out)
    return out


def prompts(cfg: RedteamConfig) -> int:
    """Prompts the model answers: the attack budget, the safe look-alikes and the plain harmful requests (a
    limit of None, i.e. the whole set, is priced at the default limit)."""
    fields = RedteamConfig.model_fields
    xs = cfg.xstest.limit or fields["xstest"].default_factory().limit
    med = cfg.medsafety_refusal.limit or fields["medsafety_refusal"].default_factory().limit
    return cfg.budget + (xs if cfg.xstest.enabled else 0) + (med if cfg.medsafety_refusal.enabled else 0)


def estimate(cfg: RedteamConfig) -> Estimate:
    return Estimate(generated_tokens=prompts(cfg) * cfg.sampling.max_new_tokens)


def tokens(run_dir: Path) -> tuple[int | None, str]:
    return read_json(run_dir / "summary.json")["throughput"]["completion_tokens"], "generated"


STAGE = Stage(kind="redteam", config=RedteamConfig, run=run,
              model_fields=("model.name", "llm_judge.model.name", "pairs.chosen_model.name"), estimate=estimate,
              section="safety", tokens=tokens)
