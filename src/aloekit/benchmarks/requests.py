"""Request sets: harmful requests (AdvBench, HarmBench, SimpleSafetyTests, MedSafetyBench, aloekit's demo_harmful)
and safe prompts that must be answered (XSTest, aloekit's demo_safe). One reader per file format; each returns
`Request`s with a stable id, the text, a category and, where the source has one, a reference safe response.

MedSafetyBench is read here for every stage: red teaming (its test split), the data stage (its train split, as
safety SFT records) and decontamination (its test split).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .files import csv_dicts, jsonl_objects

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


@dataclass
class Request:
    id: str
    source: str
    text: str
    category: str
    safe_response: str | None = None
    split: str | None = None
    # where it came from (file, line, the source's own fields): for stages that keep provenance; not serialised
    provenance: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("provenance")
        return d


def need_column(row: dict, name: str, path: Path) -> str:
    if name not in row:
        raise UserError(f"{path}: column '{name}' missing (has {', '.join(map(str, row))}); "
                        "is this the right file for the source?")
    return (row[name] or "").strip()


def read_advbench(path: Path) -> list[Request]:
    return [Request(f"advbench/{i}", "advbench", need_column(r, "goal", path), "advbench")
            for i, r in enumerate(csv_dicts(path))]


def read_harmbench(path: Path, functional: list[str]) -> list[Request]:
    """HarmBench behaviours of the given functional categories (standard; contextual and copyright ones need their
    context string or a hash-based judge)."""
    out = []
    for r in csv_dicts(path):
        if need_column(r, "FunctionalCategory", path) not in functional:
            continue
        out.append(Request(f"harmbench/{need_column(r, 'BehaviorID', path)}", "harmbench",
                           need_column(r, "Behavior", path), need_column(r, "SemanticCategory", path)))
    return out


def read_simplesafetytests(path: Path) -> list[Request]:
    return [Request(f"sst/{need_column(r, 'id', path)}", "simplesafetytests", need_column(r, "prompts_final", path),
                    need_column(r, "harm_area", path)) for r in csv_dicts(path)]


def _category(p: Path) -> int:
    return int(re.search(r"category_(\d+)", p.name).group(1))


def read_medsafetybench(folder: Path, split: str, generators: list[str] | None = None) -> list[Request]:
    """A split folder of {gpt4,llama2}/med_safety_demonstrations_category_N.csv (`generators`: which ones;
    None: every generator folder present). Every row, in generator then category order; rows with an empty
    request included (a consumer drops them)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: MedSafetyBench split folder not found; expected <root>/{{train,test}}/"
                        "{gpt4,llama2}/med_safety_demonstrations_category_N.csv")
    if generators is None:
        generators = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*category_*.csv")))
        if not generators:
            raise UserError(f"{folder}: no <generator>/med_safety_demonstrations_category_N.csv files")
    out = []
    for gen in generators:
        files = sorted((folder / gen).glob("*category_*.csv"), key=_category)
        if not files:
            raise UserError(f"{folder / gen}: no med_safety_demonstrations_category_N.csv files; "
                            f"check medsafetybench generators (have {[p.name for p in folder.iterdir()]})")
        for p in files:
            cat = _category(p)
            for k, r in enumerate(csv_dicts(p)):
                text = need_column(r, "harmful_medical_request", p)
                safe = need_column(r, "safe_response", p) if "safe_response" in r else ""
                out.append(Request(f"medsafetybench/{split}/{gen}/c{cat}/{k}", "medsafetybench", text,
                                   AMA_PRINCIPLES.get(cat, f"category_{cat}"), safe_response=safe or None, split=split,
                                   provenance={"file": str(p), "row": k, "generator": gen, "category": str(cat)}))
    return out


def _field(row: dict, name: str, path: Path, n: int) -> str:
    value = str(row.get(name) or "").strip()
    if not value:
        raise UserError(f"{path}:{n}: no '{name}' (has {', '.join(row)}); each row needs {name}")
    return value


def read_request_jsonl(path: Path, text_field: str, category_field: str | None) -> list[Request]:
    """A user's JSONL of requests: the text under `text_field`, optional category and safe_response."""
    out = []
    for n, row in jsonl_objects(path):
        if not str(row.get(text_field) or "").strip():
            raise UserError(f"{path}:{n}: no '{text_field}' text; set text_field to the request's key")
        out.append(Request(f"{path.stem}/{row.get('id', n)}", path.stem, str(row[text_field]).strip(),
                           str(row.get(category_field, "uncategorized")) if category_field else "uncategorized",
                           safe_response=row.get("safe_response")))
    return out


def read_demo_harmful(path: Path, split: str) -> list[Request]:
    """The bundled set's format: id, text, category, safe_response, split (train|test). A row keeps its own
    split under 'all', so pairs.exclude_splits still keeps test requests out of training pairs."""
    out, ids = [], set()
    for n, row in jsonl_objects(path):
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


def read_demo_safe(path: Path, name: str = "demo_safe") -> list[Request]:
    """Bundled XSTest-style safe prompts (JSONL: id, text, type; all safe): demo_safe, safe_medical."""
    out = [Request(f"{name}/{_field(r, 'id', path, n)}", name, _field(r, "text", path, n),
                   _field(r, "type", path, n)) for n, r in jsonl_objects(path)]
    if not out:
        raise UserError(f"{path}: no safe prompts")
    return out


def read_xstest(path: Path, label: str = "safe") -> list[Request]:
    """XSTest v2 prompts of one label ('safe' prompts must be answered; refusing them is over-refusal)."""
    out = [Request(f"xstest/{need_column(r, 'id', path)}", "xstest", need_column(r, "prompt", path),
                   need_column(r, "type", path)) for r in csv_dicts(path) if need_column(r, "label", path) == label]
    if not out:
        raise UserError(f"{path}: no XSTest prompts with label '{label}'")
    return out


def hub_requests(name: str, hub_id: str, config: str | None, split: str, text_f: str, cat_f: str | None
                 ) -> list[Request]:
    """A request set's hub copy: the text under `text_f`, the category under `cat_f`."""
    try:
        import datasets
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # offline, gated, or a wrong id all surface here
        raise UserError(f"source {name}: cannot load hub dataset '{hub_id}' ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:150]}); use the local files (drop 'hub') or check the id") from None
    if text_f not in ds.column_names:
        raise UserError(f"source {name}: hub dataset '{hub_id}' has no column '{text_f}' "
                        f"(has {', '.join(ds.column_names)}); set text_field")
    return [Request(f"{name}/hub/{i}", name, str(row[text_f]).strip(),
                    str(row.get(cat_f) or name) if cat_f else name, safe_response=row.get("safe_response"))
            for i, row in enumerate(ds)]


def hub_xstest(hub_id: str, split: str, label: str) -> list[Request]:
    try:
        import datasets
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as e:
        raise UserError(f"xstest: cannot load hub dataset '{hub_id}' ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:150]}); use the local CSV (drop xstest.hub)") from None
    if "prompt" not in ds.column_names or "type" not in ds.column_names:
        raise UserError(f"xstest: hub dataset '{hub_id}' lacks 'prompt'/'type' columns (has {ds.column_names})")
    # safe prompts: label == 'safe' where the copy has labels, else every type but the 'contrast_' ones
    keep = (lambda row: row["label"] == label) if "label" in ds.column_names else \
        (lambda row: row["type"].startswith("contrast_") == (label != "safe"))
    return [Request(f"xstest/hub/{i}", "xstest", str(row["prompt"]).strip(), str(row["type"]))
            for i, row in enumerate(ds) if keep(row)]


# the request-set formats, by name (the registry's `format`): (path, split, options) -> requests
REQUEST_FORMATS = {
    "advbench_csv": lambda path, split, **o: read_advbench(path),
    "harmbench_csv": lambda path, split, functional=("standard",), **o: read_harmbench(path, list(functional)),
    "simplesafetytests_csv": lambda path, split, **o: read_simplesafetytests(path),
    "medsafetybench_csv": lambda path, split, generators=None, **o: read_medsafetybench(path, split, generators),
    "demo_harmful_jsonl": lambda path, split, **o: read_demo_harmful(path, split),
    "xstest_csv": lambda path, split, label="safe", **o: read_xstest(path, label),
    "demo_safe_jsonl": lambda path, split, name="demo_safe", **o: read_demo_safe(path, name),
    "request_jsonl": lambda path, split, text_field="prompt", category_field=None, **o:
        read_request_jsonl(path, text_field, category_field),
}


def read_request_set(fmt: str, path: Path, split: str, **opts) -> list[Request]:
    return REQUEST_FORMATS[fmt](path, split, **opts)
