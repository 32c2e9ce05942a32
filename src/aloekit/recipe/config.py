"""The recipe file: models, stages (each a stage config with `@stage` references), evaluation, gates.

```yaml
name: aloe-demo
output: runs/demo
seed: 0
models: {base: smollm2-135m-instruct, instruct: smollm2-135m-instruct}
stages:
  data: {kind: data, config: {...DataConfig...}}
  sft:  {kind: sft,  config: {model: base, dataset: "@data", ...}}
  merge: {kind: merge, config: {base_model: base, models: [{model: "@sft"}, {model: instruct}]}}
  ...
evaluation:
  models: [base, sft, merge, dpo1, dpo2]
  benchmarks: {tasks: [aloekit_demo], scoring: loglik}
  safety: {...RedteamConfig...}
gates:
  - {after: dpo2, metric: safety.asr, max_rise: 0.0}
```
A string "@name" anywhere in a stage config is the output of stage `name` (a model folder for model stages, the
run directory otherwise); a model field may also name a key of `models`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import ModelConfig, StrictModel
from ..errors import UserError
from ..prompts import SystemPrompt


class Launch(StrictModel):
    """Run a training stage as a distributed job (`accelerate launch`) instead of in-process. On several machines
    every machine runs the same recipe: machine 0 (`aloekit run`) runs every stage, the others (`aloekit run
    --machine-rank K`) join only the stages launched on several machines (docs/train.md, Multi-node)."""

    accelerate_config: str | None = Field(None, description="accelerate YAML (DDP, DeepSpeed ZeRO-3, FSDP)")
    num_processes: int = Field(1, ge=1, description="processes of the whole job, on all machines together "
                                                    "(accelerate's meaning): 2 nodes x 8 GPUs is 16")
    num_machines: int = Field(1, ge=1)
    # Where the machines of one job meet, not what the stage computes: excluded from dumps, so the stage key
    # (plan.py hashes the dump) and the run's recipe.yaml are the same on every machine and for every job.
    machine_rank: int = Field(0, ge=0, exclude=True,
                              description="this machine's rank; usually given per machine: --machine-rank")
    main_process_ip: str | None = Field(None, min_length=1, exclude=True,
                                        description="address of machine 0 that every machine reaches; needed "
                                                    "when num_machines > 1 (or --main-process-ip)")
    main_process_port: int | None = Field(None, ge=1, le=65535, exclude=True,
                                          description="rendezvous port on machine 0 (accelerate's default 29500)")

    @model_validator(mode="after")
    def _machines(self):
        if self.num_processes % self.num_machines:
            raise ValueError(f"num_processes: {self.num_processes} processes do not split evenly over num_machines "
                             f"{self.num_machines} (num_processes counts the processes of all machines together)")
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank: {self.machine_rank} is not below num_machines {self.num_machines} "
                             "(ranks count from 0)")
        return self

    def address_error(self) -> str | None:
        """Why this launch cannot start yet: the address is usually known only when the job starts (a flag), so the
        recipe file may leave it out and only a run checks it."""
        if self.num_machines > 1 and not self.main_process_ip:
            return (f"main_process_ip: needed with num_machines {self.num_machines} (the address of machine 0 that "
                    "every machine reaches); set it in the recipe or pass --main-process-ip")
        return None


class Estimate(StrictModel):
    """Hints for `--dry-run` where the config alone cannot tell (hub sources of unknown size)."""

    train_tokens: float | None = Field(None, gt=0, description="tokens seen in training (all epochs)")
    generated_tokens: float | None = Field(None, gt=0, description="tokens generated (CoT, red team, Medprompt)")
    scored_tokens: float | None = Field(None, gt=0, description="tokens scored (evaluation)")


class StageSpec(StrictModel):
    kind: str = Field(description="a stage kind of the registry (recipe/registry.py): data, sft, dpo, merge, "
                                  "redteam, medprompt, or one registered by a plugin")
    config: dict[str, Any] = Field(default_factory=dict)
    with_data: dict[str, Any] = Field(default_factory=dict,
                                      description="merged into config when the shared data dir exists")
    launch: Launch | None = None
    estimate: Estimate = Field(default_factory=Estimate)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        from . import registry
        if v not in registry.kinds():
            raise ValueError(f"unknown stage kind '{v}'; known: {', '.join(registry.kinds())}")
        return v


class BenchmarkSpec(StrictModel):
    tasks: list[str] = Field(default_factory=lambda: ["aloekit_demo"])
    data_tasks: list[str] = Field(default_factory=list,
                                  description="also evaluated when the shared data dir exists")
    scoring: Literal["loglik", "letter", "generate"] = "loglik"
    limit: int | None = Field(None, ge=1)
    hub: bool = False
    max_new_tokens: int = Field(256, ge=1)


class EvaluationSpec(StrictModel):
    models: list[str] = Field(default_factory=list, description="'base' (or any key of models) and stage names")
    model: ModelConfig = Field(default_factory=ModelConfig, description="backend settings; name is filled in")
    benchmarks: BenchmarkSpec | None = Field(default_factory=BenchmarkSpec)
    safety: dict[str, Any] | None = Field(None, description="a RedteamConfig (pairs off) run on each model")
    safety_with_data: dict[str, Any] = Field(default_factory=dict)
    safety_models: list[str] | None = Field(None, description="models that get the safety evaluation "
                                                              "(default: all evaluated models)")
    # off by default: loglik benchmarks never use one (lm-eval parity), so numbers stay comparable to lm-eval's
    system_prompt: SystemPrompt = Field(None, description="a registered name (aloe_medical) or text for the "
                                                          "benchmarks that generate and for the safety red team")
    estimate: Estimate = Field(default_factory=Estimate)


class Gate(StrictModel):
    """One rule on one metric, decided on a confidence interval (see recipe/gates.py): pass, fail or
    inconclusive."""

    after: str = Field(description="the stage whose model must pass before the run goes on")
    metric: str = Field(description="an evaluation metric, e.g. aloekit_demo.acc, multimedqa.acc, safety.asr")
    vs: str | None = Field(None, description="reference model (default: the model the stage started from)")
    max_drop: float | None = Field(None, ge=0)
    max_rise: float | None = Field(None, ge=0)
    min: float | None = None
    max: float | None = None
    confidence: float = Field(0.95, gt=0.5, lt=1, description="level of the two-sided interval")
    on_inconclusive: Literal["warn", "stop"] = Field(
        "warn", description="too few items to tell: go on (the run is then not releasable) or stop")

    @model_validator(mode="after")
    def _one_rule(self):
        given = [v for v in (self.max_drop, self.max_rise, self.min, self.max) if v is not None]
        if not given:
            raise ValueError("give a rule: max_drop, max_rise, min or max")
        if len(given) > 1:
            raise ValueError("give one rule per gate (max_drop, max_rise, min or max); add a gate for each")
        return self

    def rule(self) -> str:
        parts = [f"{k} {v:g}" for k, v in (("max_drop", self.max_drop), ("max_rise", self.max_rise),
                                           ("min", self.min), ("max", self.max)) if v is not None]
        return ", ".join(parts)

    @property
    def relative(self) -> bool:
        return self.max_drop is not None or self.max_rise is not None


class RecipeConfig(StrictModel):
    name: str = "aloe"
    output: str = "runs/recipe"
    seed: int = 0
    data_dir: str | None = Field(None, description="shared benchmark data (default: $ALOEKIT_DATA_DIR or "
                                                   "../shared/data; the recipe runs without it)")
    models: dict[str, str] = Field(default_factory=lambda: {"base": "smollm2-135m-instruct"})
    stages: dict[str, StageSpec] = Field(min_length=1)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    gates: list[Gate] = Field(default_factory=list)
    report: bool = True
    model_card: dict[str, Any] = Field(default_factory=dict,
                                       description="license, language, datasets, tags for the card")


CARD_KEYS = ("license", "language", "datasets", "tags")


def check_model_card(section: dict[str, Any], where: str = "model_card") -> None:
    """The recipe's `model_card:` section (license, language, datasets, tags for the card); checked before any stage
    runs, and again by the report when it reads a run's recipe.yaml."""
    if not isinstance(section, dict):
        raise UserError(f"{where}: expected a mapping with {', '.join(CARD_KEYS)}")
    unknown = sorted(set(section) - set(CARD_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(CARD_KEYS)}")
    if section.get("license") is not None and not isinstance(section["license"], str):
        raise UserError(f"{where}.license: give one hub license id, e.g. apache-2.0")
    for k in ("language", "datasets", "tags"):
        v = section.get(k)
        if v is not None and not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))):
            raise UserError(f"{where}.{k}: give a string or a list of strings")
