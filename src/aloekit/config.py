"""Typed configuration: pydantic models loaded from YAML, with `key.sub=value` overrides.

Every stage defines a `Config(StrictModel)`. Unknown keys are errors that list the valid ones, so a typo in
a recipe fails at load time instead of silently using a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class ModelConfig(StrictModel):
    name: str = "smollm2-135m-instruct"
    backend: Literal["hf", "vllm", "llamacpp", "openai"] = "hf"
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    # openai backend only
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"


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
