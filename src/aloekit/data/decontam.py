"""N-gram decontamination against the test split of every registered benchmark.

The index holds every word n-gram (default 13) of each benchmark item's question AND options (and passage
where the benchmark has one): MCQ answers are often one letter, so matching on the answer alone finds nothing.
Items shorter than n words (but at least 3) are indexed whole, so short benchmark questions are still caught
verbatim.
Which benchmarks are checked, and their test files, come from the benchmark registry (aloekit.benchmarks):
every entry with a `decontam` name, read by the benchmark layer's readers.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from pydantic import Field

from ..benchmarks import REGISTRY, Question, absent, decontam_benchmarks, read_split
from ..config import StrictModel
from ..errors import UserError
from ..paths import data_dir as _data_dir
from .dedup import normalise
from .readers import BadRows
from .records import Record


@dataclass(frozen=True)
class Benchmark:
    """A decontamination entry: the registered benchmarks whose test splits are checked under one name."""
    name: str
    members: tuple[str, ...]

    @property
    def local(self) -> str | None:
        """Where the test split lives (relative to the data dir; "pkg:" inside the package)."""
        paths = [REGISTRY[m].split().local for m in self.members]
        if len(paths) == 1:
            return paths[0]
        return str(Path(paths[0]).parent) if paths[0] else None

    @property
    def hub_id(self) -> str:
        b = REGISTRY[self.members[0]]
        split = b.split().hub_split
        if b.bundled:
            return "none (bundled with aloekit)"
        return f"{b.hub_id}:{split}" + (f" ({len(self.members)} subsets)" if len(self.members) > 1 else "") \
            if split else "none (local files only)"


class _Benchmarks(Mapping):
    """name -> Benchmark, read live from the registry (a benchmark registered later is checked too)."""

    def _all(self) -> dict[str, Benchmark]:
        return {n: Benchmark(n, tuple(m)) for n, m in decontam_benchmarks().items()}

    def __getitem__(self, name: str) -> Benchmark:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


BENCHMARKS: Mapping[str, Benchmark] = _Benchmarks()


class DecontamConfig(StrictModel):
    enabled: bool = True
    n: int = Field(13, ge=3, le=50)
    benchmarks: list[str] = Field(default_factory=lambda: ["all"])


def decon_words(text: str) -> list[str]:
    """Normalised words minus one-character tokens: option labels ("A.", "(b)") then vanish on both sides, so a
    benchmark item is still found after it was rendered as "Question ... A. x B. y" by any template."""
    return [w for w in normalise(text).split() if len(w) > 1]


def _grams(words: Sequence[str], n: int) -> Iterable[tuple]:
    return (tuple(words[i:i + n]) for i in range(len(words) - n + 1))


class NgramIndex:
    """n-gram -> bitmask of benchmarks containing it. Built once; each record costs one pass of dict lookups.

    An item is given as segments (question, options). If every segment is shorter than n words, no n-gram can
    represent it, so each segment (of 3+ words) is indexed whole by its first 3 words and the item counts as
    found when ALL its segments appear as contiguous runs of words in the record: that catches a benchmark
    question rendered by a template that puts "Options:" or other words between question and options."""

    def __init__(self, n: int = 13):
        self.n = n
        self.grams: dict[tuple, int] = {}
        self.short: dict[tuple, list[tuple[tuple, int, int]]] = {}  # first 3 words -> [(segment, item, part bit)]
        self.required: list[int] = []  # per short item: bits of the parts that must all be found
        self.item_bench: list[int] = []  # per short item: its benchmark bit
        self.names: list[str] = []
        self.items: dict[str, int] = {}
        self.too_short: dict[str, int] = {}  # items with no segment of 3+ words: not indexable

    def add_benchmark(self, name: str, items: Iterable[str | Sequence[str]]) -> None:
        bit = 1 << len(self.names)
        self.names.append(name)
        count = tiny = 0
        for item in items:
            count += 1
            segs = [decon_words(s) for s in ([item] if isinstance(item, str) else item)]
            words = [w for seg in segs for w in seg]
            for g in _grams(words, self.n):
                self.grams[g] = self.grams.get(g, 0) | bit
            if any(len(seg) >= self.n for seg in segs):
                continue  # a segment of n+ words is found through its own n-grams
            parts = [seg for seg in segs if len(seg) >= 3]
            if not parts:
                tiny += 1
                continue
            k = len(self.required)
            self.required.append((1 << len(parts)) - 1)
            self.item_bench.append(bit)
            for j, seg in enumerate(parts):
                self.short.setdefault(tuple(seg[:3]), []).append((tuple(seg), k, 1 << j))
        self.items[name] = count
        self.too_short[name] = tiny

    def match(self, text: str) -> int:
        """Bitmask of the benchmarks sharing at least one n-gram with `text` (0 = clean)."""
        words = decon_words(text)
        grams, short, n = self.grams, self.short, self.n
        hit = 0
        found: dict[int, int] = {}
        last_full = len(words) - n
        for i in range(len(words) - 2):
            if i <= last_full:
                m = grams.get(tuple(words[i:i + n]))
                if m:
                    hit |= m
            if short:
                cands = short.get((words[i], words[i + 1], words[i + 2]))
                if cands:
                    for seg, k, part in cands:
                        if tuple(words[i:i + len(seg)]) == seg:
                            found[k] = found.get(k, 0) | part
        for k, parts in found.items():
            if parts == self.required[k]:
                hit |= self.item_bench[k]
        return hit

    def names_of(self, mask: int) -> list[str]:
        return [n for i, n in enumerate(self.names) if mask >> i & 1]


def _segments(item) -> list[str]:
    if isinstance(item, Question):
        return item.text_segments()
    return [item.text]  # a request (MedSafetyBench): the request is the whole item


def benchmark_items(name: str, data_dir: str | None) -> list[list[str]] | None:
    """Each test item as segments [passage + question, options], or None if the files are absent."""
    b = BENCHMARKS[name]
    root = None
    if not all(REGISTRY[m].bundled for m in b.members):
        root = _data_dir(data_dir, required=False)
        if root is None:
            return None
    parts = [read_split(m, root) for m in b.members]
    if all(p is None for p in parts):
        return None
    return [_segments(item) for p in parts if p is not None for item in p]


def why_absent(name: str, data_dir: str | None) -> str:
    """Where the test split was looked for, for a NOT CHECKED line: the hub copy is never read here, so a
    benchmark is checked exactly when its file is in the data folder (MedQA and CareQA included)."""
    root = _data_dir(data_dir, required=False)
    if root is None:
        return "no data folder (set data_dir or ALOEKIT_DATA_DIR)"
    return absent(BENCHMARKS[name].members[0], root) or "no readable test item"


def build_index(cfg: DecontamConfig, data_dir: str | None) -> tuple[NgramIndex, dict[str, str]]:
    """-> index and a status per benchmark ("checked: N items" / "not available locally ..."). A benchmark
    named explicitly that cannot be read is an error; with 'all', missing ones are reported on the card."""
    names = list(BENCHMARKS) if cfg.benchmarks == ["all"] else cfg.benchmarks
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"decontam.benchmarks: unknown benchmark(s) {', '.join(unknown)}; registered: "
                        f"{', '.join(BENCHMARKS)} (or 'all')")
    index = NgramIndex(cfg.n)
    status = {}
    for n in names:
        texts = benchmark_items(n, data_dir)
        if texts is None:
            why = why_absent(n, data_dir)
            if cfg.benchmarks != ["all"]:
                raise UserError(f"decontam: benchmark '{n}' has no local test split ({why}); "
                                "set data_dir or drop it from decontam.benchmarks")
            status[n] = f"NOT CHECKED: no local test split ({why}; hub copy {BENCHMARKS[n].hub_id} is not read)"
            continue
        index.add_benchmark(n, texts)
        status[n] = f"checked: {len(texts)} test items"
    return index, status


def decontaminate(records: Sequence[Record], index: NgramIndex) -> tuple[list[Record], dict]:
    removed: dict[str, Counter] = defaultdict(Counter)  # benchmark -> source -> rows
    examples: dict[str, list[str]] = defaultdict(list)
    total_removed: Counter = Counter()
    kept = []
    for r in records:
        mask = index.match(r.prompt_text())
        if not mask:
            kept.append(r)
            continue
        total_removed[r.source] += 1
        for b in index.names_of(mask):
            removed[b][r.source] += 1
            if len(examples[b]) < 3:
                examples[b].append(r.id)
    return kept, {"removed_by_benchmark": {k: dict(v) for k, v in removed.items()},
                  "removed_by_source": dict(total_removed), "examples": dict(examples)}


# ---------------------------------------------------------------- audit of any dataset

def rows_to_records(rows: Iterable[dict], source: str) -> list[Record]:
    """Canonical records, chat rows (`messages`), preference rows or plain question rows -> Records."""
    out = []
    for i, row in enumerate(rows):
        if row.get("kind") in ("mcq", "qa", "chat", "preference"):
            out.append(Record.from_dict({**row, "source": source}))
        elif isinstance(row.get("messages"), list):
            out.append(Record("chat", source, str(row.get("id", i)), messages=row["messages"]))
        elif "prompt" in row:
            p = row["prompt"]
            text = " ".join(m.get("content", "") for m in p) if isinstance(p, list) else str(p)
            out.append(Record("preference", source, str(row.get("id", i)), prompt=text))
        elif "question" in row:
            opts = row.get("options") or {}
            if isinstance(opts, list):
                opts = {chr(65 + j): str(o) for j, o in enumerate(opts)}
            out.append(Record("mcq" if opts else "qa", source, str(row.get("id", i)), question=str(row["question"]),
                              options={k: str(v) for k, v in opts.items()}, context=str(row.get("context") or "")))
        else:
            text = " ".join(str(v) for v in row.values() if isinstance(v, str))
            out.append(Record("qa", source, str(row.get("id", i)), question=text))
    return out


def load_any(dataset: str, data_dir: str | None) -> list[Record]:
    """A registered source name, a canonical/chat JSONL file, or a `save_to_disk` folder."""
    from .readers import iter_table
    from .sources import REGISTRY, SourceConfig, load_source
    p = Path(dataset)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()):
        import datasets
        ds = datasets.load_from_disk(str(p))
        splits = ds.values() if isinstance(ds, datasets.DatasetDict) else [ds]
        return [r for s in splits for r in rows_to_records(s, p.name)]
    if p.is_file():
        return rows_to_records((row for _, row in iter_table(p, p.name, BadRows(skip=False))), p.name)
    if dataset in REGISTRY:
        return list(load_source(SourceConfig(name=dataset), data_dir, BadRows(skip=True)))
    raise UserError(f"--dataset {dataset}: not a file, a saved dataset folder, or a registered source "
                    f"({', '.join(REGISTRY)})")


def audit(dataset: str, cfg: DecontamConfig, data_dir: str | None) -> dict:
    records = load_any(dataset, data_dir)
    index, status = build_index(cfg, data_dir)
    kept, rep = decontaminate(records, index)
    return {"dataset": dataset, "n": cfg.n, "rows": len(records), "contaminated_rows": len(records) - len(kept),
            "benchmarks": status,
            "contaminated_by_benchmark": {b: sum(v.values()) for b, v in rep["removed_by_benchmark"].items()},
            "examples": rep["examples"]}
