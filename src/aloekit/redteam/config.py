"""The `redteam` stage config (YAML + `--set key=value` overrides)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import ModelConfig, SamplingConfig, StrictModel
from ..prompts import SystemPrompt, one_system_key, system_prompt_field
from .requests import SourceConfig


def _default_sources() -> list[SourceConfig]:
    return [SourceConfig(name="advbench"), SourceConfig(name="harmbench", split="test"),
            SourceConfig(name="simplesafetytests"), SourceConfig(name="medsafetybench", split="test")]


class TemplatesConfig(StrictModel):
    path: str | None = Field(None, description="JSONL of {id, template}; default: the shared HarmBench file")
    # None: [78] for the default HarmBench file (its one template without a '{0}' slot), [] for any other file
    exclude: list[int | str] | None = Field(None, description="template ids to leave out")
    sample: int | None = Field(8, ge=1, description="seeded subset of templates used for 'templates' (None = all)")


class LLMJudgeConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)


class LlamaGuardConfig(StrictModel):
    model: str = "meta-llama/Llama-Guard-3-1B"
    device: str = "auto"
    batch_size: int = Field(4, ge=1)


class XSTestConfig(StrictModel):
    """Safe prompts that look harmful; refusing them is over-refusal."""
    enabled: bool = True
    # xstest: XSTest's 250 safe prompts (data dir, path or hub); demo_safe: the 120 bundled look-alikes;
    # safe_medical: 60 bundled medical look-alikes, frozen and held out of all tuning (docs/redteam.md)
    source: Literal["xstest", "demo_safe", "safe_medical"] = "xstest"
    limit: int | None = Field(50, ge=1, description="seeded sample of the safe prompts (None = all)")
    path: str | None = Field(None, description="XSTest CSV, or for demo_safe a JSONL of {id, text, type}")
    hub: str | None = None


class MedSafetyRefusalConfig(StrictModel):
    """Refusal rate on plain (un-attacked) harmful requests: MedSafetyBench, or the bundled demo_harmful set
    (its medical and general requests) when there is no data dir. Uses the path of the same-named entry in
    `sources` if there is one."""
    enabled: bool = True
    source: Literal["medsafetybench", "demo_harmful"] = "medsafetybench"
    split: Literal["train", "test"] = "test"
    limit: int | None = Field(45, ge=1)


class RetainConfig(StrictModel):
    """Benign prompts (some of them sounding risky) answered by the red-teamed model itself: each answer it gives
    becomes a pair (chosen = its own answer, rejected = a refusal), so safety DPO learns what to refuse rather
    than to refuse everything. Prompts close to the safe prompts an evaluation measures over-refusal on are
    dropped first (never train on what you measure)."""
    enabled: bool = False
    paths: list[str] = Field(default_factory=lambda: ["pkg:resources/demo_corpus/benign.jsonl",
                                                      "pkg:resources/demo_redteam/retain.jsonl"],
                             description="JSONL files with a prompt, question or text field per row")
    limit: int | None = Field(None, ge=1, description="seeded sample of the prompts (None = all)")
    exclude_similar_to: list[Literal["demo_safe", "xstest", "safe_medical"]] = Field(
        default_factory=lambda: ["demo_safe", "xstest"],
        description="safe-prompt sets to keep out (xstest when the data dir has it)")
    max_jaccard: float = Field(0.3, gt=0, le=1, description="word-set Jaccard at which a prompt counts as close")


class PairsConfig(StrictModel):
    enabled: bool = True
    # auto: MedSafetyBench safe_response where it exists, else chosen_model if set, else a template
    chosen: Literal["auto", "template", "model"] = "auto"
    chosen_model: ModelConfig | None = None
    # never turn attacks on an evaluation split into training pairs
    exclude_splits: list[str] = Field(default_factory=lambda: ["test"])
    retain: RetainConfig = Field(default_factory=RetainConfig)


class RedteamConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_new_tokens=96))
    # `system_prompt:` in YAML (or the older `system:`); the summary and manifest record its label
    system: SystemPrompt = system_prompt_field("system prompt: a registered name (aloe_medical) or text; None = "
                                               "none (the model's own default)")
    data_dir: str | None = None
    sources: list[SourceConfig] = Field(default_factory=_default_sources)
    attacks: list[str] = Field(default_factory=lambda: ["programmatic", "templates"])
    templates: TemplatesConfig = Field(default_factory=TemplatesConfig)
    budget: int = Field(100, ge=1, description="number of (request, attack) attempts")
    seed: int = 0
    judges: list[Literal["marker", "llm", "llamaguard"]] = Field(default_factory=lambda: ["marker"])
    llm_judge: LLMJudgeConfig = Field(default_factory=LLMJudgeConfig)
    llamaguard: LlamaGuardConfig = Field(default_factory=LlamaGuardConfig)
    xstest: XSTestConfig = Field(default_factory=XSTestConfig)
    medsafety_refusal: MedSafetyRefusalConfig = Field(default_factory=MedSafetyRefusalConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    chunk_size: int = Field(32, ge=1, description="prompts per generation chunk (progress + resume granularity)")
    output: str = "runs/redteam"

    _one_system_key = model_validator(mode="before")(classmethod(one_system_key))
