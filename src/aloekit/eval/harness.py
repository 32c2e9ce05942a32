"""lm-eval's tasks in `aloekit eval`: a `--tasks` name that is not an aloekit task is looked up in lm-eval's
TaskManager (any task, group, tag or glob it indexes), and a path names a task YAML file or a folder of them (its
folder is indexed too, so `include:` and group members resolve). lm-eval runs them (`simple_evaluate`: its prompts,
filters, metrics and aggregation) with a model the caller gives (`LMEvalModel`: the command line passes
aloekit-hf, from the lmeval package, which this package does not import), answering on eval's loaded backend.
Their results, configs and samples go into the same results.json and samples files as aloekit's own tasks.

aloekit's own tasks keep their own loaders: they read the original files offline, and decontamination and the
Medprompt layer share those readers (benchmarks/). lm-eval is an optional extra, imported only here and only when
a task needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import ModelConfig
from ..errors import UserError
from . import schema as S
from .tasks import GROUPS, OPEN_TASKS, TASKS

LIST_HINT = "see `aloekit eval --list`, or `python -m aloekit.lmeval ls tasks` for lm-eval's"


class LMEvalModel(Protocol):
    """An lm-eval model over a loaded aloekit backend (aloekit/cli.py: aloekit-hf)."""

    name: str

    def task_paths(self) -> list[Path]:
        """Folders of task YAMLs to index next to lm-eval's own (aloekit's packaged lm-eval tasks)."""

    def check(self, model: ModelConfig, args: dict[str, Any]) -> None:
        """Bad model arguments -> UserError, before anything is loaded."""

    def build(self, model: ModelConfig, backend, seed: int, args: dict[str, Any]) -> Any:
        """The lm-eval LM answering on `backend` (the model of `model`, already loaded)."""


def split(names: list[str]) -> tuple[list[str], list[str]]:
    """(aloekit task and group names, the rest: lm-eval task names, globs or YAML paths), in order."""
    ours: list[str] = []
    theirs: list[str] = []
    for raw in names:
        name = raw.strip()
        if name:
            (ours if name in GROUPS or name in TASKS or name in OPEN_TASKS else theirs).append(name)
    return ours, theirs


def check(specs: list[str], model: ModelConfig, args: dict[str, Any], strategy: str | None,
          lm_model: LMEvalModel | None) -> None:
    """What can be said before lm-eval is even imported."""
    if not specs:
        if args:
            raise UserError("--model-args: only lm-eval tasks take model arguments; none is in --tasks")
        return
    if lm_model is None:
        raise UserError(f"--tasks {', '.join(specs)}: not an aloekit task ({LIST_HINT}); lm-eval tasks run from the "
                        "`aloekit eval` command, which gives lm-eval aloekit's model")
    import importlib.util
    if importlib.util.find_spec("lm_eval") is None:
        raise UserError(f"--tasks {', '.join(specs)}: not an aloekit task ({LIST_HINT}); lm-eval's tasks need the "
                        "'lmeval' extra: pip install 'aloekit[lmeval]'")
    if strategy:
        raise UserError(f"--strategy {strategy}: strategies answer aloekit's single-choice tasks; "
                        f"{', '.join(specs)} are lm-eval tasks (drop them, or run them without --strategy)")
    if model.backend != "hf":
        raise UserError(f"--tasks {', '.join(specs)}: lm-eval tasks run on the hf backend ({lm_model.name} answers "
                        f"lm-eval's token-level requests), not --backend {model.backend}")
    lm_model.check(model, args)


@dataclass
class Tasks:
    """lm-eval tasks loaded and checked: what `simple_evaluate` runs."""

    manager: Any  # lm_eval TaskManager
    objects: list  # the top-level Tasks and Groups asked for
    names: list[str]  # their leaf tasks
    sources: dict[str, str] = field(default_factory=dict)  # task -> its YAML file


def load(specs: list[str], task_paths: list[Path] | None = None, metadata: dict[str, Any] | None = None) -> Tasks:
    """Index and build the tasks (their datasets included), so a bad name, YAML or data file fails before the model
    is loaded. lm-eval's own ~15k task files are indexed (a few seconds) only when a name needs them."""
    files, folders, names = [], [], []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            _check_yaml(path)
            files.append(path.resolve())
        elif path.is_dir():
            for y in sorted(path.rglob("*.yaml")):
                _check_yaml(y)
            folders.append(path.resolve())
        elif spec.endswith((".yaml", ".yml")) or "/" in spec:
            raise UserError(f"--tasks {spec}: no such task YAML file or folder")
        else:
            names.append(spec)
    extra = [Path(p) for p in task_paths or [] if Path(p).is_dir()] if names else []
    include = list(dict.fromkeys([*extra, *folders, *(f.parent for f in files)]))
    try:
        return _load(files, folders, names, include, defaults=bool(names), metadata=metadata)
    except _NeedsDefaults:  # a group YAML of ours naming lm-eval's own tasks
        return _load(files, folders, names, include, defaults=True, metadata=metadata)


class _NeedsDefaults(Exception):
    pass


def _load(files: list[Path], folders: list[Path], names: list[str], include: list[Path], defaults: bool,
          metadata: dict[str, Any] | None) -> Tasks:
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind, TaskIndex

    tm = TaskManager(include_path=[str(p) for p in include] or None, include_defaults=defaults, metadata=metadata)
    wanted: list[tuple[str, str]] = [(str(f), str(f)) for f in files]  # (what to load, how messages name it)
    unknown = []
    for name in names:
        found = tm.match_tasks([name]) if any(c in name for c in "*?[") else [name] if name in tm.task_index else []
        if not found:
            unknown.append(name)
        wanted += [(n, f"lm-eval task {n} ({_where(tm, n)})") for n in found]
    if unknown:
        raise UserError(f"--tasks: unknown task {', '.join(repr(n) for n in unknown)}: neither an aloekit task nor "
                        f"an lm-eval task, group or tag, nor a task YAML file or folder ({LIST_HINT})")
    for folder in folders:  # every task and group of the folder that is not a member of one of its groups
        index = TaskIndex.build([folder])
        members = {m for e in index.values() if e.kind == Kind.GROUP for m in _members(e.cfg)}
        top = [n for n, e in index.items() if e.kind != Kind.TAG and n not in members]
        if not top:
            raise UserError(f"--tasks {folder}: no lm-eval task or group in this folder")
        wanted += [(n, f"{folder}: task {n} ({_where(tm, n)})") for n in top]

    objects: list = []
    for spec, where in wanted:
        try:
            loaded = tm.load([spec])
        except KeyError as e:
            if not defaults:
                raise _NeedsDefaults from None
            raise UserError(f"{where}: {_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - lm-eval reports a bad task config or data file many ways
            raise UserError(f"{where}: {_line(e)}") from None
        children = {c for g in loaded["groups"].values() for c in g.child_names}
        objects += [g for n, g in loaded["groups"].items() if n not in children]
        objects += [t for n, t in loaded["tasks"].items() if n not in children]
    try:  # a task asked for twice (alone and in a group): lm-eval refuses to score it twice
        flat = tm.load(objects)
    except ValueError as e:
        raise UserError(f"--tasks: {_line(e)}") from None
    sources = {n: str(t.config.metadata.get("config_source") or _where(tm, n))
               for n, t in flat["tasks"].items() if isinstance(getattr(t.config, "metadata", None), dict)}
    return Tasks(tm, objects, list(flat["tasks"]), sources)


def _check_yaml(path: Path) -> None:
    """A task file lm-eval can read: YAML, includes and `!function`s resolved, with a task or group key."""
    from lm_eval.tasks._yaml_loader import load_yaml
    try:
        cfg = load_yaml(path)
    except Exception as e:  # noqa: BLE001 - YAML syntax, a missing include or function module, ...
        raise UserError(f"{path}: not a valid lm-eval task file: {_line(e)}") from None
    if "task" not in cfg and "group" not in cfg:
        raise UserError(f"{path}: not an lm-eval task file: it has neither a `task:` nor a `group:` key")


def _members(cfg: dict | None) -> list[str]:
    tasks = (cfg or {}).get("task") or []
    return [t if isinstance(t, str) else t.get("task") or t.get("group") for t in tasks
            if isinstance(t, (str, dict))]


def _where(tm, name: str) -> str:
    entry = tm.task_index.get(name)
    return str(entry.yaml_path) if entry is not None and entry.yaml_path else "lm-eval"


def _line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(str(text).split()) or type(e).__name__


def evaluate(tasks: Tasks, lm, limit: int | None, seed: int) -> dict[str, Any]:
    """lm-eval's own evaluation of the tasks, samples logged. Seed s gives lm-eval's four seeds (s, s+1234, s+1234,
    s+1234): aloekit's default 0 is lm-eval's default (0, 1234, 1234, 1234), so few-shot prompts match its CLI."""
    import lm_eval
    from jinja2 import TemplateError
    try:
        return lm_eval.simple_evaluate(model=lm, tasks=tasks.objects, task_manager=tasks.manager, limit=limit,
                                       log_samples=True, random_seed=seed, numpy_random_seed=seed + 1234,
                                       torch_random_seed=seed + 1234, fewshot_random_seed=seed + 1234)
    except TemplateError as e:
        files = ", ".join(sorted(set(tasks.sources.values())))
        raise UserError(f"{files}: a prompt template failed on a document: {_line(e)}") from None


def merge(out: dict[str, Any], res: dict[str, Any], samples: dict[str, list[dict]]) -> None:
    """lm-eval's results of its tasks into aloekit's results dict, and their samples (in lm-eval's file form)."""
    import json
    # as lm-eval writes them: what JSON cannot hold (a dataset's numpy values, a config's objects) as text
    res = json.loads(json.dumps(res, default=_plain, ensure_ascii=False))
    for key in ("results", "group_subtasks", "versions", "n-shot", "higher_is_better", "n-samples"):
        out[key].update(res.get(key, {}))
    out["groups"].update(res.get("groups", {}))
    for task, cfg in res.get("configs", {}).items():
        out["configs"][task] = {**cfg, "scoring": "lm-eval", "system_prompt": "none"}
    for task, rows in (res.get("samples") or {}).items():
        samples[task] = [S.written(r) for r in sorted(rows, key=lambda r: r["doc_id"])]


def _plain(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, set):
        return sorted(o, key=str)
    return str(o)
