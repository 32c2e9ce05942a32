"""`aloekit merge CONFIG`: one merge, or a small searched grid of merges (`search:` in the config or --search)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def default_grid(cfg):
    """--search without a search: section: vary density where the method has one, else the first weight."""
    from .config import SearchSettings
    from .run import _method
    params = {p.name for p in _method(cfg.method).spec.parameters}
    if "density" in params:
        return SearchSettings(density=[0.3, 0.5, 0.7])
    n = len(cfg.models)
    if n == 2:
        return SearchSettings(weights=[[0.3, 0.7], [0.5, 0.5], [0.7, 0.3]])
    from ..errors import UserError
    raise UserError("--search: no search: section in the config and no default grid for this method with "
                    f"{n} models; add search.weights / search.density to the config")


def register(app: typer.Typer) -> None:
    @app.command("merge")
    def merge_cmd(
        config: Path = typer.Argument(..., help="Merge YAML (see configs/merge_demo.yaml)."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key.sub=value"),
        search: Optional[bool] = typer.Option(
            None, "--search/--no-search",
            help="Search a grid of weights/density scored on dev sets (default: when the config has search:)."),
    ) -> None:
        """Merge models with mergekit (dare_ties, ties, slerp, linear, task_arithmetic, ...), streamed and checked."""
        from ..config import load_config
        from .config import MergeConfig
        from .run import run
        cfg = load_config(MergeConfig, config, sets)
        if search is False:
            cfg.search = None
        elif search and cfg.search is None:
            cfg.search = default_grid(cfg)
        print(json.dumps(run(cfg), indent=2))
