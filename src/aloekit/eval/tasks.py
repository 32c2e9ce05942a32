"""The evaluation tasks: the question benchmarks of the benchmark registry (`aloekit.benchmarks.REGISTRY`),
their groups, and turning `--tasks` into task names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

from ..benchmarks import GROUPS, PARTIAL_GROUPS, QUESTION_KINDS, REGISTRY, Benchmark, absent, data_root
from ..errors import UserError
from .openended import OPEN_TASKS

# kind -> metrics family (see metrics.py): "mcq" reports acc/acc_norm, the others their own measures
KINDS = QUESTION_KINDS

Task = Benchmark  # a task is a registered question benchmark, scored on its first (test) split


class _Tasks(Mapping):
    """The registry's question benchmarks, read live: a benchmark registered later is a task too."""

    def __getitem__(self, name: str) -> Benchmark:
        b = REGISTRY.get(name)
        if b is None or b.kind not in KINDS:
            raise KeyError(name)
        return b

    def __iter__(self) -> Iterator[str]:
        return (n for n, b in REGISTRY.items() if b.kind in KINDS)

    def __len__(self) -> int:
        return sum(1 for _ in self)


TASKS: Mapping[str, Benchmark] = _Tasks()

__all__ = ["GROUPS", "KINDS", "OPEN_TASKS", "PARTIAL_GROUPS", "TASKS", "Task", "data_root", "expand", "present",
           "sources"]


def sources(names: list[str]) -> list[str]:
    """The registered benchmarks behind task names (an open task reads its MCQ benchmarks' files)."""
    out: list[str] = []
    for n in names:
        out.extend(m for m in OPEN_TASKS.get(n, [n]) if m not in out)
    return out


def expand(names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Task and group names -> (tasks in order, without repeats; the groups asked for with their members)."""
    tasks: list[str] = []
    groups: dict[str, list[str]] = {}
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in GROUPS:
            groups[name] = GROUPS[name]
            members = GROUPS[name]
        elif name in TASKS or name in OPEN_TASKS:
            members = [name]
        else:
            valid = ", ".join([*TASKS, *OPEN_TASKS, *GROUPS])
            raise UserError(f"--tasks: unknown task '{name}'; valid: {valid} (see `aloekit eval --list`)")
        tasks.extend(m for m in members if m not in tasks)
    if not tasks:
        raise UserError("--tasks: no task given; see `aloekit eval --list`")
    if {"multimedqa", "aloe_medical"} & set(groups):  # their MMLU part is reported on its own too, as the papers do
        groups.setdefault("mmlu_medical", GROUPS["mmlu_medical"])
    return tasks, groups


def present(names: list[str], root: Path | None) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    """`expand`, less the members of a partial group (`aloe_medical`) whose files are absent under `root`:
    (tasks, groups over the members kept, skipped task -> why). A task also asked for by name or through
    another group is kept, so its missing file still stops the run; a group left with no member is dropped."""
    tasks, groups = expand(names)
    needed = set()
    for raw in names:
        name = raw.strip()
        if name in GROUPS and name not in PARTIAL_GROUPS:
            needed.update(GROUPS[name])
        elif name in TASKS or name in OPEN_TASKS:
            needed.add(name)
    skipped = {t: why for t in tasks if t not in needed and (why := absent(t, root))}
    if skipped and len(skipped) == len(tasks):
        raise UserError(f"--tasks {','.join(names)}: none of the benchmark files found under {root} (e.g. "
                        f"{next(iter(skipped.values()))}); check --data-dir, or pass --hub")
    groups = {g: kept for g, ms in groups.items() if (kept := [m for m in ms if m not in skipped])}
    return [t for t in tasks if t not in skipped], groups, skipped
