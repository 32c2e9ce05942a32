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
BUNDLED = {n: REGISTRY[n].split().local for n in ("demo_harmful", "demo_safe")}

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
        return R.read_demo_safe(xstest_path(data_root, path, source))
    if hub:
        default_id, _, default_split, _, _ = HUB_DEFAULTS["xstest"]
        return R.hub_xstest(hub, default_split if hub == default_id else "train", label)
    return R.read_xstest(xstest_path(data_root, path, source), label)
