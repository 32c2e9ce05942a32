"""Harmful request sets (AdvBench, HarmBench, SimpleSafetyTests, MedSafetyBench) and XSTest's safe prompts,
plus the small sets written for aloekit and shipped in the package (demo_harmful, demo_safe) for runs without
the shared data folder.

Each loader reads the source's own file format (as downloaded from its repository) or its hub copy, and
returns `Request`s with a stable id, the request text, a category and, where the source has one, a reference
safe response (MedSafetyBench, demo_harmful), which becomes the chosen side of a safety DPO pair.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..config import StrictModel
from ..errors import UserError
from ..io import read_text_utf8

SOURCES = ("advbench", "harmbench", "simplesafetytests", "medsafetybench", "jsonl", "demo_harmful")

# Sets written for aloekit (Apache-2.0) inside the package: the offline demo red-teams without ../shared/data.
# "pkg:" paths are resolved inside the installed package, as in the data stage's registry.
BUNDLED = {
    "demo_harmful": "pkg:resources/demo_redteam/harmful.jsonl",  # 64 requests, half medical, train/test splits
    "demo_safe": "pkg:resources/demo_redteam/safe.jsonl",        # 120 XSTest-style safe look-alikes
}

# Sources with splits: the accepted values, the first one being the default. demo_harmful defaults to test,
# like MedSafetyBench, so a config that forgets the split never turns evaluation requests into training pairs.
SPLITS = {
    "harmbench": ("all", "test", "val"),
    "medsafetybench": ("test", "train"),
    "demo_harmful": ("test", "train", "all"),
}

# MedSafetyBench groups requests by the nine principles of the AMA Code of Medical Ethics.
AMA_PRINCIPLES = {
    1: "ama1_competent_compassionate_care",
    2: "ama2_professionalism_honesty",
    3: "ama3_respect_the_law",
    4: "ama4_patient_rights_confidentiality",
    5: "ama5_scientific_knowledge",
    6: "ama6_choice_of_patients_environment",
    7: "ama7_community_public_health",
    8: "ama8_responsibility_to_patient",
    9: "ama9_access_to_care",
}

# Where each source lives in the shared data layout, and its usual hub copy.
LOCAL_PATHS = {
    "advbench": "advbench/harmful_behaviors.csv",
    "harmbench": "harmbench/harmbench_behaviors_text_{split}.csv",
    "simplesafetytests": "simplesafetytests/SimpleSafetyTests_test_cases.csv",
    "medsafetybench": "medsafetybench/{split}",
    "xstest": "xstest/xstest_prompts.csv",
}
HUB_DEFAULTS = {  # (dataset id, config, split, text field, category field)
    "advbench": ("walledai/AdvBench", None, "train", "prompt", None),
    "harmbench": ("walledai/HarmBench", "standard", "train", "prompt", "category"),
    "simplesafetytests": ("Bertievidgen/SimpleSafetyTests", None, "test", "prompt", "harm_area"),
    "xstest": ("natolambert/xstest-v2-copy", None, "prompts", "prompt", "type"),
}


@dataclass
class Request:
    id: str
    source: str
    text: str
    category: str
    safe_response: str | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class SourceConfig(StrictModel):
    """One request set. Local files are read from `path` (default: the shared data layout); `hub` loads the
    hub copy with `datasets` instead."""

    name: Literal["advbench", "harmbench", "simplesafetytests", "medsafetybench", "jsonl", "demo_harmful"]
    split: str | None = Field(None, description="harmbench: all|test|val; medsafetybench: train|test; "
                                                "demo_harmful: train|test|all")
    path: str | None = None
    hub: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    text_field: str | None = None
    category_field: str | None = None
    limit: int | None = Field(None, ge=1, description="keep a seeded sample of this many requests")
    # HarmBench's contextual/copyright behaviours need their context string or a hash-based judge.
    functional_categories: list[str] = Field(default_factory=lambda: ["standard"])
    # MedSafetyBench ships requests from two generators (gpt4, llama2); both by default.
    generators: list[str] = Field(default_factory=lambda: ["gpt4", "llama2"])


def resolve(path: str) -> Path:
    """A user path, or "pkg:<path inside the aloekit package>" for the bundled sets."""
    if path.startswith("pkg:"):
        return Path(str(files("aloekit").joinpath(path[4:])))
    return Path(path).expanduser()


def source_split(src: SourceConfig) -> str | None:
    """The split a source reads (its default if unset); None for sources without splits."""
    if src.name not in SPLITS:
        return None
    options = SPLITS[src.name]
    split = src.split or options[0]
    if split not in options:
        names = sorted(options)
        raise UserError(f"source {src.name}: split '{split}' unknown; use {', '.join(names[:-1])} or {names[-1]}")
    return split


def local_path(src: SourceConfig, root: Path | None) -> Path:
    """The file (MedSafetyBench: the split folder) a local source reads: its `path`, the bundled file, or its
    place in the shared data layout."""
    split = source_split(src)
    if src.name == "jsonl" and not src.path:
        raise UserError("source jsonl: set path to a JSONL file of requests")
    if src.path or src.name in BUNDLED:
        path = resolve(src.path or BUNDLED[src.name])
        return path / split if src.name == "medsafetybench" else path
    if root is None:
        raise UserError(f"source {src.name}: no path and no data directory; set path or --data-dir")
    if src.name == "medsafetybench":
        return root / "medsafetybench" / split
    return root / LOCAL_PATHS[src.name].format(split=split)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the source's path or --data-dir")
    return list(csv.DictReader(io.StringIO(read_text_utf8(path, newline=""), newline="")))


def _need(row: dict, field: str, path: Path) -> str:
    if field not in row:
        raise UserError(f"{path}: column '{field}' missing (has {', '.join(map(str, row))}); "
                        "is this the right file for the source?")
    return (row[field] or "").strip()


def _advbench(path: Path) -> list[Request]:
    return [Request(f"advbench/{i}", "advbench", _need(r, "goal", path), "advbench")
            for i, r in enumerate(_read_csv(path))]


def _harmbench(path: Path, functional: list[str]) -> list[Request]:
    out = []
    for r in _read_csv(path):
        if _need(r, "FunctionalCategory", path) not in functional:
            continue
        out.append(Request(f"harmbench/{_need(r, 'BehaviorID', path)}", "harmbench", _need(r, "Behavior", path),
                           _need(r, "SemanticCategory", path)))
    return out


def _simplesafetytests(path: Path) -> list[Request]:
    return [Request(f"sst/{_need(r, 'id', path)}", "simplesafetytests", _need(r, "prompts_final", path),
                    _need(r, "harm_area", path)) for r in _read_csv(path)]


def _medsafetybench(folder: Path, split: str, generators: list[str]) -> list[Request]:
    if not folder.is_dir():
        raise UserError(f"{folder}: MedSafetyBench split folder not found; expected <root>/{{train,test}}/"
                        "{gpt4,llama2}/med_safety_demonstrations_category_N.csv")
    out = []
    for gen in generators:
        files = sorted((folder / gen).glob("*category_*.csv"),
                       key=lambda p: int(re.search(r"category_(\d+)", p.name).group(1)))
        if not files:
            raise UserError(f"{folder / gen}: no med_safety_demonstrations_category_N.csv files; "
                            f"check medsafetybench generators (have {[p.name for p in folder.iterdir()]})")
        for p in files:
            cat = int(re.search(r"category_(\d+)", p.name).group(1))
            for k, r in enumerate(_read_csv(p)):
                text = _need(r, "harmful_medical_request", p)
                if text:
                    out.append(Request(f"medsafetybench/{split}/{gen}/c{cat}/{k}", "medsafetybench", text,
                                       AMA_PRINCIPLES.get(cat, f"category_{cat}"),
                                       safe_response=(r.get("safe_response") or "").strip() or None, split=split))
    return out


def _jsonl_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    out = []
    for n, line in enumerate(read_text_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: invalid JSON ({e.msg}); one JSON object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected a JSON object per line")
        out.append((n, row))
    return out


def _field(row: dict, field: str, path: Path, n: int) -> str:
    value = str(row.get(field) or "").strip()
    if not value:
        raise UserError(f"{path}:{n}: no '{field}' (has {', '.join(row)}); each row needs {field}")
    return value


def _jsonl(path: Path, text_field: str, category_field: str | None) -> list[Request]:
    out = []
    for n, row in _jsonl_rows(path):
        if not str(row.get(text_field) or "").strip():
            raise UserError(f"{path}:{n}: no '{text_field}' text; set text_field to the request's key")
        out.append(Request(f"{path.stem}/{row.get('id', n)}", path.stem, str(row[text_field]).strip(),
                           str(row.get(category_field, "uncategorized")) if category_field else "uncategorized",
                           safe_response=row.get("safe_response")))
    return out


def _demo_harmful(path: Path, split: str) -> list[Request]:
    """The bundled set's format: id, text, category, safe_response, split (train|test). A row keeps its own
    split under 'all', so pairs.exclude_splits still keeps test requests out of training pairs."""
    out, ids = [], set()
    for n, row in _jsonl_rows(path):
        rid, row_split = _field(row, "id", path, n), _field(row, "split", path, n)
        if row_split not in ("train", "test"):
            raise UserError(f"{path}:{n}: split '{row_split}' unknown; each row is train or test")
        if rid in ids:
            raise UserError(f"{path}:{n}: duplicate id '{rid}'; ids must be unique")
        ids.add(rid)
        if split in ("all", row_split):
            out.append(Request(f"demo_harmful/{rid}", "demo_harmful", _field(row, "text", path, n),
                               _field(row, "category", path, n), safe_response=_field(row, "safe_response", path, n),
                               split=row_split))
    return out


def _hub(src: SourceConfig) -> list[Request]:
    hub_id, conf, split, text_f, cat_f = HUB_DEFAULTS.get(src.name, (None, None, "train", "prompt", None))
    hub_id, conf = src.hub or hub_id, src.hub_config or conf
    split, text_f, cat_f = src.hub_split or split, src.text_field or text_f, src.category_field or cat_f
    try:
        import datasets
        ds = datasets.load_dataset(hub_id, conf, split=split)
    except Exception as e:  # offline, gated, or a wrong id all surface here
        raise UserError(f"source {src.name}: cannot load hub dataset '{hub_id}' ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:150]}); use the local files (drop 'hub') or check the id") from None
    if text_f not in ds.column_names:
        raise UserError(f"source {src.name}: hub dataset '{hub_id}' has no column '{text_f}' "
                        f"(has {', '.join(ds.column_names)}); set text_field")
    out = []
    for i, row in enumerate(ds):
        out.append(Request(f"{src.name}/hub/{i}", src.name, str(row[text_f]).strip(),
                           str(row.get(cat_f) or src.name) if cat_f else src.name,
                           safe_response=row.get("safe_response")))
    return out


def load_source(src: SourceConfig, data_root: Path | None) -> list[Request]:
    """All requests of one source (before any sampling)."""
    if src.hub:
        if src.name in BUNDLED:
            raise UserError(f"source {src.name}: ships with aloekit; drop 'hub'")
        reqs = _hub(src)
    else:
        path, split = local_path(src, data_root), source_split(src)
        if src.name == "harmbench":
            reqs = _harmbench(path, src.functional_categories)
        elif src.name == "medsafetybench":
            reqs = _medsafetybench(path, split, src.generators)
        elif src.name == "demo_harmful":
            reqs = _demo_harmful(path, split)
        elif src.name == "jsonl":
            reqs = _jsonl(path, src.text_field or "prompt", src.category_field)
        else:
            reqs = _advbench(path) if src.name == "advbench" else _simplesafetytests(path)
    reqs = [r for r in reqs if r.text]
    if not reqs:
        raise UserError(f"source {src.name}: no requests found (empty file or every row filtered out); "
                        "check the path, split and filters")
    return reqs


def xstest_path(data_root: Path | None, path: str | None = None, source: str = "xstest") -> Path:
    """The file the safe prompts come from: `path`, the bundled demo_safe set, or XSTest in the data dir."""
    if path or source == "demo_safe":
        return resolve(path or BUNDLED["demo_safe"])
    if data_root is None:
        raise UserError("xstest: no path and no data directory; set xstest.path, --data-dir, "
                        "or xstest.source=demo_safe for the bundled safe prompts")
    return data_root / LOCAL_PATHS["xstest"]


def load_xstest(data_root: Path | None, path: str | None = None, hub: str | None = None,
                label: str = "safe", source: str = "xstest") -> list[Request]:
    """XSTest prompts of one label ('safe' prompts must be answered; refusing them is over-refusal), or with
    source='demo_safe' the bundled XSTest-style safe prompts (JSONL: id, text, type; all safe)."""
    if source not in ("xstest", "demo_safe"):
        raise UserError(f"xstest.source: '{source}' unknown; use xstest or demo_safe")
    if source == "demo_safe":
        if hub:
            raise UserError("xstest: source demo_safe ships with aloekit; drop xstest.hub")
        if label != "safe":
            raise UserError(f"xstest: demo_safe has safe prompts only, not '{label}'")
        p = xstest_path(data_root, path, source)
        out = [Request(f"demo_safe/{_field(r, 'id', p, n)}", "demo_safe", _field(r, "text", p, n),
                       _field(r, "type", p, n)) for n, r in _jsonl_rows(p)]
        if not out:
            raise UserError(f"{p}: no safe prompts")
        return out
    if hub:
        try:
            import datasets
            ds = datasets.load_dataset(hub, split=HUB_DEFAULTS["xstest"][2] if hub == HUB_DEFAULTS["xstest"][0]
                                       else "train")
        except Exception as e:
            raise UserError(f"xstest: cannot load hub dataset '{hub}' ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:150]}); use the local CSV (drop xstest.hub)") from None
        if "prompt" not in ds.column_names or "type" not in ds.column_names:
            raise UserError(f"xstest: hub dataset '{hub}' lacks 'prompt'/'type' columns (has {ds.column_names})")
        # safe prompts: label == 'safe' where the copy has labels, else every type but the 'contrast_' ones
        keep = (lambda row: row["label"] == label) if "label" in ds.column_names else \
            (lambda row: row["type"].startswith("contrast_") == (label != "safe"))
        return [Request(f"xstest/hub/{i}", "xstest", str(row["prompt"]).strip(), str(row["type"]))
                for i, row in enumerate(ds) if keep(row)]
    p = xstest_path(data_root, path, source)
    out = [Request(f"xstest/{_need(r, 'id', p)}", "xstest", _need(r, "prompt", p), _need(r, "type", p))
           for r in _read_csv(p) if _need(r, "label", p) == label]
    if not out:
        raise UserError(f"{p}: no XSTest prompts with label '{label}'")
    return out
