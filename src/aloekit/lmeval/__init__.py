"""aloekit inside lm-evaluation-harness 0.4: the `aloekit-hf` model (model.py), any lm-eval task scored by aloekit.

lm-eval 0.4 finds models only in its own registry (`lm_eval.api.registry.model_registry`): it reads no entry points,
so a model from another package exists for lm-eval once that package has been imported. Importing this package
registers `aloekit-hf` when lm-eval is installed (the class itself loads on first use); `python -m aloekit.lmeval
...` is lm-eval's own CLI with the model registered first (docs/lm_eval.md).

tasks/: aloekit's medical benchmarks as lm-eval task YAMLs (`aloe_medqa`, ..., group `aloe_medical`), for
lm-eval's `--include_path TASKS_DIR` (`aloekit eval --lm-eval-tasks-path` prints it).
"""

from __future__ import annotations

from pathlib import Path

from ..extras import require

NAME = "aloekit-hf"
TARGET = "aloekit.lmeval.model:AloekitLM"
TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def register() -> None:
    """Make `aloekit-hf` a model name lm-eval knows (idempotent)."""
    require("lmeval", what=f"the lm-eval model '{NAME}'")
    import lm_eval.models  # noqa: F401 - lm-eval's own models first: its get_model fills only an empty registry
    from lm_eval.api.registry import model_registry
    if NAME not in model_registry:
        model_registry.register(NAME, target=TARGET)


try:  # registered on import where lm-eval is installed; without it this package imports and does nothing
    import lm_eval.api.registry  # noqa: F401
except ImportError:
    pass
else:
    register()

__all__ = ["NAME", "TASKS_DIR", "register"]
