"""Training configs: one for SFT, one for the DPO stage list. Field names follow TRL where they exist."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from ..config import StrictModel
from ..models import DEFAULT_MODEL


class LoraSettings(StrictModel):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # "all-linear" or module names (the last part of a module path, e.g. q_proj)
    target_modules: Union[Literal["all-linear"], list[str]] = "all-linear"


class OptimSettings(StrictModel):
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = Field(8, ge=1)  # per device
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)  # fraction of total steps
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0


class TrainCommon(StrictModel):
    model: str = DEFAULT_MODEL
    output: str = "runs/train"
    method: Literal["full", "lora", "qlora"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    merge_lora: bool = True  # save full weights (LoRA merged) so later stages load a plain HF folder
    max_length: int = Field(1024, ge=8)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 (CPU measured faster, GPU if supported)
    gradient_checkpointing: bool = False  # saves memory at paper scale; only slows a 135M model on CPU
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(5, ge=1)
    eval_steps: int | None = None  # None: evaluate at the end only
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    resume: Union[Literal["auto", "never"], str] = "auto"  # auto: continue from the last complete checkpoint
    chat_template: str | None = None  # "chatml", a Jinja string, or a .jinja file; only used if the model lacks one
    seed: int = 0


class SFTConfig(TrainCommon):
    dataset: str  # HF dataset folder, .jsonl/.json/.parquet/.csv, or a data-stage run directory
    eval_dataset: str | None = None  # default: the dataset's validation split, else eval_fraction of train
    eval_fraction: float = Field(0.05, ge=0, lt=1)
    packing: bool = True
    optim: OptimSettings = Field(default_factory=OptimSettings)


class DPOStage(StrictModel):
    name: str
    dataset: str
    eval_dataset: str | None = None
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    beta: float = Field(0.1, gt=0)
    # TRL's loss names; a list is combined with loss_weights, e.g. [sigmoid, sft] = DPO + NLL on the chosen
    # answers (RPO), which teaches the safe answers themselves, not only the preference
    loss_type: str | list[str] = "sigmoid"
    loss_weights: list[float] | None = None
    optim: OptimSettings = Field(default_factory=lambda: OptimSettings(lr=5e-7, batch_size=4))
    max_pairs: int | None = None


class DPOConfig(TrainCommon):
    method: Literal["full", "lora", "qlora"] = "full"
    stages: list[DPOStage] = Field(min_length=1)
    precompute_ref_log_probs: bool = False
    max_length: int = Field(512, ge=8)
