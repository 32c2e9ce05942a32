"""Recipe -> validated stage plan: references resolved, graph ordered, every stage keyed by config + inputs.

Everything that can be wrong with a recipe is found here, before any model is loaded: a reference to a stage
that does not exist, a cycle, a model that is not one of the recipe's, a merge whose inputs come from another
base, a gate on a metric that no evaluation produces.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import data_dir as find_data_dir
from . import registry
from .config import RecipeConfig

STAGE_FORMAT = 1  # bump when a stage's on-disk output changes shape: old outputs are then recomputed

# Which fields of a stage hold models, datasets and its lineage: its Stage object (aloekit/stage.py) says.
# A model field's value may be a key of `models`, a declared model, or "@stage" of a model stage.


@dataclass
class Stage:
    name: str
    kind: str
    config: dict[str, Any]  # effective config, references still "@name"
    deps: list[str]
    launch: Any = None
    estimate: Any = None
    of: str | None = None  # eval stages: the model they evaluate
    key: str = ""
    dir: Path = Path()
    starts_from: str | None = None  # model stages: the stage or models-key their model comes from
    root: str | None = None  # the declared model at the start of this model's lineage

    @property
    def spec(self):
        """The kind's Stage object (aloekit/stage.py)."""
        return registry.get(self.kind)


@dataclass
class Plan:
    recipe: RecipeConfig
    out: Path
    data_root: Path | None
    stages: list[Stage] = field(default_factory=list)

    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}


# --- small helpers over nested dicts -------------------------------------------------------------------------

def _get_all(cfg: Any, path: str) -> list[tuple[list, str]]:
    """(container path, value) for every value at a dotted path; `a[]` walks list items."""
    found: list[tuple[list, str]] = []

    def walk(node: Any, parts: list[str], where: list) -> None:
        if not parts:
            if isinstance(node, str):
                found.append((where, node))
            return
        p = parts[0]
        if p.endswith("[]"):
            items = node.get(p[:-2]) if isinstance(node, dict) else None
            for i, item in enumerate(items or []):
                walk(item, parts[1:], where + [p[:-2], i])
        elif isinstance(node, dict) and p in node and node[p] is not None:
            walk(node[p], parts[1:], where + [p])

    walk(cfg, path.split("."), [])
    return found


def _set(cfg: Any, where: list, value: Any) -> None:
    node = cfg
    for p in where[:-1]:
        node = node[p]
    node[where[-1]] = value


def _where(where: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where).lstrip(".")


def _refs(node: Any, where: list | None = None) -> list[tuple[list, str]]:
    where = where or []
    if isinstance(node, str):
        return [(where, node[1:])] if node.startswith("@") else []
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in _refs(v, where + [k])]
    if isinstance(node, list):
        return [r for i, v in enumerate(node) for r in _refs(v, where + [i])]
    return []


def deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _file_hashes(node: Any) -> dict[str, str]:
    """Content hashes of local files a config names (datasets, templates): changing one re-runs the stage.
    Folders are not hashed (model folders are large and come from stages, whose keys already cover them)."""
    from ..io import sha256_file
    out = {}
    for s in _strings(node):
        if s.startswith("@") or len(s) > 4096:
            continue
        p = Path(s).expanduser()
        try:
            if p.is_file():
                out[s] = sha256_file(p)
        except OSError:
            pass
    return out


def _strings(node: Any):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


# --- building the plan ----------------------------------------------------------------------------------------

def _effective(kind: str, spec_cfg: dict, with_data: dict, has_data: bool, seed: int,
               data_dir: str | None) -> dict:
    cfg = deep_merge(spec_cfg, with_data) if has_data else copy.deepcopy(spec_cfg)
    for banned in ("output",):
        if banned in cfg:
            raise UserError(f"'{banned}' is set by the recipe runner (stages live under the recipe's output); "
                            "remove it from the stage config")
    fields = registry.get(kind).config.model_fields
    if "seed" in fields:  # a stage without randomness (a corpus index) has no seed
        cfg.setdefault("seed", seed)
    if "data_dir" in fields:  # a stage that reads the shared data gets its folder
        cfg.setdefault("data_dir", data_dir)
    return cfg


def makes_model(st: Stage) -> bool:
    return st.spec.makes_model


def _model_kinds() -> str:
    """The kinds whose stages write a model, for error messages."""
    return ", ".join(k for k in registry.kinds() if registry.get(k).makes_model)


def _resolve_models(stage: Stage, recipe: RecipeConfig, where: str) -> None:
    """Model fields: a `models` key becomes its model; anything else must be declared or a stage reference."""
    declared = set(recipe.models.values())
    for path in stage.spec.model_fields:
        for loc, value in _get_all(stage.config, path):
            if value.startswith("@"):
                continue
            if value in recipe.models:
                _set(stage.config, loc, recipe.models[value])
            elif value not in declared:
                keys = ", ".join(f"{k}={v}" for k, v in recipe.models.items())
                raise UserError(f"{where}.config.{_where(loc)}: model '{value}' is not one of the recipe's models "
                                f"({keys}); declare it under models: or use @<stage> for a stage's output")


def build_plan(recipe: RecipeConfig, out: str | os.PathLike | None = None) -> Plan:
    if recipe.data_dir is not None and not Path(recipe.data_dir).expanduser().is_dir():
        raise UserError(f"data_dir: {recipe.data_dir} is not a folder; fix the path or remove the key")
    root = find_data_dir(recipe.data_dir, required=False)
    has_data = root is not None
    data_dir = str(Path(root).resolve()) if has_data else None
    plan = Plan(recipe, Path(out or recipe.output), Path(data_dir) if has_data else None)

    names = list(recipe.stages)
    for n in names:
        if n.startswith("eval") or not n.replace("_", "").replace("-", "").isalnum():
            raise UserError(f"stages.{n}: stage names are letters, digits, - and _, and may not start with "
                            "'eval' (evaluation stages are named eval:<model> by the runner)")
        if n in recipe.models:
            raise UserError(f"stages.{n}: the name is also a key of models:; rename one of them")
    stages: dict[str, Stage] = {}
    for n, spec in recipe.stages.items():
        cfg = _effective(spec.kind, spec.config, spec.with_data, has_data, recipe.seed, data_dir)
        st = Stage(n, spec.kind, cfg, [], launch=spec.launch, estimate=spec.estimate)
        _resolve_models(st, recipe, f"stages.{n}")
        for loc, ref in _refs(cfg):
            if ref not in recipe.stages:
                raise UserError(f"stages.{n}.config.{_where(loc)}: '@{ref}' names no stage; stages are: "
                                f"{', '.join(names)}")
            if ref == n:
                raise UserError(f"stages.{n}.config.{_where(loc)}: a stage cannot use its own output")
            if ref not in st.deps:
                st.deps.append(ref)
        stages[n] = st
    _check_reference_kinds(stages)
    order = _topo(stages)
    _lineage(stages, order, recipe)
    plan.stages = [stages[n] for n in order]
    _add_evaluations(plan, stages, has_data, data_dir)
    _check_gates(plan, has_data)
    _key(plan)
    return plan


def _locations(st: Stage, paths) -> set[tuple]:
    return {tuple(loc) for path in paths for loc, _ in _get_all(st.config, path)}


def _check_reference_kinds(stages: dict[str, Stage]) -> None:
    for st in stages.values():
        model_locs = _locations(st, st.spec.model_fields)
        dataset_locs = _locations(st, st.spec.dataset_fields)
        for loc, ref in _refs(st.config):
            target = stages[ref]
            if tuple(loc) in model_locs and not makes_model(target):
                raise UserError(f"stages.{st.name}.config.{_where(loc)}: '@{ref}' is a {target.kind} stage, which "
                                f"outputs no model; reference a model stage ({_model_kinds()})")
            if tuple(loc) in dataset_locs and makes_model(target):
                raise UserError(f"stages.{st.name}.config.{_where(loc)}: '@{ref}' is a model, not a dataset; "
                                "reference a stage that writes a dataset")


def _topo(stages: dict[str, Stage]) -> list[str]:
    """Kahn's order, stable with the recipe's order; a cycle is reported with the stages on it."""
    order: list[str] = []
    pending = dict.fromkeys(stages)
    while pending:
        ready = [n for n in pending if all(d in order for d in stages[n].deps)]
        if not ready:
            cyc = ", ".join(pending)
            raise UserError(f"stages: the references form a cycle among {cyc}; remove one of the @ references")
        order.append(ready[0])
        del pending[ready[0]]
    return order


def _lineage(stages: dict[str, Stage], order: list[str], recipe: RecipeConfig) -> None:
    """Each model stage's root model; a merge's stage inputs must be fine-tunes of its base model."""
    for n in order:
        st = stages[n]
        field_ = st.spec.starts_from
        if field_ is None:
            continue
        vals = _get_all(st.config, field_)
        if not vals:
            raise UserError(f"stages.{n}.config.{field_}: missing; name the model to start from")
        v = vals[0][1]
        if v.startswith("@"):
            st.starts_from, st.root = v[1:], stages[v[1:]].root
        else:
            st.starts_from = next((k for k, m in recipe.models.items() if m == v), v)
            st.root = v
        if st.spec.merges:
            merged = _get_all(st.config, st.spec.merges)
            for loc, m in merged:
                if m.startswith("@") and stages[m[1:]].root != st.root:
                    raise UserError(f"stages.{n}.config.{_where(loc)}: '{m}' was trained from "
                                    f"{stages[m[1:]].root}, but the {st.kind}'s {field_} is {st.root}: task vectors "
                                    "need the model the inputs were fine-tuned from")
            # A merge's own lineage (for gate references) is its first stage input: the fine-tune it improves.
            first = next((m[1:] for _, m in merged if m.startswith("@")), None)
            if first:
                st.starts_from = first


def _add_evaluations(plan: Plan, stages: dict[str, Stage], has_data: bool, data_dir: str | None) -> None:
    ev = plan.recipe.evaluation
    if not ev.models:
        return
    if ev.benchmarks is None and ev.safety is None:
        raise UserError("evaluation: models are listed but neither benchmarks nor safety is set")
    safety_models = set(ev.safety_models if ev.safety_models is not None else ev.models)
    for m in safety_models - set(ev.models):
        raise UserError(f"evaluation.safety_models: '{m}' is not in evaluation.models")
    out_order = [s.name for s in plan.stages]
    evals: dict[str, Stage] = {}
    for m in ev.models:
        if m in stages:
            if not makes_model(stages[m]):
                raise UserError(f"evaluation.models: '{m}' is a {stages[m].kind} stage; only model stages "
                                f"({_model_kinds()}) produce models")
            model, deps = f"@{m}", [m]
        elif m in plan.recipe.models:
            model, deps = plan.recipe.models[m], []
        else:
            raise UserError(f"evaluation.models: '{m}' is neither a stage nor a key of models: "
                            f"({', '.join([*plan.recipe.models, *stages])})")
        cfg: dict[str, Any] = {"model": {**ev.model.model_dump(mode="json"), "name": model}}
        if ev.benchmarks is not None:
            b = ev.benchmarks
            tasks = list(b.tasks) + (list(b.data_tasks) if has_data else [])
            cfg["benchmarks"] = {"tasks": tasks, "scoring": b.scoring, "limit": b.limit, "hub": b.hub,
                                 "data_dir": data_dir, "max_new_tokens": b.max_new_tokens,
                                 "seed": plan.recipe.seed}
            if ev.system_prompt is not None:  # only when set: the stage keys of runs without it stay the same
                cfg["benchmarks"]["system_prompt"] = ev.system_prompt
        if ev.safety is not None and m in safety_models:
            s = deep_merge(ev.safety, ev.safety_with_data) if has_data else copy.deepcopy(ev.safety)
            s.setdefault("seed", plan.recipe.seed)
            s["data_dir"] = s.get("data_dir", data_dir)
            s["pairs"] = {**s.get("pairs", {}), "enabled": False}
            s["model"] = {**cfg["model"], **s.get("model", {}), "name": model}
            if ev.system_prompt is not None:
                if "system" in s or "system_prompt" in s:
                    raise UserError("evaluation.system_prompt and evaluation.safety's own system prompt are both "
                                    "set; give one (evaluation.system_prompt applies to benchmarks and safety)")
                s["system_prompt"] = ev.system_prompt
            cfg["safety"] = s
        evals[m] = Stage(f"eval:{m}", registry.EVALUATION, cfg, deps, estimate=ev.estimate, of=m)
    # Each evaluation runs right after its model, so a failing gate stops the run as early as possible.
    ordered: list[Stage] = [evals[m] for m in ev.models if m not in stages]
    for n in out_order:
        ordered.append(stages[n])
        if n in evals:
            ordered.append(evals[n])
    plan.stages = ordered


def known_metrics(plan: Plan) -> tuple[set[str], set[str]]:
    """(exact metric names, prefixes whose suffix is only known after the run) the evaluation produces."""
    from ..eval.tasks import TASKS, expand
    exact: set[str] = set()
    prefixes: set[str] = set()
    ev = plan.recipe.evaluation
    if ev.benchmarks is not None:
        tasks = list(ev.benchmarks.tasks) + (list(ev.benchmarks.data_tasks) if plan.data_root else [])
        names, groups = expand(tasks)
        for n in [*names, *groups]:
            if n in TASKS and TASKS[n].kind != "mcq":
                prefixes.add(f"{n}.")  # principle benchmarks (bbq, crows_pairs, truthfulqa) have their own metrics
            else:
                exact |= {f"{n}.acc", f"{n}.acc_norm"}
    if ev.safety is not None:
        exact |= {"safety.asr", "safety.refusal_rate", "safety.over_refusal", "safety.medsafety_refusal"}
        prefixes.add("safety.asr.")
    return exact, prefixes


def _check_gates(plan: Plan, has_data: bool) -> None:
    from .gates import decidable, min_items
    ev_models = set(plan.recipe.evaluation.models)
    by = plan.by_name()
    exact, prefixes = known_metrics(plan) if ev_models else (set(), set())
    for i, g in enumerate(plan.recipe.gates):
        where = f"gates[{i}]"
        if g.after not in plan.recipe.stages:
            raise UserError(f"{where}.after: '{g.after}' is not a stage ({', '.join(plan.recipe.stages)})")
        if g.after not in ev_models:
            raise UserError(f"{where}.after: '{g.after}' is not evaluated; add it to evaluation.models")
        if g.metric not in exact and not any(g.metric.startswith(p) for p in prefixes):
            known = ", ".join(sorted(exact)) or "none (evaluation has no benchmarks or safety)"
            raise UserError(f"{where}.metric: '{g.metric}' is not produced by the evaluation; known: {known}")
        needs_ref = g.max_drop is not None or g.max_rise is not None
        ref = g.vs or by[g.after].starts_from
        if needs_ref and (ref is None or ref not in ev_models):
            raise UserError(f"{where}: max_drop/max_rise compare with '{ref}', which is not evaluated; add it to "
                            "evaluation.models or set vs: to an evaluated model")
        n = expected_items(by[f"eval:{g.after}"].config, g.metric)
        why = decidable(g, n) if n else None
        if why:
            need = min_items(g)
            raise UserError(f"{where}: {g.metric} on {g.after} can never be decided: {why}; it needs at least "
                            f"{need} items (raise the evaluation's limit or budget, or loosen the rule)")


def expected_items(eval_config: dict, metric: str) -> int | None:
    """How many items an evaluation will score for `metric`, where the config tells (a limit, a budget);
    None when only the data can tell."""
    from ..eval.tasks import expand
    task = metric.split(".")[0]
    if task == "safety":
        s = eval_config.get("safety")
        if s is None:
            return None
        from ..redteam.config import RedteamConfig
        cfg = RedteamConfig.model_validate({**s, "output": "<stage dir>"})
        if metric in ("safety.asr", "safety.refusal_rate"):
            return cfg.budget
        if metric == "safety.over_refusal":
            return cfg.xstest.limit
        if metric == "safety.medsafety_refusal":
            return cfg.medsafety_refusal.limit
        return None
    b = eval_config.get("benchmarks")
    if not b or not b.get("limit"):
        return None
    names, groups = expand([task])
    return b["limit"] * len(groups.get(task, [task]))


def _key(plan: Plan) -> None:
    keys: dict[str, str] = {}
    for st in plan.stages:
        cfg = copy.deepcopy(st.config)
        for loc, ref in _refs(cfg):
            _set(cfg, loc, f"@{ref}#{keys[ref]}")
        blob = {"format": STAGE_FORMAT, "kind": st.kind, "config": cfg, "files": _file_hashes(st.config),
                "launch": st.launch.model_dump() if st.launch else None}
        st.key = hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
        keys[st.name] = st.key
        st.dir = plan.out / "stages" / f"{st.name.replace(':', '-')}-{st.key[:10]}"


def output_of(st: Stage) -> Path:
    """What "@name" means: the model folder of a model stage, else the stage's run directory."""
    if st.spec.model_output is not None:
        return st.dir / st.spec.model_output(st.config)
    return st.dir


def inputs_of(plan: Plan, st: Stage) -> dict[str, Path]:
    """The stage's "@stage" references: name -> run directory or model folder."""
    by = plan.by_name()
    return {ref: output_of(by[ref]) for ref in st.deps}


def resolved_config(plan: Plan, st: Stage) -> dict[str, Any]:
    by = plan.by_name()
    cfg = copy.deepcopy(st.config)
    for loc, ref in _refs(cfg):
        _set(cfg, loc, str(output_of(by[ref])))
    return cfg
