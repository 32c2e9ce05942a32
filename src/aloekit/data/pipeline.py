"""`aloekit data build`: sources -> clean -> dedup -> decontaminate -> CoT -> mixture -> templates -> dataset + card.

Outputs (in the run directory):
  sft/                      HF DatasetDict (train, validation) of chat rows: `datasets.load_from_disk`
  sft_{train,validation}.jsonl   the same rows as JSONL
  preference/ + preference_{train,validation}.jsonl   TRL conversational preference rows (if any source has them)
  records.jsonl             canonical records that survived filtering (with accepted CoT), for audits
  card.json, card.md, plots/   the data card
  cache/cot.jsonl           every teacher generation (resume after a crash by running the same command)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

from pydantic import Field, model_validator

from ..config import StrictModel
from ..console import note, warn
from ..errors import UserError
from ..extras import require
from ..io import atomic_dir, atomic_write_jsonl
from ..rundir import RunDir
from .card import length_histograms, write_card
from .clean import CleanConfig, clean
from .cot import CotConfig, generate_cot, select_pool
from .decontam import DecontamConfig, build_index, decontaminate
from .dedup import DedupConfig, dedup
from .mixture import MixtureConfig, apply_general_fraction, apply_weights, shuffle, split
from .readers import BadRows
from .records import Record
from .sources import REGISTRY, SourceConfig, is_general, load_source, source_license
from .templates import render_preference, render_sft


class DataConfig(StrictModel):
    name: str = "aloekit-data"
    output: str = "runs/data"
    seed: int = 0
    data_dir: Optional[str] = None  # shared benchmark/source data (default: $ALOEKIT_DATA_DIR or ../shared/data)
    skip_bad_rows: bool = False  # count and skip unreadable rows instead of failing
    sources: list[SourceConfig] = Field(min_length=1)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    cot: CotConfig = Field(default_factory=CotConfig)
    mixture: MixtureConfig = Field(default_factory=MixtureConfig)

    @model_validator(mode="after")
    def _general_sources(self):
        f = self.mixture.general_fraction
        general = [s.name for s in self.sources if is_general(s)]
        if f and not general:
            known = ", ".join(n for n, s in REGISTRY.items() if s.general)
            raise ValueError(f"mixture.general_fraction {f:g} needs a general-domain source: add one ({known}) "
                             "or set general: true on a source of your own")
        if f and len(general) == len(self.sources):
            raise ValueError(f"mixture.general_fraction {f:g} is a share of a mix with medical data, but every "
                             "source is general-domain: add a medical source or remove general_fraction")
        return self


def _count(records) -> Counter:
    return Counter(r.source for r in records)


def load_all(cfg: DataConfig, bad: BadRows) -> list[Record]:
    names = [s.name for s in cfg.sources]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(f"sources: {', '.join(sorted(dupes))} listed twice; give each source a unique name")
    records: list[Record] = []
    for sc in cfg.sources:
        with_rows = list(load_source(sc, cfg.data_dir, bad))
        if not with_rows and not bad.counts.get(sc.name):
            raise UserError(f"source '{sc.name}': no rows read; check the file / split")
        records.extend(with_rows)
    return records


def require_extras(cfg: DataConfig, what: str = "aloekit data build") -> None:
    """Near dedup is the one step beyond the core install (exact dedup, decontamination and CoT are core)."""
    if cfg.dedup.near and cfg.dedup.engine == "datatrove":
        require("scale", what=f"{what} with dedup.engine: datatrove")
    elif cfg.dedup.near:
        require("data", what=what)


def run(cfg: DataConfig, backend=None) -> Path:
    """Build the dataset; `backend` (optional) is a ready teacher, else `cfg.cot.teacher` is loaded on demand."""
    require_extras(cfg)
    import datasets
    datasets.disable_progress_bars()
    out = Path(cfg.output)
    run_dir = RunDir(out, "data", cfg, seed=cfg.seed)
    bad = BadRows(cfg.skip_bad_rows)
    funnel: dict[str, dict] = {}

    with run_dir.timed("load"):
        records = load_all(cfg, bad)
    funnel["loaded"] = dict(_count(records) + Counter(bad.counts))
    funnel["bad_rows_skipped"] = dict(bad.counts)
    note(f"loaded {len(records)} rows from {len(cfg.sources)} sources")

    with run_dir.timed("clean"):
        records, removed, modified = clean(records, cfg.clean)
    funnel["after_clean"] = dict(_count(records))

    with run_dir.timed("dedup"):
        exact_cfg = cfg.dedup.model_copy(update={"near": False})
        records, rep_exact = dedup(records, exact_cfg) if cfg.dedup.exact else (records, {"removed": {}})
        funnel["after_exact_dedup"] = dict(_count(records))
        near_cfg = cfg.dedup.model_copy(update={"exact": False})
        records, rep_near = dedup(records, near_cfg, workdir=out / "cache" / "datatrove") if cfg.dedup.near \
            else (records, {"removed": {}})
        funnel["after_near_dedup"] = dict(_count(records))
    dedup_report = {"config": cfg.dedup.model_dump(),
                    "removed": {"exact": rep_exact["removed"].get("exact", {}),
                                "near": rep_near["removed"].get("near", {})},
                    "cross_source": rep_exact.get("cross_source", []) + rep_near.get("cross_source", [])}

    with run_dir.timed("decontam"):
        if cfg.decontam.enabled:
            index, status = build_index(cfg.decontam, cfg.data_dir)
            records, contam = decontaminate(records, index)
        else:
            status, contam = {}, {"removed_by_benchmark": {}, "removed_by_source": {}, "examples": {}}
        funnel["after_decontam"] = dict(_count(records))
    if not records:
        raise UserError("no rows left after cleaning, dedup and decontamination; see the funnel: "
                        + json.dumps(funnel))
    note(f"{len(records)} rows after clean/dedup/decontam")

    cot_report = None
    if cfg.cot.enabled:
        with run_dir.timed("cot"):
            pool = select_pool(records, cfg.cot, cfg.seed)
            cache = Path(cfg.cot.cache) if cfg.cot.cache else out / "cache" / "cot.jsonl"
            cot_report = generate_cot(pool, cfg.cot, cache, cfg.seed, backend=backend)
            note(f"CoT: kept {cot_report['accepted']}/{cot_report['pool']}")

    atomic_write_jsonl(run_dir.output("records", "records.jsonl"), (r.to_dict() for r in records))

    with run_dir.timed("mixture"):
        weighted = apply_weights(records, {s.name: s.weight for s in cfg.sources},
                                 {s.name: s.max_rows for s in cfg.sources}, cfg.seed)
        general = {s.name for s in cfg.sources if is_general(s)}
        mixed, mix_report = apply_general_fraction(weighted, general, cfg.mixture.general_fraction, cfg.seed)
        funnel["after_mixture"] = dict(_count(mixed))
        m = mix_report
        if m["general_wanted"] is not None and m["general_offered"] < m["general_wanted"]:
            warn(f"mixture: {m['general_offered']} general-domain rows for the {m['general_wanted']} that "
                 f"general_fraction {cfg.mixture.general_fraction} asks for; the mix has "
                 f"{m['achieved_general_fraction']} (medical rows are never dropped for it)")

    with run_dir.timed("render"):
        sft, pref = [], []
        repeat: Counter = Counter()
        for r in mixed:
            k = repeat[r.id]
            repeat[r.id] += 1
            # a repeated record (weight > 1) gets a fresh template draw per copy
            seed = cfg.seed if k == 0 else cfg.seed * 1_000_003 + k
            base = {"id": f"{r.id}#{k}", "record_id": r.id, "source": r.source, "kind": r.kind,
                    "tags": r.tags, "provenance": json.dumps(r.provenance, ensure_ascii=False, sort_keys=True)}
            if r.kind == "preference":
                row, tid = render_preference(r, seed)
                pref.append({**base, **row, "template_id": tid})
            else:
                msgs, tid = render_sft(r, seed)
                sft.append({**base, "messages": msgs, "template_id": tid, "has_cot": bool(r.cot)})
        sft_train, sft_val = split(shuffle(sft, cfg.seed), cfg.mixture.validation_fraction, cfg.seed)
        pref_train, pref_val = split(shuffle(pref, cfg.seed), cfg.mixture.validation_fraction, cfg.seed)

    with run_dir.timed("write"):
        _save(out / "sft", {"train": sft_train, "validation": sft_val})
        atomic_write_jsonl(run_dir.output("sft_train", "sft_train.jsonl"), sft_train)
        atomic_write_jsonl(run_dir.output("sft_validation", "sft_validation.jsonl"), sft_val)
        run_dir.output("sft", "sft")
        if pref:
            _save(out / "preference", {"train": pref_train, "validation": pref_val})
            atomic_write_jsonl(run_dir.output("preference_train", "preference_train.jsonl"), pref_train)
            atomic_write_jsonl(run_dir.output("preference_validation", "preference_validation.jsonl"), pref_val)
            run_dir.output("preference", "preference")
        plots = length_histograms(sft, out / "plots") if sft else {}
        card = {
            "name": cfg.name, "seed": cfg.seed,
            "outputs": {"sft_train": len(sft_train), "sft_validation": len(sft_val),
                        "preference_train": len(pref_train), "preference_validation": len(pref_val)},
            "funnel": funnel,
            "bad_rows": {"skipped": dict(bad.counts), "first_reason": bad.examples},
            "cleaning": {"config": cfg.clean.model_dump(), "removed": removed, "modified": modified},
            "dedup": dedup_report,
            "decontamination": {"n": cfg.decontam.n, "enabled": cfg.decontam.enabled, "benchmarks": status,
                                **contam},
            "templates": dict(sorted(Counter(r["template_id"] for r in sft + pref).items())),
            # what this run generated vs took from the cache goes to the manifest: the card must not differ
            # between an uninterrupted run and a resumed one
            "cot": {k: v for k, v in cot_report.items() if k != "this_run"} if cot_report else None,
            "mixture": {**cfg.mixture.model_dump(), **mix_report,
                        "weights": {s.name: s.weight for s in cfg.sources}},
            "sources": {s.name: {"license": source_license(s),
                                 "description": REGISTRY[s.name].description if s.name in REGISTRY else
                                 (s.path or s.hub_id or "")} for s in cfg.sources},
            "plots": plots,
        }
        write_card(out, card)
        run_dir.output("card", "card.md")
    run_dir.finish(rows_sft=len(sft), rows_preference=len(pref), funnel=funnel,
                   cot_acceptance_rate=cot_report["acceptance_rate"] if cot_report else None,
                   cot_this_run=cot_report["this_run"] if cot_report else None,
                   metrics={f"rows.{k}": float(v) for k, v in card["outputs"].items()})
    note(f"wrote {out}/ (sft {len(sft_train)}+{len(sft_val)}, preference {len(pref_train)}+{len(pref_val)})")
    return out


def _save(path: Path, splits: dict[str, list[dict]]) -> None:
    import datasets
    dd = datasets.DatasetDict({k: datasets.Dataset.from_list(v) if v else _empty_like(splits)
                               for k, v in splits.items()})
    with atomic_dir(path) as tmp:
        dd.save_to_disk(str(tmp))


def _empty_like(splits: dict[str, list[dict]]):
    import datasets
    sample = next(v for v in splits.values() if v)
    return datasets.Dataset.from_list(sample[:1]).select([])
