"""Typed configuration: pydantic models loaded from YAML, with `key.sub=value` overrides.

Every stage defines a `Config(StrictModel)`. Unknown keys are errors that list the valid ones, so a typo in
a recipe fails at load time instead of silently using a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from .errors import UserError
from .io import read_text_utf8

T = TypeVar("T", bound="StrictModel")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class SamplingConfig(StrictModel):
    """How to decode. temperature 0 means greedy."""

    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    # one seed per prompt: sample k of prompt i draws from seeds[i] + k alone, so what a prompt gets does not
    # depend on the other prompts of the call (medprompt's members: the same answers in any batch, any round)
    seeds: list[int] | None = None


class VLLMSettings(StrictModel):
    """Engine settings of the vllm backend (`model.vllm`), passed to `vllm.LLM`. A stage's GPUs are
    tensor_parallel_size x pipeline_parallel_size x data_parallel_size; `aloekit run --dry-run` prints them with
    the memory each GPU needs."""

    tensor_parallel_size: int = Field(1, ge=1, description="GPUs each layer is split over (one engine)")
    pipeline_parallel_size: int = Field(1, ge=1, description="GPUs the layers are spread over (one engine)")
    # vLLM's own data_parallel_size is not usable from the offline LLM class (it refuses it, or hangs, outside
    # an external launcher), so data parallelism here is N independent engines: see backends/vllm.py
    data_parallel_size: int = Field(1, ge=1, description="independent engines, each on its own "
                                                         "tensor x pipeline GPUs; the prompts are split among them")
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0, description="share of each GPU's memory the "
                                          "engine takes for weights, activations and KV cache")
    max_model_len: int | None = Field(None, ge=1, description="context length (prompt + generation); None: the "
                                                              "model's own, whose KV cache may not fit")
    enable_prefix_caching: bool = True
    gpu_memory_gib: float | None = Field(None, gt=0.0, description="memory of one GPU, only for --dry-run's fit "
                                                                   "check (None: an H100's 80 GiB)")

    @property
    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


class ModelConfig(StrictModel):
    name: str = "smollm2-135m-instruct"
    backend: Literal["hf", "vllm", "llamacpp", "openai"] = "hf"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    # scoring: prepend the tokenizer's special tokens (BOS) as lm-eval's hf model does. None: the tokenizer's own
    # default (Llama 3 adds BOS, SmolLM2 adds none), which is lm-eval's default too
    add_bos_token: bool | None = None
    # openai backend only
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    # vllm backend only (None: VLLMSettings' defaults)
    vllm: VLLMSettings | None = None

    @model_validator(mode="after")
    def _vllm_settings_need_vllm(self):
        if self.vllm is not None and self.backend != "vllm":
            raise ValueError(f"vllm: engine settings are for backend vllm, but backend is '{self.backend}'; "
                             "set backend: vllm or remove vllm")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        # stage keys hash dumped configs: a config without vLLM settings or a BOS override dumps as it did before
        # they existed, so finished run directories stay reusable
        data = handler(self)
        for key in ("vllm", "add_bos_token"):
            if isinstance(data, dict) and key in data and data[key] is None:
                del data[key]
        return data


class GenerateConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    system: str | None = None
    seed: int = 0


def _model_in(ann: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds: X, list[X], X | None."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in get_args(ann):
        found = _model_in(arg)
        if found:
            return found
    return None


def _format_validation_error(cls: type[BaseModel], err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent: Any = cls
        for part in e["loc"][:-1]:
            if isinstance(part, int):  # an item of a list field: its model was found at the field
                continue
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            parent = _model_in(getattr(field, "annotation", None))
            if parent is None:
                break
        valid = ", ".join(sorted(parent.model_fields)) if parent else "?"
        return f"{source}: unknown key '{loc}'; valid keys here: {valid}"
    # a model-level validator's error has no location: the message alone
    return f"{source}: '{loc}': {e['msg']}" if loc else f"{source}: {e['msg']}"


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}' conflicts with an earlier override of '{p}'")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(read_text_utf8(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> T:
    data = deep_merge(base or {}, read_yaml(path) if path else {})
    data = deep_merge(data, parse_overrides(overrides))
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_validation_error(cls, err, str(path) if path else "config")) from None


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
