"""Reading a recipe run directory: its manifest, each stage's own run folder, and the tables that the HTML report
and the model card share.

Every reader copes with a stage that is absent (not in the recipe, or not run because a gate stopped the run):
it returns None or an empty table. A stage that says it finished ("done"/"cached") but lacks the file its stage
module always writes is an error, never a silently empty section.

Which section shows a stage, and how many tokens it processed, its kind's Stage object says (recipe/registry.py;
aloekit/stage.py `section`, `tokens`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError
from ..recipe import registry

RAN = ("done", "cached")
EVALUATION = "eval"  # the section of the recipe's evaluation of each model (eval:<model>)
# the recipe's medprompt stage builds its example DB in db/ and writes the strategy comparison (aloekit medprompt
# eval's run directory) in eval/
MEDPROMPT_RESULTS = "eval/results.json"
NOT_RUN = ("pending", "skipped")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); rerun the stage that wrote it") from None


@dataclass
class Stage:
    """One entry of the recipe manifest's `stages`, plus its run folder."""
    name: str
    kind: str
    status: str
    path: Path | None
    seconds: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    of: str | None = None  # eval stages: the stage whose model they evaluate
    model_dir: str | None = None

    @property
    def ran(self) -> bool:
        return self.status in RAN

    @property
    def section(self) -> str | None:
        """The report section that shows this stage (None: a kind not installed here)."""
        spec = registry.find(self.kind)
        return spec.section if spec else None

    @property
    def label(self) -> str:
        """What a table row calls it: an eval stage is named after the model it evaluated."""
        return self.of or self.name

    def file(self, rel: str, required: bool = True) -> Path | None:
        """A file of this stage's run folder; None when the stage did not run (or an optional file is absent)."""
        if not self.ran or self.path is None:
            return None
        p = self.path / rel
        if p.is_file():
            return p
        if required:
            raise UserError(f"{p}: missing, but stage '{self.name}' is {self.status}; rerun that stage "
                            f"(aloekit run RECIPE --only {self.name})")
        return None

    def json(self, rel: str, required: bool = True) -> Any:
        p = self.file(rel, required)
        return read_json(p) if p else None

    def benchmark_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if not k.startswith("safety.") and _number(v)}

    def safety_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if k.startswith("safety.") and _number(v)}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Run:
    path: Path
    manifest: dict[str, Any]
    recipe_text: str | None
    stages: list[Stage]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def gates(self) -> list[dict]:
        return list(self.manifest.get("gates") or [])

    @property
    def stopped_by(self) -> dict | None:
        return self.manifest.get("stopped_by") or None

    def gate_index(self, pos: int) -> int:
        """A gate entry's number: its index in the recipe's `gates` (the runner records it, since entries are
        appended as gates are checked), else its position."""
        return self.gates[pos].get("index", pos)

    def stopping_gate(self) -> dict | None:
        """The gate entry that stopped the run, if one did."""
        stop = self.stopped_by
        if not stop or stop.get("gate") is None:
            return None
        found = [g for pos, g in enumerate(self.gates) if self.gate_index(pos) == stop["gate"]]
        if not found:
            raise UserError(f"{self.path / 'manifest.json'}: stopped_by.gate is {stop['gate']!r} but no gate entry "
                            "has that index; the manifest is inconsistent")
        return found[0]

    def failed_gates(self) -> list[dict]:
        return [g for g in self.gates if not g.get("passed")]

    def releasable(self) -> bool:
        return self.status not in ("failed", "gate_failed") and not self.stopped_by and not self.failed_gates()

    def section(self, name: str, ran: bool = True) -> list[Stage]:
        """The stages a report section shows (those that ran, unless ran=False), in stage order."""
        return [s for s in self.stages if s.section == name and (s.ran or not ran)]

    def evaluations(self) -> list[Stage]:
        return self.section(EVALUATION)

    def one(self, section: str) -> Stage | None:
        """The last stage of a section that ran (a recipe has at most one data / merge / medprompt stage; if it has
        more, the last one describes the released model)."""
        found = self.section(section)
        return found[-1] if found else None

    def not_run(self) -> list[Stage]:
        return [s for s in self.stages if s.status in NOT_RUN]

    def wall_seconds(self) -> float | None:
        try:
            t0 = datetime.fromisoformat(self.manifest["started"])
            t1 = datetime.fromisoformat(self.manifest["finished"])
        except (KeyError, TypeError, ValueError):
            return None
        return (t1 - t0).total_seconds()

    def stage_seconds(self) -> float:
        return sum(s.seconds or 0.0 for s in self.stages if s.ran)

    def final_eval(self) -> Stage | None:
        """The eval stage of the final model (else the last eval stage that ran)."""
        evals = self.evaluations()
        final = self.manifest.get("final_model")
        by_name = {s.name: s for s in self.stages}
        for s in reversed(evals):
            src = by_name.get(s.of or "")
            if final and src is not None and src.model_dir == final:
                return s
        return evals[-1] if evals else None


def load(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    mf = path / "manifest.json"
    if not mf.is_file():
        raise UserError(f"{mf}: not found; give the folder `aloekit run` wrote (it holds manifest.json)")
    manifest = read_json(mf)
    if not isinstance(manifest, dict) or manifest.get("kind") != "recipe":
        raise UserError(f"{mf}: not a recipe manifest (kind is {manifest.get('kind') if isinstance(manifest, dict) else None!r}); "
                        "give the folder `aloekit run` wrote, not a single stage's")
    stages = []
    for i, s in enumerate(manifest.get("stages") or []):
        missing = [k for k in ("name", "kind", "status") if k not in s]
        if missing:
            raise UserError(f"{mf}: stages[{i}] lacks {', '.join(missing)}; the manifest is incomplete")
        stages.append(Stage(name=s["name"], kind=s["kind"], status=s["status"],
                            path=path / s["dir"] if s.get("dir") else None, seconds=s.get("seconds"),
                            metrics=s.get("metrics") or {}, of=s.get("of"), model_dir=s.get("model_dir")))
    recipe = path / "recipe.yaml"
    return Run(path, manifest, recipe.read_text(encoding="utf-8") if recipe.is_file() else None, stages)


# ---------------------------------------------------------------- benchmarks


def percent_metric(key: str) -> bool:
    """Accuracies and rates are fractions shown as %; bias scores and likelihood gaps stay raw (as eval does)."""
    metric = key.split(".", 1)[-1].rsplit(".", 1)[-1]
    return metric.startswith(("acc", "pct_", "asr", "refusal")) or key.startswith("safety.")


def benchmark_table(run: Run) -> tuple[list[str], list[tuple[Stage, dict[str, float]]]]:
    """Columns = benchmark metrics in first-seen order; rows = evaluated models in stage order."""
    cols: list[str] = []
    rows = []
    for s in run.evaluations():
        vals = s.benchmark_metrics()
        if vals:
            rows.append((s, vals))
            cols += [k for k in vals if k not in cols]
    return cols, rows


def headline(run: Run, cols: list[str]) -> list[str]:
    """The summary columns: each task's or group's first metric (acc for the medical benchmarks), leaving out the
    tasks that a group in the same results already summarises (the six MMLU subjects under mmlu_medical)."""
    members: set[str] = set()
    for s in run.evaluations():
        res = s.json("benchmarks/results.json", required=bool(s.benchmark_metrics()))
        if res:
            members |= {m for group in res.get("group_subtasks", {}).values() for m in group}
    out, seen = [], set()
    for c in cols:
        task = c.partition(".")[0]
        if task not in members and task not in seen:
            seen.add(task)
            out.append(c)
    return out


@dataclass
class MetricInfo:
    n: int | None = None
    scoring: str | None = None
    stderr: float | None = None
    system_prompt: str | None = None  # None: the results predate the knob and do not say


NOT_RECORDED = "not recorded"


def _task_prompt(res: dict, task: str) -> str | None:
    """The system prompt label results.json gives a task; a strategy states its own under "strategy"."""
    label = res.get("configs", {}).get(task, {}).get("system_prompt")
    if label == "see strategy":
        label = (res.get("strategy") or {}).get("system_prompt")
    return label


def eval_details(stage: Stage) -> dict[str, MetricInfo]:
    """n, scoring mode, stderr and system prompt for each "task.metric" key, from the stage's
    benchmarks/results.json (aloekit eval's lm-eval-shaped output)."""
    keys = stage.benchmark_metrics()
    res = stage.json("benchmarks/results.json", required=bool(keys))
    if not res:
        return {}
    out = {}
    for key in keys:
        task, _, metric = key.partition(".")
        r = res["results"].get(task)
        if r is None:
            continue
        members = res.get("group_subtasks", {}).get(task, [task])
        ns = [res["n-samples"][m]["effective"] for m in members if m in res.get("n-samples", {})]
        modes = sorted({res["configs"][m]["scoring"] for m in members if m in res.get("configs", {})})
        prompts = sorted({p for m in members if (p := _task_prompt(res, m)) is not None})
        out[key] = MetricInfo(n=sum(ns) if ns else None, scoring="/".join(modes) or res["config"].get("scoring"),
                              stderr=r.get(f"{metric}_stderr,none"), system_prompt=" / ".join(prompts) or None)
    return out


def prompt_labels(details: Iterable[dict[str, MetricInfo]], key: str) -> str:
    """The system prompt(s) a metric was measured with, over the evaluated models."""
    found = sorted({d[key].system_prompt for d in details if key in d and d[key].system_prompt})
    return " / ".join(found) or NOT_RECORDED


# ---------------------------------------------------------------- safety


def safety_rows(run: Run) -> list[tuple[Stage, dict[str, float]]]:
    """Evaluated models that have safety metrics, in stage order."""
    return [(s, s.safety_metrics()) for s in run.evaluations() if s.safety_metrics()]


def per_attack(metrics: dict[str, float]) -> dict[str, float]:
    return {k[len("safety.asr."):]: v for k, v in metrics.items() if k.startswith("safety.asr.")}


def safety_prompt(stage: Stage) -> str:
    """The system prompt label an evaluation's red team ran with, from its safety/summary.json."""
    summary = stage.json("safety/summary.json", required=False)
    return (summary or {}).get("system_prompt") or NOT_RECORDED


def attack_counts(stage: Stage) -> dict[str, int]:
    """Attempts per attack, from the stage's safety/summary.json (aloekit redteam's summary) when present."""
    summary = stage.json("safety/summary.json", required=False)
    if not summary:
        return {}
    return {a: v["n"] for a, v in summary["attacks"]["per_attack"].items()}


# ---------------------------------------------------------------- compute


def tokens(stage: Stage) -> tuple[int | None, str]:
    """Tokens a stage processed, where its run folder records them (its Stage's `tokens`), and what they count."""
    spec = registry.find(stage.kind)
    if not stage.ran or stage.path is None or spec is None or spec.tokens is None:
        return None, ""
    try:
        return spec.tokens(stage.path)
    except FileNotFoundError as e:
        raise UserError(f"{e.filename}: missing, but stage '{stage.name}' is {stage.status}; rerun that stage "
                        f"(aloekit run RECIPE --only {stage.name})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{stage.path}: a file is not valid JSON ({e.msg}, line {e.lineno}); rerun the stage "
                        "that wrote it") from None


def training_runs(run: Run) -> tuple[list[tuple[Stage, dict]], list[tuple[Stage, list[dict]]]]:
    """The training section's stages that ran: (supervised runs with their metrics.json, preference runs with
    their per-stage metrics). A training run's metrics.json lists `stages` when it trains in stages (DPO: stage N's
    model is stage N+1's policy), else it holds the one run's metrics (SFT)."""
    sup, pref = [], []
    for s in run.section("training"):
        m = s.json("metrics.json")
        if "stages" in m:
            pref.append((s, m["stages"]))
        else:
            sup.append((s, m))
    return sup, pref


def dpo_stages(stage: Stage) -> list[dict]:
    """The per-stage metrics of a DPO run folder (train.dpo writes {"stages": [...], "final_model"})."""
    m = stage.json("metrics.json")
    if m is None:
        return []
    return m["stages"] if "stages" in m else [m]
