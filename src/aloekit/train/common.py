"""What SFT and DPO share: loading the policy, precision, LoRA, checkpoints that survive kill -9, the final save."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from ..extras import require
from ..io import atomic_dir, atomic_write_json
from .config import LoraSettings, OptimSettings, TrainCommon

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def device_and_precision(cfg: TrainCommon) -> dict:
    """TrainingArguments fields for the device: bf16 on CPU (measured 2-3.5x faster), GPU when present."""
    import torch
    cuda = torch.cuda.is_available()
    p = cfg.precision
    if p == "auto":
        p = "bf16" if (not cuda or torch.cuda.is_bf16_supported()) else "fp16"
    if p == "fp16" and not cuda:
        raise UserError("precision fp16 needs a GPU; use bf16 or fp32 on CPU")
    if cfg.method == "qlora" and not cuda:
        raise UserError("method qlora needs a CUDA GPU (bitsandbytes 4-bit); use method: lora on CPU")
    return {"use_cpu": not cuda, "bf16": p == "bf16", "fp16": p == "fp16"}


def trainer_kwargs(cfg: TrainCommon, o: OptimSettings, ckpt_dir: Path, has_eval: bool) -> dict:
    """TrainingArguments shared by SFT and DPO, from our config."""
    from .. import console
    return dict(
        output_dir=str(ckpt_dir), per_device_train_batch_size=o.batch_size, per_device_eval_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum, learning_rate=o.lr, num_train_epochs=o.epochs, max_steps=o.max_steps,
        lr_scheduler_type=o.scheduler, warmup_steps=o.warmup_ratio, weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm, logging_steps=cfg.logging_steps, save_strategy="steps",
        save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if (cfg.eval_steps and has_eval) else "no", eval_steps=cfg.eval_steps,
        report_to=report_to(cfg), seed=cfg.seed, data_seed=cfg.seed,
        activation_checkpointing=cfg.gradient_checkpointing, dataloader_num_workers=0, disable_tqdm=console.QUIET,
        **device_and_precision(cfg))


def load_tokenizer(path: str, cfg: TrainCommon):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tmpl = cfg.chat_template or "chatml"
        if tmpl == "chatml":
            tmpl = CHATML
        elif tmpl.endswith(".jinja"):
            tmpl = Path(tmpl).read_text()
        tok.chat_template = tmpl
    return tok


def check_template_masks_prompt(tok, example_prompt: list[dict], example_completion: list[dict], source: str) -> None:
    """Completion-only loss needs template(prompt, generation prompt) to be a prefix of template(prompt+completion)."""
    p = tok.apply_chat_template(example_prompt, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(example_prompt + example_completion, tokenize=False)
    if not full.startswith(p):
        raise UserError(f"{source}: the chat template renders the prompt differently once the answer follows, so the "
                        "prompt cannot be masked from the loss; set `chat_template: chatml` (or a template whose "
                        "generation prompt is a prefix of the full conversation)")


def lora_config(settings: LoraSettings, model, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig
    targets = settings.target_modules
    if targets != "all-linear":
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if type(m).__name__ == "Linear" and n.rsplit(".", 1)[-1] != "lm_head"})
            raise UserError(f"lora.target_modules: {', '.join(missing)} not in model; its linear layers are "
                            f"{', '.join(linear)} (or use all-linear)")
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, task_type=task_type)


def config_hash(*parts) -> str:
    """Identity of a run for resume: the config minus where it writes and how it resumes, plus any extra parts."""
    data = [p.model_dump(mode="json", exclude={"output", "resume", "report_to", "logging_steps"})
            if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def complete_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Checkpoints that were fully written. The Trainer writes trainer_state.json last, so a checkpoint without it
    was cut off (kill -9, full disk) and must not be resumed from."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted((p for p in found if (p / "trainer_state.json").is_file()), key=lambda p: int(p.name.split("-")[-1]))


def resume_point(resume: str, want: str, run_dir: Path, ckpt_dir: Path) -> str | None:
    """The checkpoint to resume from (or None). `want` is this run's config hash."""
    stamp_file = run_dir / "train_run.json"
    if resume == "never":
        return None
    if resume != "auto":  # an explicit checkpoint path: it must belong to a run with the same config
        ck = Path(resume).expanduser()
        owner = ck.parent.parent / "train_run.json"
        if not (ck / "trainer_state.json").is_file():
            raise UserError(f"resume: {ck} is not a complete checkpoint (no trainer_state.json)")
        if not owner.is_file() or json.loads(owner.read_text()).get("config_hash") != want:
            raise UserError(f"resume: {ck} comes from another run (different config); resume only a run with the "
                            "same config, or set resume: never")
        return str(ck)
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("config_hash") != want:
        if complete_checkpoints(ckpt_dir):
            raise UserError(f"{run_dir} holds checkpoints of a run with a different config; use another output "
                            "folder or set resume: never to start over")
    for partial in ckpt_dir.glob("checkpoint-*"):
        if not (partial / "trainer_state.json").is_file():
            shutil.rmtree(partial, ignore_errors=True)  # cut off mid-write: never resume from it
    done = complete_checkpoints(ckpt_dir)
    return str(done[-1]) if done else None


def stamp_run(want: str, run_dir: Path, model: str) -> None:
    atomic_write_json(run_dir / "train_run.json", {"config_hash": want, "model": model})


def is_finished(run_dir: Path, want: str) -> bool:
    stamp = run_dir / "train_run.json"
    if not ((run_dir / "model" / "config.json").is_file() and stamp.is_file()):
        return False
    data = json.loads(stamp.read_text())
    return data.get("config_hash") == want and data.get("finished", False)


def mark_finished(run_dir: Path, want: str, model: str, metrics: dict) -> None:
    atomic_write_json(run_dir / "train_run.json", {"config_hash": want, "model": model, "finished": True,
                                                   "metrics": metrics})


def check_disk(run_dir: Path, model, cfg: TrainCommon) -> None:
    """Fail before training when the checkpoints cannot fit, rather than dying mid-save."""
    n = sum(p.numel() for p in model.parameters())
    trainable = n if cfg.method == "full" else n // 50
    need = (n * 4) * 2 + trainable * 12 * cfg.save_total_limit  # final + merged copy; fp32 weights + Adam states
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UserError(f"{run_dir}: {free / 1e9:.1f} GB free, training needs about {need / 1e9:.1f} GB for "
                        "checkpoints and the final model; free space or choose another output")


def translate_os_error(e: OSError, ckpt_dir: Path) -> UserError | None:
    if e.errno == errno.ENOSPC:
        done = complete_checkpoints(ckpt_dir)
        last = done[-1] if done else "none"
        return UserError(f"out of disk space while training; last good checkpoint: {last}. Free space and rerun "
                         "the same command to resume")
    return None


def require_extras(cfg: TrainCommon, what: str) -> None:
    """The extras a training run needs, checked before anything is loaded (the recipe checks every stage first)."""
    require("train", what=what)
    for r in cfg.report_to:  # the module of each tracker is named like it
        require("tracking", r, what=f"{what} with report_to: {r}")


def report_to(cfg: TrainCommon) -> list[str] | str:
    return list(cfg.report_to) or "none"


def load_policy(path: str, cfg: TrainCommon):
    """The policy to train. fp32 master weights (bf16/fp16 come from autocast); QLoRA: a frozen 4-bit NF4 base
    (double quantisation, bf16 compute) under the LoRA adapter, on this process's GPU."""
    import torch
    from transformers import AutoModelForCausalLM
    if cfg.method != "qlora":
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    device_and_precision(cfg)  # a CPU run stops here with a one-line error
    require("gpu", "bitsandbytes", what="method qlora")
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig
    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=compute,
                                                 device_map={"": int(os.environ.get("LOCAL_RANK", 0))})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


@contextmanager
def _without_zero3_init():
    """Rank 0 alone loads the base to merge into. Under ZeRO-3, transformers (and PEFT) would build that model
    partitioned across the ranks (deepspeed.zero.Init), a collective the other ranks never join: it would hang, or
    give a base of empty shards. transformers keeps its switch in a module-level weak reference, so it is unset for
    the load and put back for the rest of the run (evaluation, a next DPO stage)."""
    try:
        from transformers.integrations import deepspeed as hf_deepspeed
    except ImportError:
        yield
        return
    ref = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = ref


def _merged_from_adapter(model, tmp: Path, state_dict=None):
    """LoRA merged into a full-precision copy of the base, read from disk: a 4-bit base (QLoRA) would only give a
    lossy 4-bit merge, and a sharded one (FSDP, ZeRO-3) cannot be merged in place (its adapter comes from
    `state_dict`, gathered from the shards)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    adapter = tmp / "_adapter"
    model.save_pretrained(adapter, state_dict=state_dict)
    with _without_zero3_init():
        base = AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path,
                                                    dtype="auto")
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    shutil.rmtree(adapter)
    return merged


def save_final(model, tok, out: Path, merge_lora: bool, state_dict=None) -> Path:
    """Write the trained model as a plain HF folder, atomically (LoRA merged unless asked otherwise).
    `state_dict`: the weights gathered from FSDP or ZeRO-3 shards (see gather_full_state; rank 0 saves). With a
    LoRA adapter it may hold the adapter's weights only: the base is read from disk for the merge."""
    from peft import PeftModel
    with atomic_dir(out) as tmp:
        if isinstance(model, PeftModel) and merge_lora:
            quantized = getattr(model.get_base_model().config, "quantization_config", None) is not None
            if quantized or state_dict is not None:
                model = _merged_from_adapter(model, tmp, state_dict)
            else:
                model = model.merge_and_unload()
            model.save_pretrained(tmp)
        else:
            model.save_pretrained(tmp, state_dict=state_dict)
        tok.save_pretrained(tmp)
    return out


def zero3_engine(trainer):
    """The DeepSpeed engine when it partitions the parameters themselves (ZeRO-3), else None. Under ZeRO-1/2 each
    rank keeps whole parameters (only optimizer state and gradients are partitioned), as under DDP."""
    if not getattr(trainer, "is_deepspeed_enabled", False):
        return None
    engine = trainer.deepspeed
    return engine if engine is not None and engine.zero_optimization_partition_weights() else None


def gather_full_state(trainer):
    """The complete weights for the final save where each rank holds only shards (FSDP, ZeRO-3), else None (the
    model can save itself). Collective: every rank calls it; DeepSpeed returns the weights on rank 0 only (None on
    the others), FSDP as accelerate gathers them.

    ZeRO-3: `save_pretrained` on rank 0 would write its own partitions, zero-sized tensors that no loader accepts.
    DeepSpeed's consolidation (what the Trainer's save_model uses) gathers one module at a time in the engine's
    16-bit (or fp32) dtype. It is called directly rather than through accelerate's get_state_dict, which refuses
    unless `zero3_save_16bit_model` is set: that flag decides the Trainer's checkpoints, while this folder is what
    the next stage loads, so it is always gathered. With LoRA only the trainable adapter is gathered (the frozen
    base is read from disk for the merge), as the Trainer does for PEFT models."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    engine = zero3_engine(trainer)
    if engine is None:
        return None
    consolidate = getattr(engine, "_zero3_consolidated_16bit_state_dict", None)
    if consolidate is None:
        import deepspeed
        raise RuntimeError(f"deepspeed {deepspeed.__version__} has no _zero3_consolidated_16bit_state_dict, which "
                           "aloekit uses to gather ZeRO-3 weights for the final save (tested with 0.19.8); the "
                           "checkpoints hold the partitioned state, from which deepspeed's zero_to_fp32.py rebuilds "
                           "the weights")
    from peft import PeftModel
    adapter_only = isinstance(trainer.accelerator.unwrap_model(trainer.model), PeftModel)
    return consolidate(exclude_frozen_parameters=adapter_only)


def eval_before(trainer, before_file: Path, has_eval: bool, main: bool) -> None:
    """Held-out metrics of the starting policy, once per run (a resumed run keeps the first measurement).
    Every rank decides before rank 0 can write the file, since evaluate() synchronises the ranks.
    Under FSDP2, accelerate prepares model and optimizer together and refuses an evaluate() before train(); under
    DeepSpeed an evaluate() first builds an inference-only engine, and train() then fails at its first backward
    ('NoneType' object has no attribute 'backward', seen with ZeRO-3 on CPU). There the measurement runs at the start
    of train(), before the first step, and its seconds are kept in `trainer.aloekit_eval_before_s` to be taken off
    the training time. Under DDP (any run of several processes) too: an evaluate() before train() marks the model as
    prepared unwrapped, so train() never wraps it in DistributedDataParallel and each rank then trains alone on its
    shard, silently (found by tests/test_multinode.py: rank 0 saved a model trained on half of each batch)."""
    if not has_eval or before_file.is_file():
        return
    if not (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)
            or getattr(getattr(trainer, "args", None), "world_size", 1) > 1):
        before = trainer.evaluate()
        if main:
            atomic_write_json(before_file, before)
        return
    import time

    from transformers import TrainerCallback

    class EvalAtTrainBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            t = time.time()
            before = trainer.evaluate()
            trainer.aloekit_eval_before_s = time.time() - t
            if main:
                atomic_write_json(before_file, before)

    trainer.add_callback(EvalAtTrainBegin())


def train_seconds(trainer, result) -> float:
    """The training loop's seconds, without an evaluation that ran inside it (see eval_before)."""
    return result.metrics["train_runtime"] - getattr(trainer, "aloekit_eval_before_s", 0.0)


def train_and_save(trainer, resume: str | None, tok, out: Path, merge_lora: bool, ckpt_dir: Path, main: bool,
                   before_save=None):
    """trainer.train(), then the final model (rank 0); a full disk becomes a one-line error naming the last good
    checkpoint. `before_save` runs while the trainer still holds the LoRA adapter (DPO's reference model is the
    adapter switched off: once merged for saving, it is gone)."""
    try:
        result = trainer.train(resume_from_checkpoint=resume)
        if before_save is not None:
            before_save()
        sharded = getattr(trainer, "is_fsdp_enabled", False) or zero3_engine(trainer) is not None
        state = gather_full_state(trainer)  # every rank takes part; rank 0 writes
        if main:
            model = trainer.accelerator.unwrap_model(trainer.model) if sharded else trainer.model
            if sharded and state is None:
                raise RuntimeError("the weights gathered for the final save did not reach this process (rank 0)")
            save_final(model, tok, out, merge_lora, state_dict=state)
        # the other ranks go on to read what rank 0 writes (a next DPO stage loads this folder as its policy):
        # without waiting they found it missing (seen under ZeRO-3 with two chained stages)
        trainer.accelerator.wait_for_everyone()
        return result
    except OSError as e:
        ue = translate_os_error(e, ckpt_dir)
        if ue:
            raise ue from None
        raise


def is_main_process() -> bool:
    """Rank 0 of a torchrun/accelerate launch (or a single process) owns every file the run writes."""
    return int(os.environ.get("RANK", "0")) == 0


def set_threads() -> None:
    # Trainer on CPU: let torch use every core (the default), but keep tokenizers from forking a second pool
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
