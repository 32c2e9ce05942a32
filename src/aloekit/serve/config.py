"""What `aloekit serve` serves and under which rules: the model (a recipe run's final model or any model aloekit
loads), the policy system prompt, the guard and the request limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from ..config import ModelConfig, StrictModel
from ..errors import UserError
from ..prompts import MEDICAL_SYSTEM_PROMPT, resolve_system_prompt

# What a flagged exchange gets instead of the model's answer: the refusal the safety alignment teaches (say no, say
# why, point to legitimate help), in a fixed wording so that clients can recognise it.
DEFAULT_REFUSAL = ("I can't help with that request, because it could cause harm. If you have a health concern, "
                   "please talk to a qualified health professional; in an emergency, contact local emergency "
                   "services.")

DISCLAIMER = ("Research model, not a medical device: answers can be wrong and are no substitute for a qualified "
              "health professional. In an emergency, call your local emergency number.")


class GuardConfig(StrictModel):
    enabled: bool = False
    # llamaguard: Llama Guard through transformers (categories S1-S14; S6 "specialized advice" alone is not harm
    # for a medical assistant); llm: any model aloekit loads, asked a yes/no harm question
    judge: Literal["llamaguard", "llm"] = "llamaguard"
    model: str | None = Field(None, description="judge model (default: meta-llama/Llama-Guard-3-1B for llamaguard)")
    on: Literal["request", "response", "both"] = "both"
    refusal: str = DEFAULT_REFUSAL


class ServeConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    served_name: str = "smollm2-135m-instruct"
    source: str = "model"  # where the model came from: "model" or the recipe run folder
    system: str = MEDICAL_SYSTEM_PROMPT
    system_source: str = "default"  # --system | recipe (stage name) | default
    system_mode: Literal["keep", "prepend", "replace"] = "keep"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
    max_prompt_tokens: int = Field(4096, ge=1)
    max_tokens: int = Field(2048, ge=1, description="the most tokens a request may ask for")
    default_max_tokens: int = Field(512, ge=1, description="when a request does not say")
    max_n: int = Field(8, ge=1)
    max_concurrent: int = Field(64, ge=1, description="requests in flight; more get 429")
    max_batch: int = Field(32, ge=1, description="requests per generate call")
    batch_window_ms: float = Field(15.0, ge=0)
    timeout_s: float = Field(300.0, gt=0)
    max_body_bytes: int = Field(1_000_000, ge=1024)
    shutdown_timeout_s: float = Field(30.0, ge=0)
    log: str | None = None  # JSONL request log ("-" = stdout)
    log_content: bool = False
    guard: GuardConfig = Field(default_factory=GuardConfig)


def recipe_system(run_dir: Path) -> tuple[str, str] | None:
    """The system prompt the run's safety alignment used (its red-team stage's `system`), if it set one: the model
    learned its refusals under that prompt, so it is the policy to serve it with."""
    recipe = run_dir / "recipe.yaml"
    if not recipe.is_file():
        return None
    try:
        data = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise UserError(f"{recipe}: invalid YAML; it is the recipe `aloekit run` copied there, restore it") from None
    for name, st in (data.get("stages") or {}).items():
        if isinstance(st, dict) and st.get("kind") == "redteam":
            conf = st.get("config") or {}
            system = conf.get("system_prompt", conf.get("system"))
            text = resolve_system_prompt(str(system), f"{recipe}: stage {name} system_prompt") if system else None
            if text:  # a registered name is served as its text; "none" means no policy was trained with
                return text, f"recipe (stage {name})"
    return None


def resolve_target(target: str | None, force: bool = False) -> dict:
    """MODEL | RUN_DIR -> {model, served_name, source, system?, system_source?}."""
    if target is None:
        return {"model": ModelConfig().name, "served_name": ModelConfig().name, "source": "model"}
    path = Path(target).expanduser()
    manifest = path / "manifest.json"
    if path.is_dir() and manifest.is_file():
        try:
            mf = json.loads(manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{manifest}: not valid JSON ({e.msg}); rerun the recipe") from None
        if not isinstance(mf, dict) or mf.get("kind") != "recipe":
            raise UserError(f"{manifest}: not a recipe run (a single stage's folder?); give the folder "
                            "`aloekit run` wrote, or the model folder itself")
        stopped = mf.get("stopped_by") or mf.get("status") in ("failed", "gate_failed")
        if stopped and not force:
            raise UserError(f"{path}: the run did not pass (status {mf.get('status')}, stopped by "
                            f"{mf.get('stopped_by')}); its model is not released. Serve it anyway with --force")
        final = mf.get("final_model")
        if not final:
            raise UserError(f"{path}: the run has no final model yet (status {mf.get('status')}); finish it with "
                            "`aloekit run RECIPE` first")
        model_dir = (path / final).resolve()
        if not (model_dir / "config.json").is_file():
            raise UserError(f"{model_dir}: the run's final model folder is missing or incomplete; rerun its stage")
        if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
            raise UserError(f"{model_dir}: the run's final model has no weights (pruned?); rerun its stage")
        out = {"model": str(model_dir), "served_name": str(mf.get("name") or path.name), "source": str(path)}
        found = recipe_system(path)
        if found:
            out["system"], out["system_source"] = found
        return out
    if not path.exists() and (target.startswith(("/", ".", "~")) or target.endswith(".gguf")):
        raise UserError(f"{target}: no such folder or file; give a recipe run folder, a model folder, a .gguf file "
                        "or a registry name (aloekit models list)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise UserError(f"{path}: neither a recipe run (no manifest.json) nor a model folder (no config.json)")
    name = str(path) if path.exists() else target
    served = path.name if path.exists() else target
    return {"model": name, "served_name": served, "source": "model"}
