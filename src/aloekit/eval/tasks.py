"""The benchmark registry: names, groups, how each is loaded and which metrics it reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..paths import data_dir as resolve_data_dir
from . import data as D

# kind -> metrics family (see metrics.py): "mcq" reports acc/acc_norm, the others their own measures
KINDS = ("mcq", "truthfulqa_mc1", "truthfulqa_mc2", "bbq", "crows")


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    kind: str
    load: Callable  # (root | None, skip_bad, limit) -> data.Rows
    local_path: str  # relative to the data dir, for --list
    hub_id: str
    full_size: int  # the official test size, for --list
    delimiter: str = " "  # lm-eval's target_delimiter between context and option
    # scoring modes that make sense: the likelihood-only tasks (mc2, crows) have no single letter to pick
    modes: tuple[str, ...] = ("loglik", "letter", "generate")
    bundled: bool = False  # shipped in the package: needs neither --data-dir nor the hub


_MMLU_TITLES = {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
                "medical_genetics": 100, "professional_medicine": 272}

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("medqa", "MedQA USMLE 4 options (test)", "mcq", D.load_medqa,
         "medqa_usmle_4opt/phrases_no_exclude_test.jsonl", "GBaker/MedQA-USMLE-4-options", 1273),
    Task("medmcqa", "MedMCQA (dev)", "mcq", D.load_medmcqa, "medmcqa_dev/dev.json", "openlifescienceai/medmcqa",
         4183),
    Task("pubmedqa", "PubMedQA PQA-L (500 test ids)", "mcq", D.load_pubmedqa, "pubmedqa_pqal/ori_pqal.json",
         "bigbio/pubmed_qa", 500),
    *[Task(f"mmlu_{s}", f"MMLU {s.replace('_', ' ')} (test)", "mcq", D.mmlu_loader(s),
           f"mmlu_medical/test/{s}_test.csv", "cais/mmlu", n) for s, n in _MMLU_TITLES.items()],
    Task("headqa", "HEAD-QA English (test)", "mcq", D.load_headqa, "headqa_en/test_HEAD_EN.json",
         "EleutherAI/headqa", 2742),
    Task("careqa", "CareQA English (test)", "mcq", D.load_careqa, "careqa/CareQA_en.jsonl", "HPAI-BSC/CareQA",
         5621),
    Task("truthfulqa_mc1", "TruthfulQA MC1 (v0)", "truthfulqa_mc1", D.truthfulqa_loader("mc1"),
         "truthfulqa/v0_817/mc_task.json", "truthfulqa/truthful_qa", 817, modes=("loglik",)),
    Task("truthfulqa_mc2", "TruthfulQA MC2 (v0)", "truthfulqa_mc2", D.truthfulqa_loader("mc2"),
         "truthfulqa/v0_817/mc_task.json", "truthfulqa/truthful_qa", 817, modes=("loglik",)),
    Task("bbq", "BBQ bias benchmark (categories present)", "bbq", D.load_bbq, "bbq/data/<Category>.jsonl",
         "heegyu/bbq", 58492),
    Task("crows_pairs", "CrowS-Pairs (% stereotype preferred)", "crows", D.load_crows,
         "crows_pairs/crows_pairs_anonymized.csv", "nyu-mll/crows_pairs", 1508, delimiter="",
         modes=("loglik",)),
    Task("aloekit_demo", "aloekit demo set (original, bundled; offline demo)", "mcq", D.load_aloekit_demo,
         f"(bundled) {D.DEMO_EVAL}", "-", 60, bundled=True),
]}

GROUPS: dict[str, list[str]] = {
    "mmlu_medical": [f"mmlu_{s}" for s in _MMLU_TITLES],
    "multimedqa": ["medqa", "medmcqa", "pubmedqa", *[f"mmlu_{s}" for s in _MMLU_TITLES]],
    "principles": ["truthfulqa_mc1", "truthfulqa_mc2", "bbq", "crows_pairs"],
}


def data_root(names: list[str], data_dir: str | None, hub: bool) -> Path | None:
    """The benchmark folder the loaders read (None: the hub). Bundled tasks alone need no folder."""
    if hub:
        return None
    return resolve_data_dir(data_dir, required=not all(TASKS[n].bundled for n in names))


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
        elif name in TASKS:
            members = [name]
        else:
            valid = ", ".join([*TASKS, *GROUPS])
            raise UserError(f"--tasks: unknown task '{name}'; valid: {valid} (see `aloekit eval --list`)")
        tasks.extend(m for m in members if m not in tasks)
    if not tasks:
        raise UserError("--tasks: no task given; see `aloekit eval --list`")
    if "multimedqa" in groups:  # its MMLU part is reported on its own too, as the papers do
        groups.setdefault("mmlu_medical", GROUPS["mmlu_medical"])
    return tasks, groups
