"""The stage contract: what each stage package exports as `STAGE` (in `<package>/stage.py`).

A stage is a pydantic Config and one `run(cfg, inputs, out) -> Path` that writes a run directory: `config.yaml`,
`manifest.json` (with an `outputs` map: name -> path relative to the run directory, and a `metrics` map: name ->
number) and the outputs. Stages exchange only these directories; `inputs` names the upstream run directories or
model folders ("@stage" references, already resolved into `cfg`). The recipe runner, `--dry-run`, the report and
the model card know a stage only through this object, which `aloekit.recipe.registry` finds by its kind.

Field paths (`model_fields`, `dataset_fields`, `starts_from`, `merges`) are dotted paths into the stage's config
dict; `a[]` walks the items of list `a`. A value there is a model name or "@stage".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from .config import _format_validation_error
from .errors import UserError


@dataclass(frozen=True)
class Estimate:
    """What a stage will cost, from its config alone (`--dry-run`); None = unknown. The recipe turns it into GPU
    hours and disk with the parameter count of the model the stage runs."""

    train_tokens: float | None = None
    generated_tokens: float | None = None
    scored_tokens: float | None = None
    train_flops_per_param_token: float | None = None  # 6 full fine-tuning, 4 LoRA; DPO: x2 sequences + reference
    disk_bytes_per_param: float | None = None  # weights (+ checkpoints) the stage writes, per model parameter
    disk_gb: float | None = None  # fixed disk, whatever the model
    extra_gpu_hours: float = 0.0  # I/O-bound work not priced by tokens (e.g. streaming models through a merge)


def _no_estimate(cfg: Any) -> Estimate:
    return Estimate()


@dataclass(frozen=True)
class Stage:
    kind: str
    config: type[BaseModel]
    run: Callable[[Any, dict[str, Path], Path], Path]
    model_fields: tuple[str, ...] = ()  # model names or "@stage" of a model stage; the first: the model it runs
    dataset_fields: tuple[str, ...] = ()  # datasets: a "@stage" there must not be a model stage
    model_output: Callable[[dict], str] | None = None  # a model stage: its model folder in its run dir, from config
    starts_from: str | None = None  # model stages: the field naming the model they start from (lineage, gates)
    merges: str | None = None  # model fields combined with starts_from: their stages must share its root model
    estimate: Callable[[Any], Estimate] = _no_estimate
    check: Callable[[Any, str], None] | None = None  # static checks (no model, no data): (cfg, where)
    requires: Callable[[Any, str], None] | None = None  # extras the config needs: (cfg, what) -> UserError
    command: tuple[str, ...] | None = None  # `aloekit <command> CONFIG`: how a distributed launch runs it
    section: str | None = None  # the report / model card section that shows its outputs
    tokens: Callable[[Path], tuple[int | None, str]] | None = None  # tokens processed, from its run dir

    @property
    def makes_model(self) -> bool:
        return self.model_output is not None

    def validate(self, data: dict, where: str) -> BaseModel:
        """The stage's config from a dict, with the usual one-line error naming `where`."""
        try:
            return self.config.model_validate(data)
        except ValidationError as err:
            raise UserError(_format_validation_error(self.config, err, where)) from None


def numbers(d: dict | None) -> dict[str, float]:
    """The numeric entries of a map (booleans and None left out), as floats."""
    return {k: float(v) for k, v in (d or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def manifest(run_dir: Path) -> dict:
    f = Path(run_dir) / "manifest.json"
    if not f.is_file():
        raise UserError(f"{f}: not found; the stage did not write its run directory")
    return json.loads(f.read_text(encoding="utf-8"))


def metrics(run_dir: Path) -> dict[str, float]:
    """A finished run directory's `metrics` map (numbers only)."""
    return numbers(manifest(run_dir).get("metrics"))


def read_json(path: Path) -> Any:
    """For `tokens` readers: a missing file raises FileNotFoundError (the report names the stage to rerun)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
