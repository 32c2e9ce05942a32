"""Readers: each source's file -> canonical `Record`s, with provenance on every row. Benchmark files (HEAD-QA,
PubMedQA, MedMCQA, MMLU, MedSafetyBench) are parsed by the benchmark layer's one reader per format
(aloekit.benchmarks); the data stage's own formats (generic tables, HH-RLHF dialogues, canonical JSONL) here.

Bad input raises `UserError` naming the source, file and line; with `skip_bad=True` the row is counted in
`BadRows` instead (the data card reports the count), never dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..benchmarks import BadRow, Question
from ..benchmarks import formats as F
from ..benchmarks.requests import read_medsafetybench as read_medsafetybench_requests
from ..errors import UserError
from ..io import decode_utf8
from .records import LETTERS, Record, stable_id


class BadRows:
    """Counts rows skipped for bad input, per source, with the first reason seen (for the card)."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.counts: Counter = Counter()
        self.examples: dict[str, str] = {}

    def bad(self, source: str, where: str, why: str) -> None:
        msg = f"source '{source}': {where}: {why}"
        if not self.skip:
            raise UserError(msg + "; fix the row, the field mapping, or set skip_bad_rows: true")
        self.counts[source] += 1
        self.examples.setdefault(source, msg)


def _open_text(path: Path, source: str):
    if not path.is_file():
        raise UserError(f"source '{source}': file {path} does not exist; check the path or data_dir")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:
        raise UserError(f"source '{source}': cannot read {path}: {e}") from None
    return decode_utf8(raw, path, "utf-8-sig", what=f"source '{source}'")


def _load_json(path: Path, source: str) -> Any:
    try:
        return json.loads(_open_text(path, source))
    except json.JSONDecodeError as e:
        raise UserError(f"source '{source}': {path} line {e.lineno}: invalid JSON ({e.msg})") from None


def iter_jsonl(path: Path, source: str, bad: BadRows) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(_open_text(path, source).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            bad.bad(source, f"{path} line {n}", f"invalid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            bad.bad(source, f"{path} line {n}", f"expected a JSON object, got {type(row).__name__}")
            continue
        yield n, row


def iter_csv(path: Path, source: str, header: bool = True, columns: list[str] | None = None
             ) -> Iterator[tuple[int, dict]]:
    text = _open_text(path, source)
    try:
        reader = csv.reader(io.StringIO(text))
        rows = list(reader)
    except csv.Error as e:
        raise UserError(f"source '{source}': {path}: invalid CSV ({e})") from None
    if not rows:
        return
    names = rows[0] if header else columns or [str(i) for i in range(len(rows[0]))]
    start = 1 if header else 0
    for i, r in enumerate(rows[start:], start + 1):  # 1-based line numbers as an editor shows them
        if not any(c.strip() for c in r):
            continue
        yield i, dict(zip(names, r))


def iter_table(path: Path, source: str, bad: BadRows) -> Iterator[tuple[int, dict]]:
    """Generic tabular input by extension: .jsonl/.json/.csv/.tsv/.parquet (optionally .gz)."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext == ".jsonl" or (ext == ".json" and _looks_jsonl(path, source)):
        yield from iter_jsonl(path, source, bad)
    elif ext == ".json":
        data = _load_json(path, source)
        if isinstance(data, dict):  # {id: row} as PubMedQA ships
            data = [{"_key": k, **v} if isinstance(v, dict) else {"_key": k, "value": v} for k, v in data.items()]
        if not isinstance(data, list):
            raise UserError(f"source '{source}': {path}: expected a JSON list or object of rows")
        for i, row in enumerate(data, 1):
            if not isinstance(row, dict):
                bad.bad(source, f"{path} row {i}", "expected a JSON object")
                continue
            yield i, row
    elif ext in (".csv", ".tsv"):
        yield from iter_csv(path, source)
    elif ext == ".parquet":
        try:
            import pyarrow.parquet as pq
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise UserError(f"source '{source}': cannot read parquet {path}: {str(e)[:200]}") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield i, row
    else:
        raise UserError(f"source '{source}': {path}: unknown format '{ext}'; use .jsonl, .json, .csv or .parquet")


def _looks_jsonl(path: Path, source: str) -> bool:
    first = _open_text(path, source).lstrip()[:1]
    if first != "{":
        return False
    try:
        json.loads(_open_text(path, source))
        return False
    except json.JSONDecodeError:
        return True


# ---------------------------------------------------------------- field mapping (generic sources)

def _get(row: dict, key: str, source: str, where: str) -> Any:
    """`a.b` reaches into nested objects. A key absent from the row is a mapping error, not an empty value."""
    node: Any = row
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            have = ", ".join(sorted(row)[:12])
            raise KeyError(f"field '{key}' not found (row has: {have})")
    return node


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v != v:  # NaN from pandas/parquet
        return ""
    return str(v)


def parse_answer(raw: Any, options: dict[str, str], base: int | None = None) -> str:
    """A letter, an index, or the option's text -> the option letter ('' when it matches none).
    Indices are 1-based unless `base` is 0 (fields: {answer_base: 0}); MedMCQA cop and HeadQA ra are 1-based."""
    s = _text(raw).strip()
    if s.upper() in options:
        return s.upper()
    if s.isdigit():
        i = int(s) - (1 if base is None or base == 1 else 0)
        letters = sorted(options)
        if base is None and int(s) == 0:  # 0 can only be a 0-based index
            i = 0
        return letters[i] if 0 <= i < len(letters) else ""
    for k, v in options.items():
        if v.strip().lower() == s.lower() and s:
            return k
    return ""


def map_row(row: dict, kind: str, fields: dict[str, Any], source: str, where: str, rid: str,
            provenance: dict) -> Record:
    """Build a Record from one row with a user field mapping; raises KeyError on a missing field."""
    rec = Record(kind=kind, source=source, id=rid, provenance=provenance)
    f = fields
    if kind == "mcq":
        rec.question = _text(_get(row, f.get("question", "question"), source, where))
        opt_spec = f.get("options", "options")
        if isinstance(opt_spec, list):
            vals = [_text(_get(row, c, source, where)) for c in opt_spec]
            rec.options = {LETTERS[i]: v for i, v in enumerate(vals)}
        else:
            v = _get(row, opt_spec, source, where)
            if isinstance(v, dict):
                rec.options = {str(k).upper(): _text(x) for k, x in v.items()}
            elif isinstance(v, list):
                rec.options = {LETTERS[i]: _text(x) for i, x in enumerate(v)}
            else:
                raise KeyError(f"field '{opt_spec}' must be a list or a letter->text object")
        rec.answer = parse_answer(_get(row, f.get("answer", "answer"), source, where), rec.options,
                                  f.get("answer_base"))
        if not rec.answer:
            rec.provenance["raw_answer"] = _text(_get(row, f.get("answer", "answer"), source, where))
        for opt in ("explanation", "context"):
            if opt in f:
                setattr(rec, opt, _text(_get(row, f[opt], source, where)))
    elif kind == "qa":
        rec.question = _text(_get(row, f.get("question", "question"), source, where))
        rec.answer = _text(_get(row, f.get("answer", "answer"), source, where))
        if "context" in f:
            ctx = _get(row, f["context"], source, where)
            rec.context = " ".join(map(_text, ctx)) if isinstance(ctx, list) else _text(ctx)
    elif kind == "chat":
        msgs = _get(row, f.get("messages", "messages"), source, where)
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in msgs):
            raise KeyError(f"field '{f.get('messages', 'messages')}' must be a list of {{role, content}}")
        rec.messages = [{"role": str(m["role"]), "content": _text(m["content"])} for m in msgs]
    elif kind == "preference":
        for name in ("prompt", "chosen", "rejected"):
            setattr(rec, name, _text(_get(row, f.get(name, name), source, where)))
    else:
        raise UserError(f"source '{source}': unknown kind '{kind}'; use mcq, qa, chat or preference")
    return rec


def read_generic(path: Path, source: str, kind: str, fields: dict, license: str, bad: BadRows) -> Iterator[Record]:
    first = True
    for n, row in iter_table(path, source, bad):
        where = f"{path} line {n}"
        rid = str(row.get(fields.get("id", "id"), "")) or f"{n}"
        try:
            yield map_row(row, kind, fields, source, where, f"{source}:{rid}",
                          {"file": str(path), "line": n, "license": license})
        except KeyError as e:
            # a mapping to a field that no row has is a config error: fail on the first row regardless
            msg = f"{where}: {e.args[0]}; fix 'fields' in the source config"
            if first or not bad.skip:
                raise UserError(f"source '{source}': {msg}") from None
            bad.bad(source, where, e.args[0])
        first = False


# ---------------------------------------------------------------- benchmark files (read by aloekit.benchmarks)
# A registered benchmark's training split (HEAD-QA train, the PubMedQA pool, MMLU dev, MedSafetyBench train ...)
# is read by the benchmark layer's one reader of its format; these turn its questions into canonical Records.

def _hint(source: str) -> str:
    return f"source '{source}': check the path or data_dir"


def _line(where: str) -> int:
    tail = where.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _questions(items, source: str, bad: BadRows) -> list[Question]:
    out = []
    for where, q in items:
        if isinstance(q, BadRow):
            bad.bad(source, where, str(q))
        else:
            out.append(q)
    return out


def _mcq(q: Question, source: str, rid: str, provenance: dict, **fields) -> Record:
    return Record("mcq", source, f"{source}:{rid}", question=fields.pop("question", q.question),
                  options={LETTERS[j]: o for j, o in enumerate(q.options)}, answer=LETTERS[q.gold],
                  provenance=provenance, **fields)


def read_headqa(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    qs = _questions(F.read_headqa(path, _hint(source)), source, bad)
    for q in sorted(qs, key=lambda q: q.source["exam"]):  # exams by name (the files list them so)
        rec = _mcq(q, source, q.id, {"file": str(path), "exam": q.source["exam"], "qid": q.source["qid"],
                                     "license": license})
        if q.source.get("image"):
            rec.tags.append("needs_image")
        yield rec


def read_pubmedqa(path: Path, source: str, license: str, bad: BadRows, split: str = "pool") -> Iterator[Record]:
    """PQA-L: the 500 official test PMIDs are the benchmark; the other 500 are the train pool."""
    qs = _questions(F.read_pubmedqa(path, _hint(source), split="test" if split == "test" else "pool"), source, bad)
    for q in sorted(qs, key=lambda q: q.id):  # by PMID
        yield _mcq(q, source, q.id, {"file": str(path), "pmid": q.id, "license": license}, question=q.stem,
                   explanation=q.explanation, context=q.passage)


def read_medmcqa(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    for where, q in F.read_medmcqa(path, _hint(source)):
        if isinstance(q, BadRow):
            bad.bad(source, where, str(q))
            continue
        yield _mcq(q, source, q.id, {"file": str(path), "line": _line(where), "license": license,
                                     "subject": q.source["subject"], "choice_type": q.source["choice_type"]},
                   explanation=q.explanation)


def read_mmlu(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    """A folder of header-less hendrycks CSVs (question, A, B, C, D, answer)."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise UserError(f"source '{source}': no .csv files in {path}")
    for f in files:
        for where, q in F.read_mmlu(f, _hint(source), subject=f.stem):
            if isinstance(q, BadRow):
                bad.bad(source, where, str(q))
                continue
            yield _mcq(q, source, q.id, {"file": str(f), "line": int(q.id.rsplit(":", 1)[1]), "subject": f.stem,
                                         "license": license})


def read_medsafetybench(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    """A MedSafetyBench split folder (train/ or test/): each request with its safe response, as a qa record."""
    for r in read_medsafetybench_requests(path, path.name):
        p = r.provenance
        line = p["row"] + 2  # the header is line 1
        yield Record("qa", source, f"{source}:{p['generator']}:{Path(p['file']).stem}:{line}", question=r.text,
                     answer=r.safe_response or "", tags=["safety", "harmful_request"],
                     provenance={"file": p["file"], "line": line, "category": p["category"],
                                 "generator": p["generator"], "license": license})


def read_hh_rlhf(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    """Anthropic HH: full dialogues in chosen/rejected sharing a prefix; the last assistant turn differs."""
    for n, r in iter_jsonl(path, source, bad):
        chosen, rejected = _text(r.get("chosen")), _text(r.get("rejected"))
        common = 0
        while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
            common += 1
        # the prompt ends at the last assistant turn both dialogues share
        cut = chosen.rfind("\n\nAssistant:", 0, common)
        if cut < 0:
            bad.bad(source, f"{path} line {n}", "chosen/rejected do not share a dialogue prefix")
            continue
        prompt = chosen[:cut].replace("\n\nHuman:", "\nHuman:").strip()
        yield Record("preference", source, f"{source}:{n}", prompt=prompt,
                     chosen=chosen[cut + len("\n\nAssistant:"):].strip(),
                     rejected=rejected[cut + len("\n\nAssistant:"):].strip(),
                     provenance={"file": str(path), "line": n, "license": license})


def read_canonical(path: Path, source: str, license: str, bad: BadRows) -> Iterator[Record]:
    """aloekit's own JSONL (the demo corpus, `records.jsonl` of a build): rows already canonical."""
    for n, r in iter_jsonl(path, source, bad):
        if r.get("kind") not in ("mcq", "qa", "chat", "preference"):
            bad.bad(source, f"{path} line {n}", f"unknown kind {r.get('kind')!r}")
            continue
        rec = Record.from_dict({**r, "source": source})
        rec.id = f"{source}:{r.get('id') or stable_id(r)}"
        rec.provenance = {**r.get("provenance", {}), "file": str(path), "line": n, "license": license}
        if rec.kind == "mcq" and rec.answer and rec.answer not in rec.options:
            rec.answer = parse_answer(rec.answer, rec.options)
        yield rec


LOCAL_READERS: dict[str, Callable[..., Iterable[Record]]] = {
    "headqa": read_headqa,
    "pubmedqa": read_pubmedqa,
    "medmcqa": read_medmcqa,
    "mmlu": read_mmlu,
    "medsafetybench": read_medsafetybench,
    "hh_rlhf": read_hh_rlhf,
    "canonical": read_canonical,
}
