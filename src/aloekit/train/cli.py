"""`aloekit train sft|dpo CONFIG` verbs. Distributed, each runs under `accelerate launch -m aloekit.cli train
sft CONFIG` on every machine (configs/slurm/); global rank 0 writes the files (train/common.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

train_app = typer.Typer(no_args_is_help=True, help="Supervised fine-tuning and staged DPO (TRL + PEFT).")


@train_app.command("sft")
def sft_cmd(config: Path = typer.Argument(..., help="SFT YAML (see configs/sft_demo.yaml)."),
            sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key.sub=value")) -> None:
    """Fine-tune on prompt/completion (loss on completions only), messages or text data; resumable."""
    from ..config import load_config
    from .config import SFTConfig
    from .sft import run
    _print(run(load_config(SFTConfig, config, sets)))


@train_app.command("dpo")
def dpo_cmd(config: Path = typer.Argument(..., help="DPO YAML with a list of stages (see configs/dpo_demo.yaml)."),
            sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key.sub=value")) -> None:
    """Align with DPO in stages; each stage starts from (and is referenced to) the previous one."""
    from ..config import load_config
    from .config import DPOConfig
    from .dpo import run
    _print(run(load_config(DPOConfig, config, sets)))


def _print(metrics: dict) -> None:
    from .common import is_main_process
    # under `accelerate launch` every process runs the verb; the others have no metrics, and a job of many
    # machines should print one result, not one `{}` per process
    if is_main_process():
        print(json.dumps(metrics, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
