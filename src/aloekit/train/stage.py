"""The two training stages, SFT and staged DPO, under the stage contract (aloekit/stage.py)."""

from __future__ import annotations

from pathlib import Path

from ..stage import Estimate, Stage, read_json
from .config import DPOConfig, SFTConfig, TrainCommon


def run_sft(cfg: SFTConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .sft import run
    run(cfg.model_copy(update={"output": str(out)}))
    return out


def run_dpo(cfg: DPOConfig, inputs: dict[str, Path], out: Path) -> Path:
    from .dpo import run
    run(cfg.model_copy(update={"output": str(out)}))
    return out


def _full(cfg: TrainCommon) -> bool:
    return cfg.method == "full"


def _disk(cfg: TrainCommon) -> float:
    """bf16 weights, plus the checkpoints' optimizer state (12 bytes/param) when every weight trains."""
    return 2 + (cfg.save_total_limit * (2 + 12) if _full(cfg) else 0.05)


def estimate_sft(cfg: SFTConfig) -> Estimate:
    # the tokens of a dataset built by an earlier stage are unknown until it runs: `estimate.train_tokens`
    return Estimate(train_flops_per_param_token=6 if _full(cfg) else 4, disk_bytes_per_param=_disk(cfg))


def estimate_dpo(cfg: DPOConfig) -> Estimate:
    pairs = sum(s.max_pairs or 0 for s in cfg.stages)
    epochs = max(s.optim.epochs for s in cfg.stages)
    per_seq = 6 if _full(cfg) else 4
    # chosen and rejected both run; the reference model adds a forward (2 FLOPs) on each unless precomputed
    flops = per_seq * 2 + (0 if cfg.precompute_ref_log_probs else 2 * 2)
    return Estimate(train_tokens=pairs * 2 * cfg.max_length * epochs if pairs else None,
                    train_flops_per_param_token=flops, disk_bytes_per_param=_disk(cfg))


def requires(cfg: TrainCommon, what: str) -> None:
    from .common import require_extras
    require_extras(cfg, what)


def dpo_model(config: dict) -> str:
    """The last DPO stage's model folder (each stage trains from the one before)."""
    stages = config.get("stages") or []
    last = stages[-1]["name"] if stages and isinstance(stages[-1], dict) else "stage"
    return f"stage{len(stages)}-{last}/model"


def sft_tokens(run_dir: Path) -> tuple[int | None, str]:
    return read_json(run_dir / "metrics.json").get("tokens_seen"), "trained on (non-padding)"


SFT = Stage(kind="sft", config=SFTConfig, run=run_sft, model_fields=("model",),
            dataset_fields=("dataset", "eval_dataset"), model_output=lambda config: "model", starts_from="model",
            estimate=estimate_sft, requires=requires, command=("train", "sft"), section="training",
            tokens=sft_tokens)
DPO = Stage(kind="dpo", config=DPOConfig, run=run_dpo, model_fields=("model",),
            dataset_fields=("stages[].dataset", "stages[].eval_dataset"), model_output=dpo_model,
            starts_from="model", estimate=estimate_dpo, requires=requires, command=("train", "dpo"),
            section="training")
STAGE = SFT  # the package's first kind; the registry names both (aloekit.train.stage:SFT / :DPO)
