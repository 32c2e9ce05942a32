"""Atomic file and folder writes (a crash never leaves a half-written artifact behind), and reading user files
as UTF-8 text with a one-line error when they are not."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError


def _ensure_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create directory {path}: {e.strerror}; choose a writable location") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"directory {path} is not writable; choose a writable location")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    _ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it is renamed to `final`, on error removed."""
    final = Path(final)
    _ensure_dir(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_path(path: str | os.PathLike) -> str:
    """Content hash of a file or a folder (relative names + bytes), for manifests and cache keys."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def decode_utf8(raw: bytes, path: str | os.PathLike, encoding: str = "utf-8", what: str = "") -> str:
    """`raw.decode(encoding)`; bytes that are not UTF-8 raise a UserError naming the file, where, and the fix.
    `what` (e.g. "source 'medqa'") goes before the path in the message."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        head = f"{what}: {path}" if what else str(path)
        byte = f"byte {e.start}: 0x{raw[e.start]:02x}"
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            msg = "UTF-16 text, not UTF-8; convert it to UTF-8 (e.g. iconv -f utf-16 -t utf-8)"
        elif b"\0" in raw[:8192]:  # NUL bytes: a binary file (archive, model, wrong download), not text
            msg = f"binary data, not UTF-8 text ({byte}); give the text file itself, not a compressed or other file"
        else:
            line = raw.count(b"\n", 0, e.start) + 1
            msg = f"not UTF-8 text ({byte}, line {line}); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        raise UserError(f"{head}: {msg}") from None


def read_text_utf8(path: str | os.PathLike, encoding: str = "utf-8", newline: str | None = None,
                   what: str = "") -> str:
    """A user or benchmark file as text, like `open(path, encoding=encoding, newline=newline).read()` (newline=None
    turns \\r\\n and \\r into \\n; "" keeps them, as the csv module wants), but not UTF-8 is a UserError."""
    text = decode_utf8(Path(path).read_bytes(), path, encoding, what)
    return text if newline == "" else text.replace("\r\n", "\n").replace("\r", "\n")


class GenerationCache:
    """Append-only JSONL of generations; a torn last line (kill -9 mid-write) is cut off on open."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            raw = self.path.read_bytes()
            if raw and not raw.endswith(b"\n"):
                raw = raw[: raw.rfind(b"\n") + 1]
                with open(self.path, "r+b") as f:
                    f.truncate(len(raw))
            for line in raw.decode("utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self.entries[e["key"]] = e
                except (json.JSONDecodeError, KeyError):
                    continue

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def add_many(self, entries: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
            f.flush()
            os.fsync(f.fileno())
        for e in entries:
            self.entries[e["key"]] = e
