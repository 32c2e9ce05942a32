"""Configs of the medprompt stage: how to answer (StrategyConfig), how to build the example database (DBConfig),
the `medprompt eval` run (MedpromptEvalConfig) and the recipe stage that does both (MedpromptStageConfig)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..config import ModelConfig, StrictModel
from ..prompts import SystemPrompt, one_system_key, system_prompt_field
from ..retrieval.embed import DEFAULT_EMBEDDER

Strategy = Literal["zeroshot", "fewshot", "cot", "sc-cot", "knn", "medprompt", "rag", "rag-cot"]
STRATEGIES: tuple[str, ...] = ("zeroshot", "fewshot", "cot", "sc-cot", "knn", "medprompt", "rag", "rag-cot")
RAG_STRATEGIES = ("rag", "rag-cot")
# with `rag.index` set, these also get passages (Medprompt + RAG); zeroshot, fewshot, cot and sc-cot never do, so a
# run that compares strategies keeps its baselines without retrieval
RAG_COMBINABLE = ("knn", "medprompt")


class RagParams(StrictModel):
    """Retrieved passages in the prompt (docs/rag.md)."""

    index: str | None = Field(None, description="index folder built by `aloekit rag index`")
    k: int = Field(5, ge=1, description="passages retrieved per question")
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    token_budget: int = Field(768, ge=1, description="most passage tokens in a prompt (the index's tokens); "
                                                     "whole passages, best first, until the next would not fit")
    leak_guard: bool | None = Field(None, description="drop passages containing the question; None: on when "
                                                      "evaluating a benchmark, off in `aloekit infer`")
    leak_threshold: float = Field(0.95, gt=0.0, le=1.0, description="cosine at which a passage is a copy")
    leak_overlap: float = Field(0.5, gt=0.0, le=1.0, description="share of the question's 8-word n-grams in a "
                                                                 "passage that makes it a copy")
    embedding_model: str | None = Field(None, description="must match the index's; None = the index's")
    bare_question: bool = Field(False, description="ask the question without the passage a benchmark shows with it "
                                                   "(PubMedQA without its abstract); applies to every strategy of "
                                                   "the run, so baselines are asked the same question")


class StrategyConfig(StrictModel):
    strategy: Strategy = "medprompt"
    shots: int = Field(5, ge=1, description="examples in the prompt (fewshot: fixed, knn/medprompt: nearest)")
    members: int = Field(5, ge=1, description="ensemble size for sc-cot and medprompt")
    temperature: float = Field(0.7, gt=0.0, description="sampling temperature of sc-cot/medprompt members")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_new_tokens: int = Field(192, ge=1, description="length cap of one chain of thought")
    answer_tokens: int = Field(12, ge=1, description="length cap of a direct answer (zeroshot, fewshot)")
    answer: Literal["generate", "letter"] = Field(
        "generate", description="direct strategies (zeroshot, fewshot, rag): generate 'Answer: X' and parse it, or "
                                "take the option letter the model finds likeliest after 'Answer:' (lm-eval's letter "
                                "scoring: a model that does not follow the format still answers). Chains of thought "
                                "always generate")
    adaptive: bool = Field(True, description="stop sampling members once the vote is settled")
    stop_risk: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="opt-in risky adaptive stop: stop a question once the probability that its remaining members "
                    "overturn the current winner is at most this (vote.overturn_risk: a Polya-urn / Dirichlet "
                    "model of the members' answers, docs/medprompt.md). None (default): the exact rule, which "
                    "never changes the full ensemble's answer; 0 is the same as the exact rule")
    shuffle: bool = Field(True, description="medprompt: each member sees a different order of the options")
    batch_prompts: int = Field(64, ge=1, description="prompts handed to the backend per call (across questions)")
    leak_threshold: float = Field(0.95, gt=0.0, le=1.0,
                                  description="examples at least this similar to the question are never used")
    embedding_model: str | None = Field(None, description="must match the database's; None = the database's")
    rag: RagParams | None = Field(None, description="retrieval over a corpus index: rag, rag-cot, and knn / "
                                                    "medprompt when rag.index is set")
    system: SystemPrompt = system_prompt_field("system prompt of every strategy prompt: a registered name "
                                               "(aloe_medical), text, or None (none); key system_prompt or system")
    seed: int = 0

    _one_system_key = model_validator(mode="before")(classmethod(one_system_key))

    @model_validator(mode="after")
    def _check_stop(self):
        if self.stop_risk is not None and not self.adaptive:
            raise ValueError("stop_risk is a rule for adaptive stopping: it needs adaptive=true")
        return self

    @property
    def stop_rule(self) -> str:
        """How an ensemble stops: 'all members' (adaptive off), 'exact', or 'risk<=δ'."""
        if not self.adaptive:
            return "all members"
        return "exact" if self.stop_risk is None else f"risk<={self.stop_risk:g}"

    @property
    def uses_rag(self) -> bool:
        return self.strategy in RAG_STRATEGIES or (self.strategy in RAG_COMBINABLE and self.rag is not None
                                                   and self.rag.index is not None)

    @property
    def ensemble(self) -> bool:
        return self.strategy in ("sc-cot", "medprompt")

    @property
    def n_members(self) -> int:
        return self.members if self.ensemble else 1

    @property
    def chain_of_thought(self) -> bool:
        return self.strategy not in ("zeroshot", "fewshot", "rag")

    @property
    def needs_db(self) -> bool:
        return self.strategy in ("fewshot", "knn", "medprompt")


class DBConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    teacher: ModelConfig | None = Field(None, description="model that writes the chains (default: model)")
    pool: str = "pubmedqa"
    data_dir: str | None = None
    limit: int | None = Field(None, ge=1)
    output: str = "runs/medprompt_db"
    embedding_model: str = DEFAULT_EMBEDDER
    max_new_tokens: int = Field(192, ge=1)
    # the first try is greedy; each retry of a question that got the wrong answer samples hotter
    retry_temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.7, 1.0])
    batch_prompts: int = Field(16, ge=1, description="generations per cached batch (kill -9 loses at most one)")
    system: SystemPrompt = system_prompt_field("system prompt the chains are written under: a registered name, "
                                               "text, or None; key system_prompt or system")
    seed: int = 0

    _one_system_key = model_validator(mode="before")(classmethod(one_system_key))

    @model_validator(mode="after")
    def _check(self):
        if not self.retry_temperatures or any(t < 0 for t in self.retry_temperatures):
            raise ValueError("retry_temperatures must be a non-empty list of temperatures >= 0")
        return self


class MedpromptEvalConfig(StrictModel):
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: str = "pubmedqa"
    strategies: list[Strategy] = Field(default_factory=lambda: ["zeroshot", "cot", "sc-cot", "medprompt"])
    params: StrategyConfig = Field(default_factory=StrategyConfig)
    db: str | None = None
    data_dir: str | None = None
    hub: bool = False
    skip_bad_rows: bool = False
    limit: int | None = Field(None, ge=1)
    output: str | None = None
    seed: int = 0


class MedpromptStageConfig(StrictModel):
    """The recipe's medprompt stage: build an example database with the model (when a strategy needs one), then
    compare strategies on a benchmark. Writes db/ (`aloekit medprompt build-db`) and eval/ (`medprompt eval`)."""

    model: str = "smollm2-135m-instruct"
    teacher: str | None = None
    backend: ModelConfig = Field(default_factory=ModelConfig, description="backend settings; name is filled in")
    pool: str = "pkg:resources/demo_corpus/mcq.jsonl"
    pool_limit: int | None = Field(None, ge=1)
    task: str = "aloekit_demo"
    hub: bool = Field(False, description="load the task from the hub instead of the data dir")
    limit: int | None = Field(None, ge=1)
    strategies: list[str] = Field(default_factory=lambda: ["zeroshot", "cot", "medprompt"])
    db: dict[str, Any] = Field(default_factory=dict, description="more DBConfig keys (max_new_tokens, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="StrategyConfig keys (shots, members, ...)")
    data_dir: str | None = None
    seed: int = 0
