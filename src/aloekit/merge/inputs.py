"""Merge inputs: resolve what the user named into plain HF folders, and check they can be merged at all.

mergekit reads HF folders tensor by tensor; everything it cannot read that way (a LoRA adapter, a training run
directory, a registry name) is turned into a folder here first. The checks run before anything is written, so
bad input fails in a second with a message that names the model and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import console
from ..errors import UserError
from ..io import atomic_dir, hash_path
from ..models import aloekit_home, resolve

# config.json fields that must agree for tensors to line up one to one
SHAPE_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings")


@dataclass
class ModelInfo:
    spec: str  # what the user wrote
    path: Path  # HF folder mergekit reads
    config: dict = field(default_factory=dict)
    vocab: dict | None = None
    chat_template: str | None = None

    @property
    def architecture(self) -> str:
        return ",".join(self.config.get("architectures") or [self.config.get("model_type", "?")])

    @property
    def dtype(self) -> str | None:
        return self.config.get("dtype") or self.config.get("torch_dtype")


def _run_dir_model(path: Path) -> Path | None:
    """A training run directory names its model output in manifest.json."""
    manifest = path / "manifest.json"
    if not manifest.is_file():
        return None
    out = json.loads(manifest.read_text()).get("outputs", {}).get("model")
    return path / out if out else None


def merge_lora(adapter: Path) -> Path:
    """Fold a PEFT LoRA adapter into its base model's weights, once; returns the cached full-weight folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    acfg = json.loads((adapter / "adapter_config.json").read_text())
    base = acfg.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter}/adapter_config.json: no base_model_name_or_path; cannot merge this LoRA")
    out = aloekit_home() / "merge_cache" / f"lora-{hash_path(adapter)[:16]}"
    if (out / "config.json").is_file():
        return out
    console.note(f"merge: folding LoRA {adapter} into {base}")
    base_path = resolve(base) if not Path(base).is_dir() else base
    # fp32 so the folded weights are exact; the merge itself picks the output dtype
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else base_path
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tok_src).save_pretrained(tmp)
    return out


def resolve_input(spec: str, where: str) -> Path:
    """Registry name / hub id / HF folder / LoRA adapter / training run dir -> full-weight HF folder."""
    p = Path(spec).expanduser()
    if p.is_dir():
        p = _run_dir_model(p) or p
        if (p / "adapter_config.json").is_file():
            return merge_lora(p)
        if not (p / "config.json").is_file():
            raise UserError(f"{where}: {spec} is a folder without config.json (not an HF model, LoRA adapter "
                            "or training run directory); point to a model folder")
        return p
    if p.suffix == ".gguf":
        raise UserError(f"{where}: {spec} is a GGUF file; merge HF folders (`aloekit models prepare` converts)")
    try:
        return Path(resolve(spec))
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


_TOKENIZER_INFO: dict[tuple, tuple[dict, str | None]] = {}


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def tokenizer_info(path: Path) -> tuple[dict, str | None]:
    """(vocab, chat template), cached per folder and file stamps: a search or a test merges the same inputs many
    times, and parsing a 50k-token tokenizer.json costs about a second. Only the small results are kept, not the
    tokenizer objects (tens of MB each, which would count against the merge's memory)."""
    key = (str(path.resolve()),) + tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size)
                                                 for f in path.glob("*token*")))
    if key not in _TOKENIZER_INFO:
        tok = load_tokenizer(path)
        t = tok.chat_template
        _TOKENIZER_INFO[key] = (tok.get_vocab(), t if isinstance(t, str) or t is None else json.dumps(t, sort_keys=True))
    return _TOKENIZER_INFO[key]


def inspect(spec: str, where: str) -> ModelInfo:
    path = resolve_input(spec, where)
    info = ModelInfo(spec=spec, path=path, config=json.loads((path / "config.json").read_text()))
    try:
        info.vocab, info.chat_template = tokenizer_info(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{where}: {path} has no loadable tokenizer ({str(e).splitlines()[0][:120]}); "
                        "every merge input needs its tokenizer files") from None
    return info


def check_compatible(infos: list[tuple[str, ModelInfo]]) -> None:
    """Same architecture, same tensor shapes, same vocabulary: otherwise the merge is meaningless."""
    ref_where, ref = infos[0]
    for where, m in infos[1:]:
        if m.architecture != ref.architecture:
            raise UserError(f"{where}: architecture {m.architecture} ({m.spec}) differs from {ref_where}'s "
                            f"{ref.architecture} ({ref.spec}); merge only models of one architecture")
        for f in SHAPE_FIELDS:
            a, b = ref.config.get(f), m.config.get(f)
            if a != b:
                what = "vocabulary size" if f == "vocab_size" else f"config field {f}"
                raise UserError(f"{where}: {what} is {b} ({m.spec}) but {a} in {ref_where} ({ref.spec}); "
                                "merge only fine-tunes of the same base model")
        if m.vocab != ref.vocab:
            diff = len(set(m.vocab.items()) ^ set(ref.vocab.items()))
            raise UserError(f"{where}: tokenizer vocabulary of {m.spec} differs from {ref_where}'s ({diff} token ids "
                            "differ); merge only models that share one tokenizer")
