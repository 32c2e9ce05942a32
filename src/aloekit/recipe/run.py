"""`aloekit run recipe.yaml`: run the stage plan, skip what is finished, check gates, write the report.

    <output>/
      recipe.yaml          the recipe as given (resolved against defaults)
      manifest.json        one manifest across stages: keys, status, seconds, metrics, gates, why it stopped
      stages/<name>-<key10>/   each stage's own run directory (the same artifacts as its stage command)
      report.html, model_card/README.md   written by `aloekit run` (aloekit/cli.py) with aloekit.report

A stage is done when `<stage dir>/stage.json` holds its key. Its directory is named by that key, so a kill -9
leaves a half-written stage in the same place and the rerun continues it with the stage's own resume (training
checkpoints, generation caches); a changed config or input gets a new directory and runs afresh.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import console as con
from ..config import dump_config
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from .config import RecipeConfig, check_model_card
from .gates import check as check_gate
from .gates import load_items
from .plan import Plan, Stage, build_plan, inputs_of, makes_model, output_of, resolved_config
from .stages import build_config, require_extras, run_stage, validate_static

DONE = "stage.json"


class GateFailed(UserError):
    """A gate did not hold: the run stops with one line and exit 1 (not 2: the input was fine), the report says
    why."""

    exit_code = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def select(plan: Plan, from_: str | None, until: str | None, only: list[str] | None) -> list[str]:
    """Names of the stages to run. An eval stage goes with the model stage it evaluates."""
    names = [s.name for s in plan.stages]
    groups = {s.name: (s.of if s.of in plan.recipe.stages else s.name) for s in plan.stages}
    for flag, val in (("--from", from_), ("--until", until), *(("--only", o) for o in only or [])):
        if val is not None and val not in names:
            raise UserError(f"{flag}: '{val}' is not a stage of this recipe ({', '.join(names)})")
    if only:
        want = set(only)
        return [n for n in names if n in want or groups[n] in want]
    lo = names.index(from_) if from_ else 0
    hi = max(i for i, n in enumerate(names) if groups[n] == groups[until] or n == until) if until else len(names) - 1
    return names[lo:hi + 1]


def is_done(st: Stage) -> dict | None:
    f = st.dir / DONE
    if not f.is_file():
        return None
    data = json.loads(f.read_text())
    return data if data.get("key") == st.key else None


class Runner:
    def __init__(self, plan: Plan, recipe_file: str | None = None):
        self.plan = plan
        self.out = plan.out
        self.manifest: dict[str, Any] = {
            "kind": "recipe", "name": plan.recipe.name, "status": "running", "seed": plan.recipe.seed,
            "recipe_file": recipe_file, "started": _now(), "finished": None,
            "data_dir": str(plan.data_root) if plan.data_root else None,
            "models": dict(plan.recipe.models), "final_model": None,
            "stages": [{"name": s.name, "kind": s.kind, "key": s.key, "dir": str(s.dir.relative_to(self.out)),
                        "status": "pending", "seconds": None, "depends_on": s.deps, "of": s.of,
                        "model_dir": str(output_of(s).relative_to(self.out)) if makes_model(s) else None,
                        "metrics": {}} for s in plan.stages],
            "gates": [], "stopped_by": None,
        }
        self.rows = {r["name"]: r for r in self.manifest["stages"]}
        self.metrics: dict[str, dict[str, float]] = {}  # model name (stage or models key) -> eval metrics

    def save(self) -> None:
        atomic_write_json(self.out / "manifest.json", self.manifest)

    # -- one stage --
    def run_one(self, st: Stage, force: bool) -> None:
        row = self.rows[st.name]
        done = None if force else is_done(st)
        if done is not None:
            row.update(status="cached", seconds=done.get("seconds"), metrics=done.get("metrics", {}))
            con.note(f"[dim]{st.name}: finished earlier ({st.dir.name}); skipped[/dim]")
        else:
            cfg = build_config(st.spec, resolved_config(self.plan, st), f"stages.{st.name}", st.dir)
            row["status"] = "running"
            self.save()
            con.note(f"[bold]{st.name}[/bold] ({st.kind}) -> {st.dir}")
            st.dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            try:
                metrics = run_stage(st.spec, cfg, inputs_of(self.plan, st), st.dir, st.launch)
            except BaseException:
                row["status"] = "failed"
                row["seconds"] = round(time.time() - t0, 1)
                self.save()
                raise
            row.update(status="done", seconds=round(time.time() - t0, 1), metrics=metrics)
            atomic_write_json(st.dir / DONE, {"key": st.key, "name": st.name, "kind": st.kind,
                                              "finished": _now(), "seconds": row["seconds"],
                                              "metrics": metrics})
        if makes_model(st):
            self.manifest["final_model"] = row["model_dir"]
        if st.of is not None:
            self.metrics[st.of] = row["metrics"]
        self.save()

    # -- gates --
    def items_of(self, model: str, metric: str) -> dict[str, float] | None:
        """Per-item values of `metric` from the evaluation of `model` (for the gate's interval)."""
        st = self.plan.by_name().get(f"eval:{model}")
        return load_items(st.dir).get(metric) if st else None

    def check_gates(self, evaluated: str) -> None:
        by = self.plan.by_name()
        for i, g in enumerate(self.plan.recipe.gates):
            if g.after != evaluated:
                continue
            ref = g.vs or by[g.after].starts_from
            value = self.metrics.get(g.after, {}).get(g.metric)
            reference = self.metrics.get(ref, {}).get(g.metric) if ref else None
            new_items = self.items_of(g.after, g.metric)
            ref_items = self.items_of(ref, g.metric) if ref and g.relative else None
            entry = {"index": i, "stage": g.after, "metric": g.metric, "rule": g.rule(), "value": value,
                     "reference": reference, "reference_stage": ref,
                     **check_gate(g, value, reference, new_items, ref_items)}
            entry["passed"] = entry["decision"] == "pass"
            self.manifest["gates"] = [x for x in self.manifest["gates"] if x["index"] != i] + [entry]
            self.save()
            stops = entry["decision"] == "fail" or (entry["decision"] == "inconclusive" and g.on_inconclusive == "stop")
            if stops:
                msg = f"gate {i} on {g.after} {'failed' if entry['decision'] == 'fail' else 'was inconclusive'}: " \
                      f"{entry['message']}; {g.after} is not promoted"
                self.manifest["stopped_by"] = {"gate": i, "stage": g.after, "message": msg}
                self.rows[g.after]["promoted"] = False
                # the release candidate stays the model this stage started from
                start = by[g.after].starts_from
                self.manifest["final_model"] = self.rows[start]["model_dir"] if start in self.rows else None
                raise GateFailed(msg)
            if entry["decision"] == "pass":
                con.note(f"[green]gate {i} on {g.after}: {entry['message']}[/green]")
            else:
                con.warn(f"gate {i} on {g.after} inconclusive (on_inconclusive: warn, the run goes on and is not "
                         f"releasable): {entry['message']}")

    def load_finished_metrics(self) -> None:
        """Metrics of evaluations finished in earlier runs (a rerun with --from/--only still checks gates)."""
        for st in self.plan.stages:
            done = is_done(st)
            if done is not None:
                self.rows[st.name].update(status="cached", seconds=done.get("seconds"),
                                          metrics=done.get("metrics", {}))
                if st.of is not None:
                    self.metrics[st.of] = done.get("metrics", {})
                if makes_model(st):
                    self.manifest["final_model"] = self.rows[st.name]["model_dir"]


def validate(plan: Plan) -> None:
    """Every stage's config through its own class, plus cheap static checks (no model, no data loaded)."""
    check_model_card(plan.recipe.model_card, "model_card")
    for st in plan.stages:
        obj = build_config(st.spec, resolved_config(plan, st), f"stages.{st.name}", None)
        validate_static(st.spec, obj, f"stages.{st.name}")
        if st.launch and st.launch.accelerate_config and not Path(st.launch.accelerate_config).is_file():
            raise UserError(f"stages.{st.name}.launch.accelerate_config: {st.launch.accelerate_config} does not "
                            "exist")


def run(recipe: RecipeConfig, *, recipe_file: str | None = None, output: str | None = None,
        from_: str | None = None, until: str | None = None, only: list[str] | None = None, force: bool = False,
        dry_run: bool = False) -> dict[str, Any]:
    """Run the plan; returns the recipe manifest (with dry_run: the plan's estimates). A gate that stops the run
    raises GateFailed once the manifest is saved. The report and the model card are the caller's (aloekit/cli.py
    writes them from the run directory)."""
    plan = build_plan(recipe, output)
    validate(plan)
    chosen = select(plan, from_, until, only)
    if dry_run:
        from .estimate import estimate_plan, plan_table
        rows = estimate_plan(plan)
        con.out.print(plan_table(plan, rows, chosen), highlight=False, markup=False)
        return {"plan": rows, "selected": chosen}

    by = plan.by_name()
    for n in chosen:  # a missing extra stops the run now, not after hours of earlier stages
        require_extras(by[n].spec, build_config(by[n].spec, resolved_config(plan, by[n]), f"stages.{n}", None),
                       by[n].launch, f"stages.{n}")
    # Stages before the selection must have finished: their outputs are this run's inputs.
    for n in chosen:
        for d in by[n].deps:
            if d not in chosen and is_done(by[d]) is None:
                raise UserError(f"stage {n} needs the output of {d}, which has not finished with this config; "
                                f"run {d} first (drop --from/--only, or add --only {d})")
    plan.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.out / "recipe.yaml", dump_config(recipe))
    runner = Runner(plan, recipe_file)
    runner.load_finished_metrics()
    runner.save()
    status, error = "done", None
    try:
        # Gates of models evaluated in an earlier run still hold the way: --from/--only cannot step over a stage
        # whose gate failed.
        first = [st.name for st in plan.stages].index(chosen[0]) if chosen else 0
        for st in plan.stages[:first]:
            if st.of in runner.metrics:
                runner.check_gates(st.of)
        for i, n in enumerate(chosen):
            st = by[n]
            con.note(f"[cyan]stage {i + 1}/{len(chosen)}: {n}[/cyan]")
            runner.run_one(st, force)
            if st.of is not None:  # an evaluation: the gates of the model it evaluated
                runner.check_gates(st.of)
    except GateFailed as e:
        status, error = "gate_failed", e
    except BaseException:
        runner.manifest.update(status="failed", finished=_now())
        runner.save()
        raise
    for n, row in runner.rows.items():
        if row["status"] == "pending" and n not in chosen:
            row["status"] = "skipped"
    runner.manifest.update(status=status, finished=_now())
    runner.save()
    if error is not None:
        raise error
    return runner.manifest
