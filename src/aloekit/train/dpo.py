"""Direct preference optimisation in stages (TRL DPOTrainer): stage N's output is stage N+1's policy and
reference. Aloe: stage 1 on human/medical preferences, stage 2 on red-teaming safety pairs at a lower lr.

    <output>/stage<i>-<name>/{checkpoints/, model/, metrics.json, ...}
    <output>/model -> the last stage's model (a copy-free pointer in metrics.json: final_model)
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import console
from ..io import atomic_write_json
from ..models import resolve
from ..rundir import RunDir
from ..stage import numbers
from .common import (
    check_disk,
    config_hash,
    eval_before,
    is_finished,
    is_main_process,
    load_policy,
    load_tokenizer,
    lora_config,
    mark_finished,
    require_extras,
    resume_point,
    set_threads,
    stamp_run,
    train_and_save,
    train_seconds,
    trainer_kwargs,
)
from .config import DPOConfig, DPOStage
from .data import train_eval


def trl_args(cfg: DPOConfig, stage: DPOStage, ckpt_dir: Path, has_eval: bool):
    from trl import DPOConfig as TrlDPOConfig
    losses = [stage.loss_type] if isinstance(stage.loss_type, str) else list(stage.loss_type)
    if stage.loss_weights is not None and len(stage.loss_weights) != len(losses):
        from ..errors import UserError
        raise UserError(f"stages.{stage.name}.loss_weights: {len(stage.loss_weights)} weights for {len(losses)} "
                        "loss types; give one weight per loss_type")
    return TrlDPOConfig(beta=stage.beta, loss_type=losses, loss_weights=stage.loss_weights, max_length=cfg.max_length,
                        precompute_ref_log_probs=cfg.precompute_ref_log_probs,
                        **trainer_kwargs(cfg, stage.optim, ckpt_dir, has_eval))


def _stage_metrics(m: dict) -> dict:
    keys = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen",
            "eval_rewards/rejected")
    return {k.replace("eval_", ""): m[k] for k in keys if k in m}


def run_stage(cfg: DPOConfig, i: int, stage: DPOStage, policy: str, rd: RunDir) -> dict:
    from transformers import set_seed
    from trl import DPOTrainer

    sdir = Path(cfg.output) / f"stage{i + 1}-{stage.name}"
    want = config_hash(cfg.model_copy(update={"stages": []}), stage, i, policy)
    if is_finished(sdir, want):
        console.note(f"dpo: {sdir.name} already trained with this config; skipping")
        return json.loads((sdir / "train_run.json").read_text())["metrics"]
    sdir.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(policy, cfg)
    with rd.timed(f"{stage.name}/data"):
        train, val = train_eval(stage.dataset, stage.eval_dataset, stage.eval_fraction, "dpo", cfg.seed,
                                limit=stage.max_pairs)
    set_seed(cfg.seed)
    model = load_policy(policy, cfg)
    peft_config = lora_config(cfg.lora, model) if cfg.method in ("lora", "qlora") else None
    ckpt_dir = sdir / "checkpoints"
    resume = resume_point(cfg.resume, want, sdir, ckpt_dir)
    check_disk(sdir, model, cfg)
    main = is_main_process()
    if main:
        stamp_run(want, sdir, policy)
    # ref_model=None: TRL keeps a frozen copy of the starting policy (or disables the adapter with LoRA), which is
    # exactly "stage N's output is stage N+1's reference"
    trainer = DPOTrainer(model=model, ref_model=None, args=trl_args(cfg, stage, ckpt_dir, val is not None),
                         train_dataset=train, eval_dataset=val, processing_class=tok, peft_config=peft_config)
    before_file = sdir / "eval_before.json"
    with rd.timed(f"{stage.name}/eval_before"):
        eval_before(trainer, before_file, val is not None, main)
    console.note(f"dpo {stage.name}: {len(train)} pairs, beta={stage.beta}, lr={stage.optim.lr}; "
                 f"{'resuming from ' + resume if resume else 'starting'}")
    after: dict = {}

    def evaluate_after() -> None:
        if val is not None:
            with rd.timed(f"{stage.name}/eval_after"):
                after.update(trainer.evaluate())

    with rd.timed(f"{stage.name}/train"):
        out = train_and_save(trainer, resume, tok, sdir / "model", cfg.merge_lora, ckpt_dir, main,
                             before_save=evaluate_after)
    m = {"stage": stage.name, "policy": policy, "pairs": len(train), "steps": trainer.state.global_step,
         "train_loss": out.training_loss, "seconds_per_step": round(train_seconds(trainer, out) /
                                                                    max(trainer.state.global_step, 1), 2),
         "model": str(sdir / "model"),
         "train_last_log": _stage_metrics({f"eval_{k}": v for k, v in next(
             (h for h in reversed(trainer.state.log_history) if "rewards/margins" in h), {}).items()})}
    if val is not None:
        if not main:
            return m
        m.update(validation_pairs=len(val), before=_stage_metrics(json.loads(before_file.read_text())),
                 after=_stage_metrics(after))
    if not main:
        return m
    atomic_write_json(sdir / "metrics.json", m)
    atomic_write_json(sdir / "log_history.json", trainer.state.log_history)
    mark_finished(sdir, want, policy, m)
    return m


def run(cfg: DPOConfig) -> dict:
    require_extras(cfg, "aloekit train dpo")
    set_threads()
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        from ..errors import UserError
        raise UserError(f"stages: names must be unique, got {', '.join(names)}")
    rd = RunDir(cfg.output, "dpo", cfg, seed=cfg.seed, inputs={s.name: s.dataset for s in cfg.stages},
                write=is_main_process())
    policy = str(resolve(cfg.model))
    stages = []
    for i, stage in enumerate(cfg.stages):
        m = run_stage(cfg, i, stage, policy, rd)
        stages.append(m)
        policy = m["model"]
    result = {"stages": stages, "final_model": policy}
    if rd.write:
        atomic_write_json(rd.output("metrics", "metrics.json"), result)
    rd.output("model", f"stage{len(cfg.stages)}-{cfg.stages[-1].name}/model")  # = final_model
    rd.finish(final_model=policy, metrics=numbers(stages[-1]))  # the recipe's metrics: the last stage's
    return result
