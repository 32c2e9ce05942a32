"""Harmful request sets (AdvBench, HarmBench, SimpleSafetyTests, MedSafetyBench) and XSTest's safe prompts,
plus the small sets written for aloekit and shipped in the package (demo_harmful, demo_safe) for runs without
the shared data folder.

Where each set lives, its splits and its hub copy come from the benchmark registry (aloekit.benchmarks), and
its file format is read by the benchmark layer's reader (aloekit.benchmarks.requests), which returns `Request`s
with a stable id, the request text, a category and, where the source has one, a reference safe response
(MedSafetyBench, demo_harmful), which becomes the chosen side of a safety DPO pair. This module holds the
red-team stage's source config and picks the file a config names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..benchmarks import REGISTRY, resolve_local
from ..benchmarks import requests as R
from ..benchmarks.files import jsonl_objects
from ..benchmarks.requests import AMA_PRINCIPLES, Request
from ..config import StrictModel
from ..errors import UserError

__all__ = ["AMA_PRINCIPLES", "BUNDLED", "HUB_DEFAULTS", "LOCAL_PATHS", "SOURCES", "SPLITS", "Request",
           "SourceConfig", "load_source", "load_xstest", "local_path", "resolve", "source_split", "xstest_path"]

SOURCES = ("advbench", "harmbench", "simplesafetytests", "medsafetybench", "jsonl", "demo_harmful")

# Sets written for aloekit (Apache-2.0) inside the package: the offline demo red-teams without ../shared/data.
# "pkg:" paths are resolved inside the installed package, as in the data stage's registry.
BUNDLED = {n: REGISTRY[n].split().local for n in ("demo_harmful", "demo_safe", "safe_medical")}
# safe-prompt sets written for aloekit (JSONL: id, text, type): demo_safe for the demo, safe_medical held out
BUNDLED_SAFE = ("demo_safe", "safe_medical")

# Sources with splits: the accepted values, the first one being the default. demo_harmful defaults to test,
# like MedSafetyBench, so a config that forgets the split never turns evaluation requests into training pairs.
SPLITS = {n: tuple(REGISTRY[n].splits) for n in ("harmbench", "medsafetybench", "demo_harmful")}

# Where each source lives in the shared data layout, and its usual hub copy.
LOCAL_PATHS = {n: REGISTRY[n].local_path for n in ("advbench", "harmbench", "simplesafetytests", "medsafetybench",
                                                    "xstest")}
HUB_DEFAULTS = {  # (dataset id, config, split, text field, category field)
    n: (REGISTRY[n].hub_id, REGISTRY[n].hub_config, REGISTRY[n].split().hub_split, REGISTRY[n].hub_text,
        REGISTRY[n].hub_category) for n in ("advbench", "harmbench", "simplesafetytests", "xstest")}

_jsonl_rows = jsonl_objects  # (line number, object) of a JSONL file: redteam.run reads retain prompts with it


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
    ids_file: str | None = Field(None, description="a frozen request list (JSON {requests: [{id, sha256}]}, e.g. "
                                 "pkg:resources/safety_holdout/requests.json): keep only the listed requests; a "
                                 "listed id that is missing or whose text changed is an error")


def resolve(path: str) -> Path:
    """A user path, or "pkg:<path inside the aloekit package>" for the bundled sets."""
    return resolve_local(path)


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


def load_source(src: SourceConfig, data_root: Path | None) -> list[Request]:
    """All requests of one source (before any sampling)."""
    if src.hub:
        if src.name in BUNDLED:
            raise UserError(f"source {src.name}: ships with aloekit; drop 'hub'")
        hub_id, conf, split, text_f, cat_f = HUB_DEFAULTS.get(src.name, (None, None, "train", "prompt", None))
        reqs = R.hub_requests(src.name, src.hub or hub_id, src.hub_config or conf, src.hub_split or split,
                              src.text_field or text_f, src.category_field or cat_f)
    else:
        path, split = local_path(src, data_root), source_split(src)
        if src.name == "jsonl":
            reqs = R.read_request_jsonl(path, src.text_field or "prompt", src.category_field)
        else:
            reqs = R.read_request_set(REGISTRY[src.name].format, path, split, functional=src.functional_categories,
                                      generators=src.generators)
    reqs = [r for r in reqs if r.text]
    if src.ids_file:
        reqs = keep_frozen(reqs, src.ids_file, src.name)
    if not reqs:
        raise UserError(f"source {src.name}: no requests found (empty file or every row filtered out); "
                        "check the path, split and filters")
    return reqs


def text_sha256(text: str) -> str:
    import hashlib
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()


def keep_frozen(reqs: list[Request], ids_file: str, name: str) -> list[Request]:
    """The requests a frozen list names, checked against their recorded text hashes: a held-out split must be
    exactly the one frozen, or the run stops (a changed file silently changes what "held out" means)."""
    import json
    path = resolve(ids_file)
    try:
        listed = {e["id"]: e["sha256"] for e in json.loads(path.read_text(encoding="utf-8"))["requests"]
                  if e["id"].split("/")[0] == reqs[0].id.split("/")[0]} if reqs else {}
    except FileNotFoundError:
        raise UserError(f"{path}: ids_file not found; check the path") from None
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a frozen request list ({e}); expected JSON {{requests: [{{id, sha256}}]}}"
                        ) from None
    by_id = {r.id: r for r in reqs}
    missing = [i for i in listed if i not in by_id]
    changed = [i for i in listed if i in by_id and text_sha256(by_id[i].text) != listed[i]]
    if missing or changed:
        bad = (missing or changed)[0]
        raise UserError(f"source {name}: {len(missing)} frozen request(s) missing and {len(changed)} changed in the "
                        f"data (first: {bad}) against {path.name}; use the data version it was frozen on")
    return [r for r in reqs if r.id in listed]


def xstest_path(data_root: Path | None, path: str | None = None, source: str = "xstest") -> Path:
    """The file the safe prompts come from: `path`, the bundled demo_safe set, or XSTest in the data dir."""
    if path or source in BUNDLED_SAFE:
        return resolve(path or BUNDLED[source])
    if data_root is None:
        raise UserError("xstest: no path and no data directory; set xstest.path, --data-dir, "
                        "or xstest.source=demo_safe for the bundled safe prompts")
    return data_root / LOCAL_PATHS["xstest"]


def load_xstest(data_root: Path | None, path: str | None = None, hub: str | None = None,
                label: str = "safe", source: str = "xstest") -> list[Request]:
    """XSTest prompts of one label ('safe' prompts must be answered; refusing them is over-refusal), or with
    source='demo_safe' the bundled XSTest-style safe prompts (JSONL: id, text, type; all safe)."""
    if source not in ("xstest", *BUNDLED_SAFE):
        raise UserError(f"xstest.source: '{source}' unknown; use xstest, demo_safe or safe_medical")
    if source in BUNDLED_SAFE:
        if hub:
            raise UserError(f"xstest: source {source} ships with aloekit; drop xstest.hub")
        if label != "safe":
            raise UserError(f"xstest: {source} has safe prompts only, not '{label}'")
        return R.read_demo_safe(xstest_path(data_root, path, source), source)
    if hub:
        default_id, _, default_split, _, _ = HUB_DEFAULTS["xstest"]
        return R.hub_xstest(hub, default_split if hub == default_id else "train", label)
    return R.read_xstest(xstest_path(data_root, path, source), label)
