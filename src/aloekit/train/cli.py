"""`aloekit train sft|dpo CONFIG` verbs."""

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
    print(json.dumps(run(load_config(SFTConfig, config, sets)), indent=2))


@train_app.command("dpo")
def dpo_cmd(config: Path = typer.Argument(..., help="DPO YAML with a list of stages (see configs/dpo_demo.yaml)."),
            sets: Optional[List[str]] = typer.Option(None, "--set", help="Override: key.sub=value")) -> None:
    """Align with DPO in stages; each stage starts from (and is referenced to) the previous one."""
    from ..config import load_config
    from .config import DPOConfig
    from .dpo import run
    print(json.dumps(run(load_config(DPOConfig, config, sets)), indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
