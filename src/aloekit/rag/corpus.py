"""Corpus readers: JSON Lines / JSON / CSV / Parquet rows with a text field (and optional id, title, source,
url), a folder of .txt / .md files (and .pdf through `pypdf` when installed), or PubMedQA's PQA-L file (one
document per PMID, its abstract = CONTEXTS joined, read by aloekit.benchmarks' PubMedQA reader)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import UserError
from ..io import decode_utf8, hash_path

TEXT_SUFFIXES = (".txt", ".md")
ROW_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass
class Document:
    id: str
    text: str
    title: str = ""
    source: str = ""
    url: str = ""
    where: str = ""  # file:line, for messages and provenance


@dataclass
class Corpus:
    documents: list[Document]
    sources: list[dict[str, Any]]  # {path, sha256, documents, skipped}
    skipped: int = 0


def _field(row: dict, name: str) -> str:
    v = row.get(name)
    return "" if v is None else str(v)


def _doc_from_row(row: Any, where: str, text_field: str, fallback_id: str) -> Document:
    if not isinstance(row, dict):
        raise _Bad("row is not an object with fields")
    if text_field not in row:
        have = ", ".join(list(row)[:8]) or "none"
        raise _Bad(f"no '{text_field}' field (fields: {have}); name the text field with --text-field")
    text = row[text_field]
    if not isinstance(text, str):
        raise _Bad(f"field '{text_field}' is {type(text).__name__}, not text")
    if not text.strip():
        raise _Bad(f"field '{text_field}' is empty")
    return Document(id=_field(row, "id") or fallback_id, text=text, title=_field(row, "title"),
                    source=_field(row, "source"), url=_field(row, "url"), where=where)


class _Bad(Exception):
    pass


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for a row file; a row that cannot be parsed comes as (where, _Bad)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise UserError(f"{path}: not a readable Parquet file ({type(e).__name__}); check the file") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"{path}: row {i}", row
        return
    text = decode_utf8(path.read_bytes(), path)
    if text.startswith("\ufeff"):
        text = text[1:]
    if suffix == ".jsonl":
        for n, line in enumerate(io.StringIO(text), 1):
            if line.strip():
                try:
                    yield f"{path}:{n}", json.loads(line)
                except json.JSONDecodeError as e:
                    yield f"{path}:{n}", _Bad(f"invalid JSON ({e.msg} at column {e.colno}); one object per line")
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects (or PubMedQA's PQA-L file); "
                            f"use JSON Lines for one object per line")
        for i, row in enumerate(data, 1):
            yield f"{path}: item {i}", row
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                yield f"{path}:{reader.line_num}", {k: v for k, v in row.items() if k is not None}
        except csv.Error as e:
            yield f"{path}:{reader.line_num}", _Bad(f"unreadable CSV ({e})")


def _is_pubmedqa(path: Path) -> bool:
    if path.suffix.lower() != ".json":
        return False
    with open(path, "rb") as f:
        head = f.read(4096)
    return head.lstrip().startswith(b"{") and b'"CONTEXTS"' in head


def _pubmedqa(path: Path) -> tuple[list[Document], int]:
    from ..benchmarks import Question
    from ..benchmarks.formats import read_pubmedqa
    docs = []
    for split in ("test", "pool"):
        for where, q in read_pubmedqa(path, split=split):
            if not isinstance(q, Question):
                raise UserError(f"{where}: {q}")
            docs.append(Document(id=q.id, text=q.passage, source=path.name, where=where))
    return docs, 0


def _pdf_text(path: Path) -> str:
    try:
        import pypdf
    except ImportError:
        raise UserError(f"{path}: reading PDF needs the 'pypdf' package: pip install pypdf") from None
    try:
        return "\n".join(page.extract_text() or "" for page in pypdf.PdfReader(str(path)).pages)
    except Exception as e:  # pypdf raises many types for damaged files
        raise UserError(f"{path}: not a readable PDF ({type(e).__name__}); check the file") from None


def _folder(folder: Path) -> tuple[list[Document], int]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + (".pdf",)
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    docs, empty = [], 0
    for p in files:
        rel = str(p.relative_to(folder))
        text = _pdf_text(p) if p.suffix.lower() == ".pdf" else decode_utf8(p.read_bytes(), p)
        if not text.strip():
            empty += 1  # an empty file is no document, but it is counted
            continue
        title = ""
        if p.suffix.lower() == ".md":
            first = text.lstrip().splitlines()[0]
            if first.startswith("#"):
                title = first.lstrip("#").strip()
        docs.append(Document(id=rel, text=text, title=title or p.stem, source=rel, where=str(p)))
    return docs, empty


def read_corpus(paths: list[str | Path], text_field: str = "text", skip_bad_rows: bool = False,
                limit: int | None = None) -> Corpus:
    """Every document of every path, in order. Bad input is a UserError naming file and line, before anything
    is written; `skip_bad_rows` skips (and counts) rows without usable text instead."""
    if not paths:
        raise UserError("give at least one corpus file or folder")
    documents: list[Document] = []
    sources: list[dict[str, Any]] = []
    skipped_total = 0
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path}: corpus not found; give a JSONL/JSON/CSV/Parquet file or a folder of .txt/.md")
        skipped = 0
        if path.is_dir():
            docs, skipped = _folder(path)
            if not docs and not skipped:
                raise UserError(f"{path}: no .txt, .md or .pdf files in this folder")
        elif _is_pubmedqa(path):
            docs, skipped = _pubmedqa(path)
        elif path.suffix.lower() in ROW_SUFFIXES:
            docs = []
            for i, (where, row) in enumerate(_rows(path), 1):
                try:
                    if isinstance(row, _Bad):
                        raise row
                    docs.append(_doc_from_row(row, where, text_field, f"{path.stem}:{i}"))
                except _Bad as e:
                    if not skip_bad_rows:
                        raise UserError(f"{where}: {e}; fix the row or pass --skip-bad-rows") from None
                    skipped += 1
        elif path.suffix.lower() in TEXT_SUFFIXES or path.suffix.lower() == ".pdf":
            text = _pdf_text(path) if path.suffix.lower() == ".pdf" else decode_utf8(path.read_bytes(), path)
            docs = [Document(id=path.name, text=text, title=path.stem, source=path.name, where=str(path))] \
                if text.strip() else []
        else:
            raise UserError(f"{path}: unknown corpus format '{path.suffix}'; give .jsonl, .json, .csv, .parquet, "
                            f".txt, .md (or .pdf), or a folder of them")
        sources.append({"path": str(path), "sha256": hash_path(path), "documents": len(docs), "skipped": skipped})
        skipped_total += skipped
        documents += docs
    if limit is not None:
        documents = documents[:limit]
    if not documents:
        raise UserError(f"{', '.join(map(str, paths))}: the corpus is empty (no document with text); "
                        f"give a corpus with at least one non-empty text")
    return Corpus(documents, sources, skipped_total)
