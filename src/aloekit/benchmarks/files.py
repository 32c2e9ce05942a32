"""File plumbing shared by the format readers: UTF-8 text, JSON / JSON Lines / CSV rows with their line numbers,
and `collect`, which turns (where, row) pairs into `Rows` under one bad-row policy.

Every bad row is reported as `file:line: what is wrong; what to do`. With `skip_bad=True` a bad row is skipped
instead and counted in `Rows.skipped`, so a results file always says how many questions were dropped.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import UserError
from ..io import read_text_utf8
from .question import BadRow, Question, Rows


def read_text(path: Path, newline: str | None = None) -> str:
    """A benchmark file as text ("utf-8-sig": a byte-order mark some editors add is not part of the data)."""
    return read_text_utf8(path, "utf-8-sig", newline=newline)


def need_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: benchmark file not found; {hint}")
    return path


def read_json(path: Path) -> tuple[Any, str]:
    """The parsed file and its text (to find line numbers, which JSON parsers forget)."""
    text = read_text(path)
    try:
        return json.loads(text), text
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix or re-download the file") from None


class TextLines:
    """Line numbers in a JSON file's text (JSON parsers forget positions): `find` returns the 1-based line of a
    needle's first occurrence from `start`, and its offset ((0, start) when absent). Newline offsets are indexed
    once, so a file of thousands of questions costs one pass, not one per question."""

    def __init__(self, text: str):
        self.text = text
        self._newlines: list[int] | None = None
        self._first: dict[str, int] | None = None

    def find(self, needle: str, start: int = 0) -> tuple[int, int]:
        i = self.text.find(needle, start)
        if i < 0:
            return 0, start
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, i) + 1, i

    def find_key(self, key: str) -> tuple[int, int]:
        """`find(f'"{key}"')` from the start for a key of digits (PubMedQA's PMIDs), from one scan of the text."""
        if self._first is None:
            self._first = {}
            for m in re.finditer(r'"(\d+)"', self.text):
                self._first.setdefault(m.group(1), m.start())
        i = self._first.get(key)
        if i is None or not key.isdigit():
            return self.find(f'"{key}"')
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, i) + 1, i


def jsonl_items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or BadRow) for each non-empty line: a bad line is one bad row."""
    for n, line in enumerate(io.StringIO(read_text(path)), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, BadRow(f"invalid JSON ({e.msg} at column {e.colno})")


def jsonl_objects(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-empty line; any bad line is an error (small files of our own)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    out = []
    for n, line in enumerate(read_text(path).splitlines(), 1):
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


def csv_records(path: Path, reader) -> Iterator[tuple[str, int, Any]]:
    """(where, record number, row) for each non-empty CSV record of `reader` (numbers count every record, 1-based,
    as a csv reader does; `where` names the record's first physical line); a malformed record ends the file with
    one BadRow."""
    k = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield f"{path}:{start}", k + 1, BadRow(f"unreadable CSV ({e})")
            return
        k += 1
        if row:
            yield f"{path}:{start}", k, row


def csv_reader(path: Path):
    """A csv.reader over the whole file (quoted fields may span lines)."""
    return csv.reader(io.StringIO(read_text(path, newline=""), newline=""))


def csv_dicts(path: Path) -> list[dict]:
    """Every row of a CSV file with a header, as dicts (request sets: small, read whole)."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the source's path or --data-dir")
    return list(csv.DictReader(io.StringIO(read_text(path, newline=""), newline="")))


def text_field(row: dict, key: str) -> str:
    v = row.get(key)
    if not isinstance(v, str) or not v.strip():
        raise BadRow(f"field '{key}' is missing or empty")
    return v


def letter_index(value: Any, n: int, field_name: str) -> int:
    from .question import LETTERS
    if not isinstance(value, str) or len(value.strip()) != 1 or value.strip().upper() not in LETTERS[:n]:
        raise BadRow(f"{field_name} {value!r} is not one of the options {', '.join(LETTERS[:n])}")
    return LETTERS.index(value.strip().upper())


def int_index(value: Any, lo: int, n: int, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value < lo + n:
        raise BadRow(f"{field_name} {value!r} is outside the options ({lo}..{lo + n - 1})")
    return value - lo


def collect(path_or_id: str, rows: Iterator[tuple[str, Any]], skip_bad: bool, limit: int | None,
            build: Callable[[Any], Question] | None = None) -> Rows:
    """(where, Question | raw row | BadRow) pairs -> Rows; bad rows raise with their location or, with skip_bad,
    are counted. `build` turns a raw row into a Question (raising BadRow)."""
    out = Rows(docs=[], source=path_or_id)
    for where, raw in rows:
        if limit is not None and len(out.docs) >= limit:
            break
        try:
            if isinstance(raw, BadRow):
                raise raw
            doc = build(raw) if build is not None else raw
        except BadRow as e:
            if not skip_bad:
                raise UserError(f"{where}: {e}; fix the row or pass --skip-bad-rows to skip it") from None
            out.skipped += 1
            out.skipped_where.append(where)
            continue
        doc.doc_id = len(out.docs)
        doc.where = where
        out.docs.append(doc)
    if not out.docs:
        raise UserError(f"{path_or_id}: no usable questions (empty benchmark); check the file")
    return out


def hub_dataset(repo: str, name: str | None, split: str):
    """`datasets.load_dataset`, with the errors a user can fix (network, auth, unknown config) as one line."""
    try:
        from datasets import load_dataset
        return load_dataset(repo, name, split=split)
    except Exception as e:  # network, auth, unknown config: all fixable by the user
        raise UserError(f"hub dataset {repo}{f' ({name})' if name else ''}: cannot load split '{split}' "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
                        f"check the network or use local files with --data-dir") from None


def hub_rows(repo: str, name: str | None, split: str) -> Iterator[tuple[str, Any]]:
    ds = hub_dataset(repo, name, split)
    return ((f"{repo}[{split}] row {i}", r) for i, r in enumerate(ds))
