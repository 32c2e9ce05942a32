"""Merge config: what aloekit users write; `mergekit_yaml()` turns it into mergekit's own configuration."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..config import StrictModel
from ..models import DEFAULT_MODEL


class MergeInput(StrictModel):
    # registry name, hub id, HF folder, LoRA adapter folder or a training run directory
    model: str
    weight: float | None = None
    density: float | None = Field(None, gt=0.0, le=1.0)
    # any other per-model mergekit parameter (e.g. epsilon for della), passed through untouched
    parameters: dict[str, Any] = Field(default_factory=dict)


class DevSet(StrictModel):
    """A small multiple-choice dev set the built-in scorer reads from the shared data folder."""

    name: Literal["pubmedqa_dev", "mmlu_medical_dev", "headqa_dev"]
    limit: int | None = Field(None, ge=1)  # None: every item


class SearchSettings(StrictModel):
    """A grid of candidates; each is merged, scored on the dev sets, and the best one becomes the output."""

    weights: list[list[float]] = Field(default_factory=list)  # one weight per input model; [] keeps the config's
    density: list[float] = Field(default_factory=list)  # applied to every input; [] keeps the config's
    # "dev_accuracy" (built in, on dev_sets) or "package.module:function" taking (model_dir, cfg) -> float
    scorer: str = "dev_accuracy"
    dev_sets: list[DevSet] = Field(default_factory=lambda: [DevSet(name="pubmedqa_dev", limit=100),
                                                            DevSet(name="mmlu_medical_dev")])
    data_dir: str | None = None  # default: ALOEKIT_DATA_DIR or ../shared/data
    batch_size: int = Field(8, ge=1)
    keep_candidates: bool = False  # keep every candidate's model folder, not only the best


class MergeConfig(StrictModel):
    # any mergekit method; these are the ones aloekit documents and tests
    method: str = "dare_ties"
    base_model: str | None = DEFAULT_MODEL
    models: list[MergeInput] = Field(min_length=1)
    # method-wide mergekit parameters (t for slerp, normalize, lambda, int8_mask, ...), passed through
    parameters: dict[str, Any] = Field(default_factory=dict)
    # mergekit computes in `dtype`; "auto" writes the output in the base model's own dtype
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    out_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # whose tokenizer, chat template and generation config the output keeps; default: the base model if it
    # has a chat template, else the first input that has one (an instruct partner)
    tokenizer_from: str | None = None
    output: str = "runs/merge"
    seed: int = 0
    # "streamed": aloekit merges elementwise methods (linear, task_arithmetic, ties, dare_ties, dare_linear) in
    # row blocks with mergekit's merge functions, so memory is a few blocks, not whole tensors; "mergekit": mergekit's
    # own executor (whole tensors); "auto": streamed where it applies, else mergekit (the result records which ran)
    engine: Literal["auto", "streamed", "mergekit"] = "auto"
    block_size: int = Field(1 << 18, ge=1)  # streamed engine: about this many entries per block of rows (~50 MB
    # of working memory at fp32; the merged weights do not depend on it)
    # mergekit engine: it reads inputs tensor by tensor and holds an output shard until written, so a small shard
    # size bounds the output side too (the streamed engine writes shards block by block either way)
    lazy_unpickle: bool = True
    out_shard_size: str = "20M"  # bytes per output shard (mergekit syntax: 500M, 5B, ...)
    release_every_s: float = Field(0.25, ge=0)  # mergekit engine: unmap what it has read this often; 0: never
    device: str = "cpu"
    check_prompt: str = "What are the common symptoms of iron-deficiency anemia?"
    check_max_new_tokens: int = Field(16, ge=1)
    search: SearchSettings | None = None
