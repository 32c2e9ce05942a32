"""Medical benchmark evaluation, lm-evaluation-harness compatible (see the README, Evaluate)."""

from .runner import EvalConfig, markdown, run
from .tasks import GROUPS, TASKS

__all__ = ["EvalConfig", "GROUPS", "TASKS", "markdown", "run"]
