"""The stage registry: stage kind -> the `Stage` object its package exports (`aloekit.stage` is the contract).

Stage modules are imported on first use, so `aloekit --help` imports none of them. A stage from outside aloekit
plugs in with `register(stage)` or an entry point in the group `aloekit.stages` (`kind = "package.module:NAME"`).
`eval` is the recipe's own evaluation of each model (named eval:<model> by the plan); a recipe cannot declare it.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from ..errors import UserError
from ..stage import Stage

EVALUATION = "eval"
BUILTIN: dict[str, str] = {
    "data": "aloekit.data.stage:STAGE",
    "sft": "aloekit.train.stage:SFT",
    "dpo": "aloekit.train.stage:DPO",
    "merge": "aloekit.merge.stage:STAGE",
    "redteam": "aloekit.redteam.stage:STAGE",
    "medprompt": "aloekit.medprompt.stage:STAGE",
    "rag_index": "aloekit.rag.stage:STAGE",
    "benchmark": "aloekit.eval.stage:STAGE",
    EVALUATION: "aloekit.recipe.evaluation:STAGE",
}
ENTRY_POINTS = "aloekit.stages"

_registered: dict[str, Stage] = {}
_plugins: dict[str, str] | None = None


def _entry_points() -> dict[str, str]:
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points
        _plugins = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS) if ep.name not in BUILTIN}
    return _plugins


def _load(target: str, kind: str) -> Stage:
    module, _, name = target.partition(":")
    stage = getattr(importlib.import_module(module), name or "STAGE")
    if not isinstance(stage, Stage) or stage.kind != kind:
        raise UserError(f"stage kind '{kind}': {target} is not an aloekit.stage.Stage of that kind")
    return stage


def register(stage: Stage) -> Stage:
    """Add (or replace) a stage kind; the built-in kinds and `eval` cannot be replaced."""
    if stage.kind in BUILTIN:
        raise UserError(f"stage kind '{stage.kind}' is built in; give the new stage another kind")
    _registered[stage.kind] = stage
    return stage


def unregister(kind: str) -> None:
    _registered.pop(kind, None)


def kinds() -> list[str]:
    """The kinds a recipe may declare under `stages:`."""
    return [k for k in BUILTIN if k != EVALUATION] + [k for k in [*_registered, *_entry_points()]
                                                        if k not in BUILTIN]


def get(kind: str) -> Stage:
    if kind in _registered:
        return _registered[kind]
    target = BUILTIN.get(kind) or _entry_points().get(kind)
    if target is None:
        raise UserError(f"unknown stage kind '{kind}'; known: {', '.join(dict.fromkeys(kinds()))}")
    return _load(target, kind)


def find(kind: str) -> Stage | None:
    """The stage of a kind, or None for a kind not installed here (e.g. a plugin in an old run's manifest)."""
    try:
        return get(kind)
    except UserError:
        return None


def of_section(kinds_: Iterable[str], section: str) -> list[str]:
    """Which of these kinds the report shows in `section`."""
    return [k for k in kinds_ if (st := find(k)) is not None and st.section == section]
