"""The one registry of benchmarks: every benchmark file set aloekit reads, with its splits, format and hub copy.

Evaluation (`eval.tasks.TASKS`: the entries with a metrics kind), decontamination (`data.decontam.BENCHMARKS`:
the entries with a `decontam` name), the Medprompt pools and the merge dev sets (other splits of the same
entries), the data stage's registered benchmark sources and the red-team request sets all look entries up
here; a benchmark registered once (`register`) shows in each of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import UserError
from ..paths import data_dir as resolve_data_dir
from . import formats as F
from .files import collect, hub_rows
from .question import Question, Rows

# metrics families of the question benchmarks (eval/metrics.py); request sets are "requests" / "safe_prompts"
QUESTION_KINDS = ("mcq", "truthfulqa_mc1", "truthfulqa_mc2", "bbq", "crows")
REQUEST_KINDS = ("requests", "safe_prompts")


@dataclass(frozen=True)
class Split:
    local: str | None  # under the data dir, or "pkg:<path inside the aloekit package>"; None: hub only
    hub_split: str | None = None  # the split's name in the hub copy (None: no hub copy)
    hint: str = ""  # how to get the file, for the "not found" message
    opts: dict[str, Any] = field(default_factory=dict)  # reader options of this split (PubMedQA: which ids)


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str
    kind: str  # QUESTION_KINDS or REQUEST_KINDS
    format: str  # formats.FORMATS key (question benchmarks) or the request reader's name
    splits: dict[str, Split]  # the first is the default: the evaluated split of a question benchmark
    hub_id: str = "-"
    hub_config: str | None = None
    full_size: int = 0  # the official size of the default split, for --list
    delimiter: str = " "  # lm-eval's target_delimiter between context and option
    # scoring modes that make sense: the likelihood-only tasks (mc2, crows) have no single letter to pick
    modes: tuple[str, ...] = ("loglik", "letter", "generate")
    bundled: bool = False  # shipped in the package: needs neither --data-dir nor the hub
    decontam: str | None = None  # the name decontamination checks its default split under (None: not checked)
    opts: dict[str, Any] = field(default_factory=dict)  # format options, for the file reader and the hub rows
    path_pattern: str = ""  # how listings show where the files live, when that is not the default split's path
    hub_text: str = "prompt"  # request sets: the hub copy's text and category columns
    hub_category: str | None = None

    @property
    def local_path(self) -> str:
        """Where the default split lives under the data dir, as listings show it."""
        if self.path_pattern:
            return self.path_pattern
        local = next(iter(self.splits.values())).local or ""
        return f"(bundled) {local[4:]}" if local.startswith("pkg:") else local

    def split(self, split: str | None = None) -> Split:
        name = split or next(iter(self.splits))
        if name not in self.splits:
            raise UserError(f"benchmark {self.name}: no split '{split}'; it has {', '.join(self.splits)}")
        return self.splits[name]

    def path(self, root: Path | None, split: str | None = None) -> Path | None:
        """The file (or folder) of a split: inside the package, under `root`, or None (hub only / no root)."""
        local = self.split(split).local
        if local is None:
            return None
        if local.startswith("pkg:"):
            return resolve_local(local)
        return None if root is None else Path(root) / local

    def items(self, root: Path | None, split: str | None = None) -> Iterator[tuple[str, Any]]:
        """(where, Question | BadRow) from the split's local file, or from the hub copy when there is no file
        to read (root None, or a hub-only split)."""
        sp = self.split(split)
        path = self.path(root, split)
        if path is None:
            if sp.hub_split is None:
                raise UserError(f"benchmark {self.name}: split '{split}' needs the local data folder (--data-dir)")
            build = F.HUB_BUILDERS[self.format]
            return ((w, _build(build, r, self.opts)) for w, r in hub_rows(self.hub_id, self.hub_config,
                                                                           sp.hub_split))
        return F.FORMATS[self.format](path, sp.hint, **self.opts, **sp.opts)

    def load(self, root: Path | None, skip_bad: bool = False, limit: int | None = None,
             split: str | None = None) -> Rows:
        """A split's questions (first `limit`), bad rows an error or (skip_bad) counted."""
        path = self.path(root, split)
        source = str(path) if path is not None else self.hub_id
        return collect(source, self.items(root, split), skip_bad, limit)


def _build(build, row, opts) -> Any:
    try:
        return build(row, **opts)
    except F.BadRow as e:
        return e


def resolve_local(path: str) -> Path:
    """"pkg:<path>" inside the installed package, else the path as given."""
    if path.startswith("pkg:"):
        return Path(str(files("aloekit").joinpath(path[4:])))
    return Path(path).expanduser()


def load_many(names: Iterable[str], root: Path | None, split: str | None = None, skip_bad: bool = False,
              limit: int | None = None, source: str | None = None) -> Rows:
    """Several benchmarks' split as one list (e.g. the MMLU medical subjects' dev rows), numbered in order."""
    names = list(names)
    chained = (item for n in names for item in REGISTRY[n].items(root, split))
    if source is None:
        first = REGISTRY[names[0]].path(root, split)
        source = str(first.parent) if first is not None else REGISTRY[names[0]].hub_id
    return collect(source, chained, skip_bad, limit)


def read_split(name: str, root: Path | None, split: str | None = None) -> list | None:
    """Every readable item of a split present on disk: `Question`s, bad rows left out, or for a request set its
    `Request`s; None when the split's file is absent (decontamination reports it as not checked)."""
    b = REGISTRY[name]
    path = b.path(root, split)
    if path is None or not path.exists():
        return None
    if b.kind in REQUEST_KINDS:
        from .requests import read_request_set
        return read_request_set(b.format, path, split or next(iter(b.splits)))
    return [q for _, q in b.items(root, split) if isinstance(q, Question)]


def absent(name: str, root: Path | None, split: str | None = None) -> str | None:
    """Why a split cannot be read from local files ("<path> not found", ...), or None when it can. With no root
    (the hub) only a split without a hub copy is absent."""
    b = REGISTRY[name]
    path = b.path(root, split)
    if path is not None:
        return None if path.exists() else f"{path} not found"
    if root is None and b.split(split).hub_split is not None:
        return None
    return "no local file (hub only)" if b.split(split).local is None else "no data folder given"


def register(b: Benchmark) -> Benchmark:
    """Add (or replace) a benchmark; eval, decontamination, pools and dev sets see it at once."""
    REGISTRY[b.name] = b
    return b


def data_root(names: list[str], data_dir: str | None, hub: bool) -> Path | None:
    """The benchmark folder the loaders read (None: the hub). Bundled benchmarks alone need no folder."""
    if hub:
        return None
    return resolve_data_dir(data_dir, required=not all(REGISTRY[n].bundled for n in names))


# ---------------------------------------------------------------- the benchmarks

MMLU_MEDICAL = ["anatomy", "clinical_knowledge", "college_biology", "college_medicine", "medical_genetics",
                "professional_medicine"]
_MMLU_SIZES = {"anatomy": 135, "clinical_knowledge": 265, "college_biology": 144, "college_medicine": 173,
               "medical_genetics": 100, "professional_medicine": 272}
DEMO_EVAL = "resources/demo_eval/mcq.jsonl"

REGISTRY: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("medqa", "MedQA USMLE 4 options (test)", "mcq", "question_jsonl",
              {"test": Split("medqa_usmle_4opt/phrases_no_exclude_test.jsonl", "test",
                             "get the jind11 MedQA 4-option US test file, or pass --hub to load "
                             "GBaker/MedQA-USMLE-4-options")},
              "GBaker/MedQA-USMLE-4-options", full_size=1273, decontam="medqa",
              opts={"answer": "answer_idx", "subject": "meta_info"}),
    Benchmark("medmcqa", "MedMCQA (dev)", "mcq", "medmcqa_jsonl",
              {"test": Split("medmcqa_dev/dev.json", "validation",
                             "get MedMCQA dev.json (JSON Lines), or pass --hub to load openlifescienceai/medmcqa"),
               "train": Split(None, "train")},  # 182k rows, hub only: the Medprompt pool of the Aloe configs
              "openlifescienceai/medmcqa", full_size=4183, decontam="medmcqa"),
    Benchmark("pubmedqa", "PubMedQA PQA-L (500 test ids)", "mcq", "pubmedqa_pqal",
              {"test": Split("pubmedqa_pqal/ori_pqal.json", "test",
                             "get PubMedQA ori_pqal.json and test_ground_truth.json, or pass --hub",
                             {"split": "test"}),
               # the 500 expert-labelled questions outside the test ids: Medprompt pool, merge dev set, SFT source
               "pool": Split("pubmedqa_pqal/ori_pqal.json", None,
                             "get PubMedQA ori_pqal.json and test_ground_truth.json", {"split": "pool"})},
              "bigbio/pubmed_qa", "pubmed_qa_labeled_fold0_source", full_size=500, decontam="pubmedqa"),
    *[Benchmark(f"mmlu_{s}", f"MMLU {s.replace('_', ' ')} (test)", "mcq", "mmlu_csv",
                {"test": Split(f"mmlu_medical/test/{s}_test.csv", "test",
                               "get the hendrycks MMLU test CSVs, or pass --hub to load cais/mmlu"),
                 "dev": Split(f"mmlu_medical/dev/{s}_dev.csv", "dev", "get the hendrycks MMLU dev CSVs")},
                "cais/mmlu", s, full_size=n, decontam="mmlu_medical", opts={"subject": s})
      for s, n in _MMLU_SIZES.items()],
    Benchmark("headqa", "HEAD-QA English (test)", "mcq", "headqa_json",
              {"test": Split("headqa_en/test_HEAD_EN.json", "test",
                             "get HEAD-QA test_HEAD_EN.json, or pass --hub to load EleutherAI/headqa"),
               "train": Split("headqa_en/train_HEAD_EN.json", "train", "get HEAD-QA train_HEAD_EN.json"),
               "dev": Split("headqa_en/dev_HEAD_EN.json", "validation", "get HEAD-QA dev_HEAD_EN.json")},
              "EleutherAI/headqa", "en", full_size=2742, decontam="headqa"),
    # the Spanish original (the exams' own language; Aloe evaluates it too): same JSON layout, same reader, the
    # original distribution's file names; its own decontamination name, as its text shares no n-grams with English
    Benchmark("headqa_es", "HEAD-QA Spanish original (test)", "mcq", "headqa_json",
              {"test": Split("headqa_es/test_HEAD.json", "test",
                             "get HEAD-QA's Spanish test_HEAD.json, or pass --hub to load EleutherAI/headqa (es)"),
               "train": Split("headqa_es/train_HEAD.json", "train", "get HEAD-QA's Spanish train_HEAD.json"),
               "dev": Split("headqa_es/dev_HEAD.json", "validation", "get HEAD-QA's Spanish dev_HEAD.json")},
              "EleutherAI/headqa", "es", full_size=2742, decontam="headqa_es"),
    Benchmark("careqa", "CareQA English (test)", "mcq", "careqa_jsonl",
              {"test": Split("careqa/CareQA_en.jsonl", "test",
                             "export HPAI-BSC/CareQA (CareQA_en, test) as JSON Lines there, or pass --hub")},
              "HPAI-BSC/CareQA", "CareQA_en", full_size=5621, decontam="careqa"),
    *[Benchmark(f"truthfulqa_{mc}", f"TruthfulQA {mc.upper()} (v0)", f"truthfulqa_{mc}", "truthfulqa_mc_json",
                {"test": Split("truthfulqa/v0_817/mc_task.json", "validation",
                               "get TruthfulQA v0 data/mc_task.json, or pass --hub to load truthfulqa/truthful_qa")},
                "truthfulqa/truthful_qa", "multiple_choice", full_size=817, modes=("loglik",), opts={"mc": mc})
      for mc in ("mc1", "mc2")],
    Benchmark("bbq", "BBQ bias benchmark (categories present)", "bbq", "bbq_jsonl",
              {"test": Split("bbq/data", "test")}, "heegyu/bbq", full_size=58492,
              path_pattern="bbq/data/<Category>.jsonl"),
    Benchmark("crows_pairs", "CrowS-Pairs (% stereotype preferred)", "crows", "crows_csv",
              {"test": Split("crows_pairs/crows_pairs_anonymized.csv", "test",
                             "get crows_pairs_anonymized.csv from nyu-mll/crows-pairs, or pass --hub")},
              "nyu-mll/crows_pairs", full_size=1508, delimiter="", modes=("loglik",)),
    Benchmark("aloekit_demo", "aloekit demo set (original, bundled; offline demo)", "mcq", "question_jsonl",
              {"test": Split(f"pkg:{DEMO_EVAL}", None, "the aloekit installation is incomplete; reinstall aloekit")},
              full_size=60, bundled=True, decontam="aloekit_demo", opts={"answer": "answer", "subject": "tags"}),
    # ---- request sets (red teaming; MedSafetyBench also feeds the data stage and decontamination)
    Benchmark("medsafetybench", "MedSafetyBench harmful medical requests (AMA principles)", "requests",
              "medsafetybench_csv", {"test": Split("medsafetybench/test"), "train": Split("medsafetybench/train")},
              full_size=900, decontam="medsafetybench", path_pattern="medsafetybench/{split}"),
    Benchmark("advbench", "AdvBench harmful behaviours", "requests", "advbench_csv",
              {"test": Split("advbench/harmful_behaviors.csv", "train")}, "walledai/AdvBench", full_size=520),
    Benchmark("harmbench", "HarmBench text behaviours", "requests", "harmbench_csv",
              {s: Split(f"harmbench/harmbench_behaviors_text_{s}.csv", "train") for s in ("all", "test", "val")},
              "walledai/HarmBench", "standard", full_size=400, hub_category="category",
              path_pattern="harmbench/harmbench_behaviors_text_{split}.csv"),
    Benchmark("simplesafetytests", "SimpleSafetyTests", "requests", "simplesafetytests_csv",
              {"test": Split("simplesafetytests/SimpleSafetyTests_test_cases.csv", "test")},
              "Bertievidgen/SimpleSafetyTests", full_size=100, hub_category="harm_area"),
    Benchmark("demo_harmful", "aloekit demo harmful requests (bundled; half medical)", "requests", "demo_harmful_jsonl",
              {s: Split("pkg:resources/demo_redteam/harmful.jsonl") for s in ("test", "train", "all")},
              full_size=32, bundled=True),
    Benchmark("xstest", "XSTest v2 (safe prompts must be answered)", "safe_prompts", "xstest_csv",
              {"test": Split("xstest/xstest_prompts.csv", "prompts")}, "natolambert/xstest-v2-copy", full_size=250,
              hub_category="type"),
    Benchmark("demo_safe", "aloekit demo safe look-alikes (bundled)", "safe_prompts", "demo_safe_jsonl",
              {"test": Split("pkg:resources/demo_redteam/safe.jsonl")}, full_size=120, bundled=True),
    # written for aloekit on 2026-12-05 and frozen: held out of every training, tuning and selection step (the safety
    # DPO result is measured on it once); medical questions that sound risky and must be answered
    Benchmark("safe_medical", "aloekit held-out safe medical look-alikes (bundled, frozen)", "safe_prompts",
              "demo_safe_jsonl", {"test": Split("pkg:resources/safety_holdout/safe_medical.jsonl")}, full_size=60,
              bundled=True),
]}

# groups of question benchmarks, as evaluation reports them
GROUPS: dict[str, list[str]] = {
    "mmlu_medical": [f"mmlu_{s}" for s in MMLU_MEDICAL],
    "multimedqa": ["medqa", "medmcqa", "pubmedqa", *[f"mmlu_{s}" for s in MMLU_MEDICAL]],
    # the Aloe Beta paper's medical MCQ set (English): its mean is what the paper reports
    "aloe_medical": ["medqa", "medmcqa", "pubmedqa", *[f"mmlu_{s}" for s in MMLU_MEDICAL], "headqa", "careqa"],
    "principles": ["truthfulqa_mc1", "truthfulqa_mc2", "bbq", "crows_pairs"],
}
# groups scored over the members whose files are present, the others skipped with a note (a user rarely has every
# file of the paper's set); the other groups stop on a missing file, as a task asked for by name does
PARTIAL_GROUPS = {"aloe_medical"}


def question_benchmarks() -> dict[str, Benchmark]:
    return {n: b for n, b in REGISTRY.items() if b.kind in QUESTION_KINDS}


def decontam_benchmarks() -> dict[str, list[str]]:
    """Decontamination name -> the registered benchmarks checked under it, in registry order."""
    out: dict[str, list[str]] = {}
    for n, b in REGISTRY.items():
        if b.decontam:
            out.setdefault(b.decontam, []).append(n)
    return out
