"""Supervised fine-tuning on TRL's SFTTrainer (+ PEFT LoRA), resumable after kill -9.

    <output>/
      checkpoints/checkpoint-N/   Trainer checkpoints (only complete ones are resumed from)
      model/                      final HF folder (LoRA merged unless merge_lora: false), tokenizer, chat template
      metrics.json                validation loss before/after, tokens/s, steps
      log_history.json, train_run.json, manifest.json, config.yaml
"""

from __future__ import annotations

from pathlib import Path

from .. import console
from ..io import atomic_write_json
from ..models import resolve
from ..rundir import RunDir
from .common import (
    check_disk,
    check_template_masks_prompt,
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
from .config import SFTConfig
from .data import train_eval


def trl_args(cfg: SFTConfig, ckpt_dir: Path, has_eval: bool):
    from trl import SFTConfig as TrlSFTConfig
    # Real tokens seen: a padded batch counts its attention mask; a packed (padding-free) batch has no padding but
    # also no mask, and "non_padding" would then drop every token equal to pad_token_id, which is the end-of-turn
    # token (<|im_end|>) in chat models whose pad is their eos, so count all of it
    return TrlSFTConfig(max_length=cfg.max_length, packing=cfg.packing, packing_strategy="bfd",
                        include_num_input_tokens_seen="all" if cfg.packing else "non_padding",
                        **trainer_kwargs(cfg, cfg.optim, ckpt_dir, has_eval))


def run(cfg: SFTConfig) -> dict:
    require_extras(cfg, "aloekit train sft")
    from transformers import set_seed
    from trl import SFTTrainer

    set_threads()
    run_dir = Path(cfg.output)
    want = config_hash(cfg)
    if is_finished(run_dir, want):
        console.note(f"sft: {run_dir}/model is already trained with this config; skipping")
        import json
        return json.loads((run_dir / "train_run.json").read_text())["metrics"]
    main = is_main_process()
    rd = RunDir(run_dir, "sft", cfg, seed=cfg.seed, inputs={"dataset": cfg.dataset}, write=main)
    model_path = resolve(cfg.model)
    tok = load_tokenizer(model_path, cfg)
    with rd.timed("data"):
        train, val = train_eval(cfg.dataset, cfg.eval_dataset, cfg.eval_fraction, "sft", cfg.seed)
    if "prompt" in train.column_names and isinstance(train[0]["prompt"], list):
        check_template_masks_prompt(tok, train[0]["prompt"], train[0]["completion"], cfg.dataset)
    set_seed(cfg.seed)
    # fp32 master weights; bf16/fp16 come from autocast (TrainingArguments), which keeps optimizer updates exact
    model = load_policy(model_path, cfg)
    peft_config = lora_config(cfg.lora, model) if cfg.method in ("lora", "qlora") else None
    ckpt_dir = run_dir / "checkpoints"
    resume = resume_point(cfg.resume, want, run_dir, ckpt_dir)
    check_disk(run_dir, model, cfg)
    if main:
        stamp_run(want, run_dir, cfg.model)
    trainer = SFTTrainer(model=model, args=trl_args(cfg, ckpt_dir, val is not None), train_dataset=train,
                         eval_dataset=val, processing_class=tok, peft_config=peft_config)
    before_file = run_dir / "eval_before.json"
    with rd.timed("eval_before"):
        eval_before(trainer, before_file, val is not None, main)
    console.note(f"sft: {len(train)} train / {len(val) if val is not None else 0} validation rows; "
                 f"{'resuming from ' + resume if resume else 'starting'}")
    with rd.timed("train"):
        out = train_and_save(trainer, resume, tok, run_dir / "model", cfg.merge_lora, ckpt_dir, main)
    train_s = train_seconds(trainer, out)  # the training loop only, not the final LoRA merge and save
    metrics = {"train_loss": out.training_loss, "steps": trainer.state.global_step, "train_rows": len(train),
               "tokens_seen": int(trainer.state.num_input_tokens_seen), "train_seconds": round(train_s, 1),
               "resumed_from": resume}
    metrics["tokens_per_s"] = round(metrics["tokens_seen"] / max(train_s, 1e-9), 1) if not resume else None
    if val is not None:
        import json
        with rd.timed("eval_after"):
            after = trainer.evaluate()
        if not main:
            return {}
        before = json.loads(before_file.read_text())
        metrics.update(eval_loss_before=before["eval_loss"], eval_loss_after=after["eval_loss"],
                       validation_rows=len(val))
    if not main:
        return {}
    metrics["world_size"] = trainer.args.world_size
    atomic_write_json(rd.output("metrics", "metrics.json"), metrics)
    atomic_write_json(rd.output("log_history", "log_history.json"), trainer.state.log_history)
    rd.output("model", "model")
    mark_finished(run_dir, want, cfg.model, metrics)
    rd.finish(metrics=metrics)
    return metrics
