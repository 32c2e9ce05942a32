"""`aloekit run RECIPE`: the whole method, resumable, gated, reported."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        recipe: Path = typer.Argument(..., help="Recipe YAML (configs/demo.yaml, configs/aloe-llama3.1-8b.yaml)."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: key.sub=value"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run directory (default: recipe's)."),
        from_: Optional[str] = typer.Option(None, "--from", help="Start at this stage (earlier ones must be done)."),
        until: Optional[str] = typer.Option(None, "--until", help="Stop after this stage (and its evaluation)."),
        only: Optional[List[str]] = typer.Option(None, "--only", help="Run only these stages (repeatable)."),
        force: bool = typer.Option(False, "--force", help="Rerun the selected stages even if finished."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the plan with estimates."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip the HTML report and model card."),
        push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Upload the final model + card "
                                                  "to this hub repo (org/name) when the run passes."),
        public: bool = typer.Option(False, "--public", help="With --push-to-hub: a public repo (default private)."),
    ) -> None:
        """Run a recipe: data -> sft -> merge -> dpo -> redteam -> dpo -> eval -> report, skipping finished stages."""
        from ..config import load_config
        from .config import RecipeConfig
        from .run import run
        cfg = load_config(RecipeConfig, recipe, sets)
        run(cfg, recipe_file=str(recipe), output=str(output) if output else None, from_=from_, until=until,
            only=only, force=force, dry_run=dry_run, report=False if no_report else None, push_repo=push_to_hub,
            private=not public)
