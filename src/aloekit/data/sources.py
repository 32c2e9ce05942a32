"""The registry of named sources, and loading any source (registered, local file, or hub) into Records.

A registered name carries where the data lives locally (relative to the shared data folder, or inside the
package for the demo corpus), the hub dataset a user without that folder would load instead, its license,
and which reader understands its original format. A benchmark's training split (HEAD-QA train, the PubMedQA
pool, ...) takes its location from the benchmark registry (aloekit.benchmarks) and is read by its reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Optional

from pydantic import Field

from ..benchmarks import REGISTRY as BENCHMARKS
from ..benchmarks import resolve_local as _resolve_pkg
from ..config import StrictModel
from ..errors import UserError
from ..paths import data_dir as _data_dir
from .readers import LOCAL_READERS, BadRows, map_row, read_generic
from .records import KINDS, Record


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    license: str
    description: str
    reader: str | None = None  # key of LOCAL_READERS
    local: str | None = None  # relative to the data dir, or "pkg:<resource path>"
    reader_args: dict[str, Any] = field(default_factory=dict)
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_fields: dict[str, Any] = field(default_factory=dict)
    general: bool = False  # general-domain data (counts toward mixture.general_fraction)


def _bench(name: str, split: str) -> str | None:
    """Where a registered benchmark's split lives (the benchmark registry is the one list of those files)."""
    return BENCHMARKS[name].split(split).local


def _demo(name: str, kind: str, what: str) -> SourceSpec:
    return SourceSpec(f"demo_{name}", kind, "Apache-2.0 (aloekit, original)", what, reader="canonical",
                      local=f"pkg:resources/demo_corpus/{name}.jsonl")


REGISTRY: dict[str, SourceSpec] = {s.name: s for s in [
    SourceSpec("headqa_train", "mcq", "MIT (+ Spanish Ministry of Health reuse terms)",
               "HEAD-QA English train (5 options)", reader="headqa", local=_bench("headqa", "train"),
               hub_id="head_qa", hub_config="en", hub_split="train",
               hub_fields={"question": "qtext", "options": "answers.atext", "answer": "ra"}),
    SourceSpec("headqa_dev", "mcq", "MIT (+ Spanish Ministry of Health reuse terms)", "HEAD-QA English dev",
               reader="headqa", local=_bench("headqa", "dev"), hub_id="head_qa", hub_config="en",
               hub_split="validation"),
    SourceSpec("pubmedqa_pool", "mcq", "MIT", "PubMedQA PQA-L non-test pool (500 expert-labelled)",
               reader="pubmedqa", local=_bench("pubmedqa", "pool"), reader_args={"split": "pool"},
               hub_id="qiaojin/PubMedQA", hub_config="pqa_labeled"),
    SourceSpec("medmcqa_dev", "mcq", "MIT", "MedMCQA validation (a registered BENCHMARK: decontam removes it)",
               reader="medmcqa", local=_bench("medmcqa", "test"), hub_id="openlifescienceai/medmcqa",
               hub_split="validation"),
    SourceSpec("medmcqa_train", "mcq", "MIT", "MedMCQA train (182k; hub only)",
               hub_id="openlifescienceai/medmcqa", hub_split="train",
               hub_fields={"question": "question", "options": ["opa", "opb", "opc", "opd"], "answer": "cop",
                           "explanation": "exp", "answer_base": 0}),
    SourceSpec("medqa_train", "mcq", "MIT", "MedQA-USMLE 4 options train (hub only)",
               hub_id="GBaker/MedQA-USMLE-4-options", hub_split="train",
               hub_fields={"question": "question", "options": "options", "answer": "answer_idx"}),
    SourceSpec("mmlu_medical_dev", "mcq", "MIT", "MMLU medical subjects, dev (5 per subject)", reader="mmlu",
               local=str(Path(_bench("mmlu_anatomy", "dev")).parent)),
    SourceSpec("medsafetybench_train", "qa", "MIT (research use only)",
               "MedSafetyBench train: harmful medical requests with safe responses", reader="medsafetybench",
               local=_bench("medsafetybench", "train")),
    SourceSpec("hh_rlhf_harmless", "preference", "MIT", "Anthropic HH-RLHF harmless-base (the staged test file)",
               reader="hh_rlhf", local="hh_rlhf_harmless_base_test/test.jsonl.gz", hub_id="Anthropic/hh-rlhf"),
    SourceSpec("medquad", "qa", "CC-BY-4.0", "MedQuAD consumer health QA (Aloe Beta collection; hub only)",
               hub_id="keivalya/MedQuad-MedicalQnADataset", hub_fields={"question": "Question", "answer": "Answer"}),
    SourceSpec("wiki_medical_terms", "qa", "GPL-3.0", "Wikipedia medical terms (Aloe Beta collection; hub only)",
               hub_id="gamino/wiki_medical_terms", hub_fields={"question": "page_title", "answer": "page_text"}),
    # general-domain instruction data: Aloe Beta mixes ~20% of it into SFT so the model keeps its general skills
    SourceSpec("smoltalk", "chat", "Apache-2.0",
               "SmolTalk general chat and instruction following, all subsets (general domain; hub only)",
               hub_id="HuggingFaceTB/smoltalk", hub_config="all", hub_fields={"messages": "messages"}, general=True),
    SourceSpec("metamathqa", "qa", "MIT", "MetaMathQA math word problems with worked solutions (general domain; "
               "hub only)", hub_id="meta-math/MetaMathQA", hub_fields={"question": "query", "answer": "response"},
               general=True),
    _demo("mcq", "mcq", "aloekit demo: medical MCQs with explanations"),
    _demo("qa", "qa", "aloekit demo: medical QA pairs"),
    _demo("preference", "preference", "aloekit demo: preference pairs"),
    _demo("safety", "qa", "aloekit demo: harmful medical requests with safe responses"),
    _demo("benign", "qa", "aloekit demo: benign look-alikes of harmful requests, answered helpfully"),
]}


class SourceConfig(StrictModel):
    """One entry of `sources:` in data.yaml. A registered `name` needs nothing else; a custom source names
    a file (`path`, format from its extension) or a hub dataset (`hub_id`), its `kind` and a `fields` map."""

    name: str
    path: Optional[str] = None
    hub_id: Optional[str] = None
    hub_config: Optional[str] = None
    split: Optional[str] = None
    kind: Optional[Literal["mcq", "qa", "chat", "preference"]] = None
    fields: dict[str, Any] = Field(default_factory=dict)
    license: Optional[str] = None
    weight: float = Field(1.0, ge=0.0)  # <1 subsamples, >1 repeats (rounded, seeded)
    max_rows: Optional[int] = Field(None, ge=1)
    general: Optional[bool] = None
    tags: list[str] = Field(default_factory=list)


def resolve_local(spec_path: str, data_dir: str | None) -> Path:
    if spec_path.startswith("pkg:"):
        return _resolve_pkg(spec_path)
    return _data_dir(data_dir) / spec_path


def source_license(sc: SourceConfig) -> str:
    spec = REGISTRY.get(sc.name)
    return sc.license or (spec.license if spec else "unknown (set license: in the source config)")


def is_general(sc: SourceConfig) -> bool:
    spec = REGISTRY.get(sc.name)
    return sc.general if sc.general is not None else bool(spec and spec.general)


def load_source(sc: SourceConfig, data_dir: str | None, bad: BadRows) -> Iterator[Record]:
    spec = REGISTRY.get(sc.name)
    lic = source_license(sc)
    if sc.path or (sc.hub_id and not spec):
        kind = sc.kind or (spec.kind if spec else None)
        if kind not in KINDS:
            raise UserError(f"source '{sc.name}': set kind: mcq | qa | chat | preference")
        if not sc.fields and not spec:
            raise UserError(f"source '{sc.name}': a custom source needs a 'fields' map, e.g. "
                            "{question: q, answer: a}")
        fields = sc.fields or (spec.hub_fields if spec else {})
        if sc.path:
            path = Path(sc.path).expanduser()
            if spec and spec.reader and not sc.fields:  # a registered format at a user's own location
                yield from _tag(LOCAL_READERS[spec.reader](path, sc.name, lic, bad, **spec.reader_args), sc)
            else:
                yield from _tag(read_generic(path, sc.name, kind, fields, lic, bad), sc)
        else:
            yield from _tag(_read_hub(sc.hub_id, sc.hub_config, sc.split or "train", kind, fields, sc.name, lic),
                            sc)
        return
    if spec is None:
        raise UserError(f"source '{sc.name}' is not registered and has no path or hub_id; registered: "
                        f"{', '.join(REGISTRY)}")
    if spec.local:
        path = resolve_local(spec.local, data_dir)
        if not path.exists():
            raise UserError(f"source '{sc.name}': {path} does not exist; set data_dir / ALOEKIT_DATA_DIR "
                            f"or give the source a path")
        yield from _tag(LOCAL_READERS[spec.reader](path, sc.name, lic, bad, **spec.reader_args), sc)
    else:
        yield from _tag(_read_hub(spec.hub_id, spec.hub_config, sc.split or spec.hub_split, spec.kind,
                                  spec.hub_fields, sc.name, lic), sc)


def _tag(records, sc: SourceConfig):
    # the "general" tag travels with the row, so templates and the CoT pool can keep medical framing off it
    tags = set(sc.tags) | ({"general"} if is_general(sc) else set())
    for r in records:
        if tags:
            r.tags = sorted(set(r.tags) | tags)
        yield r


def _read_hub(hub_id: str, config: str | None, split: str, kind: str, fields: dict, source: str,
              license: str) -> Iterator[Record]:
    """Hub datasets through `datasets.load_dataset` with the same field mapping as local files."""
    import datasets
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, auth, missing split: all user-fixable
        raise UserError(f"source '{source}': cannot load hub dataset {hub_id} ({config}, {split}): "
                        f"{str(e).splitlines()[0][:200]}") from None
    for i, row in enumerate(ds):
        try:
            yield map_row(row, kind, fields, source, f"{hub_id} row {i}", f"{source}:{row.get('id', i)}",
                          {"hub_id": hub_id, "split": split, "row": i, "license": license})
        except KeyError as e:
            raise UserError(f"source '{source}': {hub_id} row {i}: {e.args[0]}; fix 'fields'") from None
