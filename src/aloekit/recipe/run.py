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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import console as con
from ..config import dump_config
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from .config import Launch, RecipeConfig, check_model_card
from .gates import check as check_gate
from .gates import load_items
from .plan import Plan, Stage, build_plan, inputs_of, makes_model, output_of, resolved_config
from .stages import LAUNCH_FILE, build_config, join_launch, launched, require_extras, run_stage, validate_static

DONE = "stage.json"


class JoinFailed(UserError):
    """A machine of rank > 0 has nothing left to join: machine 0 stopped, or never announced the stage in time. One
    line and exit 1: the input may be fine, machine 0's own output says why."""

    exit_code = 1


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
                metrics = run_stage(st.spec, cfg, inputs_of(self.plan, st), st.dir, st.launch, st.key)
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


@dataclass
class Machine:
    """This machine's part in stages launched on several machines (`aloekit run` flags, which win over the
    recipe's launch: the rank and the address are known only when the job starts)."""

    rank: int | None = None
    main_process_ip: str | None = None
    main_process_port: int | None = None
    join_timeout: float = 24 * 3600.0  # seconds a machine of rank > 0 waits for machine 0 to launch each stage

    def flags(self) -> dict[str, Any]:
        return {k: v for k, v in (("machine_rank", self.rank), ("main_process_ip", self.main_process_ip),
                                  ("main_process_port", self.main_process_port)) if v is not None}


FLAG = {"machine_rank": "--machine-rank", "main_process_ip": "--main-process-ip",
        "main_process_port": "--main-process-port"}


def multi_machine(plan: Plan) -> list[Stage]:
    """Stages whose distributed job spans several machines: the only ones a machine of rank > 0 takes part in."""
    return [st for st in plan.stages if launched(st.spec, st.launch) and st.launch.num_machines > 1]


def apply_machine(plan: Plan, machine: Machine) -> int:
    """Put the command line's rank and address into every multi-machine stage; returns this machine's rank."""
    flags = machine.flags()
    multi = multi_machine(plan)
    if flags and not multi:
        raise UserError(f"{FLAG[next(iter(flags))]}: no stage of this recipe runs on more than one machine "
                        "(a training stage's launch.num_machines)")
    for st in multi:
        current = {k: getattr(st.launch, k) for k in Launch.model_fields}
        try:
            st.launch = Launch.model_validate({**current, **flags})
        except ValidationError as e:
            err = e.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            if err["loc"]:  # a field's own bound; the model check names its field in the message
                msg = f"{'.'.join(map(str, err['loc']))}: {msg}"
            given = " ".join(f"{FLAG[k]} {v}" for k, v in flags.items())
            raise UserError(f"stages.{st.name}.launch with {given}: {msg}") from None
    ranks = {st.name: st.launch.machine_rank for st in multi}
    if len(set(ranks.values())) > 1:
        raise UserError("launch.machine_rank differs between stages (" + ", ".join(f"{n}: {r}" for n, r in
                        ranks.items()) + "); a machine has one rank for the whole recipe: pass --machine-rank")
    return next(iter(ranks.values()), 0)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or caught between two writes on a network filesystem
        return None


# A launch file is trusted when written this long before the machine started waiting at most: machines start
# seconds apart, and one left by a killed run of machine 0 is older. Assumes clocks agree to well within it.
JOIN_SLACK_S = 600.0


def wait_for_launch(plan: Plan, st: Stage, timeout: float, poll: float = 1.0, every: float = 60.0) -> dict:
    """Machine 0's announcement that `st`'s job starts now (its launch file). Stops with one line when machine 0's
    run ends first, or after `timeout` seconds."""
    f = st.dir / LAUNCH_FILE
    where = plan.out / "manifest.json"
    seen = _read_json(where)  # a run that had already ended when we began is an earlier one, not machine 0's now
    stale = seen if seen and seen.get("status") != "running" else None
    t0 = last = time.time()
    while True:
        info = _read_json(f)
        if info and info.get("key") == st.key and info.get("written", 0) >= t0 - JOIN_SLACK_S:
            return info
        m = _read_json(where)
        if m and m.get("status") != "running" and not (stale and m.get("started") == stale.get("started")):
            raise JoinFailed(f"machine {st.launch.machine_rank}: machine 0's run ended ({m.get('status')}) before "
                             f"it launched {st.name}; see {where}")
        now = time.time()
        if now - t0 > timeout:
            raise JoinFailed(f"machine {st.launch.machine_rank}: machine 0 did not launch {st.name} within "
                             f"{timeout:g} s (no {f}); do all machines see the same filesystem and run the same "
                             "recipe with the same --output? (--join-timeout sets the wait)")
        if now - last >= every:
            state = m.get("status") if m else f"not started in {plan.out}"
            con.note(f"machine {st.launch.machine_rank}: waiting for machine 0 to launch {st.name} "
                     f"({(now - t0) / 60:.0f} min; machine 0's run: {state})")
            last = now
        time.sleep(poll)


def join(plan: Plan, chosen: list[str], rank: int, force: bool, timeout: float) -> dict[str, Any]:
    """A machine of rank > 0: take part in the multi-machine stages only, each when machine 0 launches it. Machine 0
    runs the other stages (data, merge, evaluations) and owns the run directory's files."""
    by = plan.by_name()
    multi = {st.name for st in multi_machine(plan)}
    joined: list[str] = []
    for n in chosen:
        st = by[n]
        if n not in multi:
            continue
        if not force and is_done(st) is not None:
            con.note(f"[dim]{n}: finished earlier ({st.dir.name}); skipped[/dim]")
            continue
        con.note(f"machine {rank}: waiting for machine 0 to launch {n} ({st.dir / LAUNCH_FILE})")
        info = wait_for_launch(plan, st, timeout)
        if info.get("main_process_port") != st.launch.main_process_port:
            raise UserError(f"stages.{n}.launch.main_process_port: {st.launch.main_process_port} on machine "
                            f"{rank}, {info.get('main_process_port')} on machine 0; give every machine the same "
                            "--main-process-port")
        con.note(f"[bold]{n}[/bold] ({st.kind}) machine {rank} of {st.launch.num_machines} -> {st.dir}")
        join_launch(st.spec, st.dir, st.launch)
        joined.append(n)
    con.note(f"machine {rank}: joined {', '.join(joined) or 'no stage'}; machine 0 runs the other stages")
    return {"machine_rank": rank, "joined": joined}


def run(recipe: RecipeConfig, *, recipe_file: str | None = None, output: str | None = None,
        from_: str | None = None, until: str | None = None, only: list[str] | None = None, force: bool = False,
        dry_run: bool = False, machine: Machine | None = None) -> dict[str, Any]:
    """Run the plan; returns the recipe manifest (with dry_run: the plan's estimates). A gate that stops the run
    raises GateFailed once the manifest is saved. The report and the model card are the caller's (aloekit/cli.py
    writes them from the run directory). `machine` with a rank > 0: join machine 0's multi-machine stages only;
    returns {"machine_rank", "joined"}."""
    machine = machine or Machine()
    plan = build_plan(recipe, output)
    rank = apply_machine(plan, machine)
    validate(plan)
    chosen = select(plan, from_, until, only)
    if dry_run:
        from .estimate import estimate_plan, plan_table
        rows = estimate_plan(plan)
        con.out.print(plan_table(plan, rows, chosen), highlight=False, markup=False)
        return {"plan": rows, "selected": chosen}

    by = plan.by_name()
    for st in multi_machine(plan):
        why = st.launch.address_error() if st.name in chosen else None
        if why:
            raise UserError(f"stages.{st.name}.launch.{why}")
    for n in chosen:  # a missing extra stops the run now, not after hours of earlier stages
        require_extras(by[n].spec, build_config(by[n].spec, resolved_config(plan, by[n]), f"stages.{n}", None),
                       by[n].launch, f"stages.{n}")
    # Stages before the selection must have finished: their outputs are this run's inputs.
    for n in chosen:
        for d in by[n].deps:
            if d not in chosen and is_done(by[d]) is None:
                raise UserError(f"stage {n} needs the output of {d}, which has not finished with this config; "
                                f"run {d} first (drop --from/--only, or add --only {d})")
    if rank > 0:  # machine 0 owns the run directory: no recipe.yaml, manifest or stage outputs from here
        return join(plan, chosen, rank, force, machine.join_timeout)
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
