"""Run directories: the one on-disk convention every stage writes.

    <run>/
      config.yaml      the resolved config (after YAML + overrides)
      manifest.json    stage, versions, git sha, seed, timings, input hashes, outputs
      ...outputs...

Stages exchange only these folders. The manifest is written atomically at start ("running") and at the end
("done"), so a reader can tell a finished stage from an interrupted one.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from .config import dump_config
from .io import _ensure_dir, atomic_write_json, atomic_write_text, hash_path


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("aloekit", "torch", "transformers", "accelerate", "datasets", "trl", "peft", "vllm",
                "llama-cpp-python", "lm-eval", "mergekit"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, path: str | os.PathLike, stage: str, config: BaseModel | dict | None = None,
                 seed: int | None = None, inputs: dict[str, str | os.PathLike] | None = None, write: bool = True):
        self.path = Path(path)
        self.write = write  # False on non-main ranks of a distributed run: one process owns the files
        _ensure_dir(self.path)
        self.stage = stage
        self.t0 = time.time()
        self.timings: dict[str, float] = {}
        self.manifest: dict[str, Any] = {
            "stage": stage,
            "status": "running",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seed": seed,
            "argv": sys.argv,
            "git_sha": git_sha(),
            "versions": versions(),
            "inputs": {k: {"path": str(v), "sha256": hash_path(v) if Path(v).exists() else None}
                       for k, v in (inputs or {}).items()},
            "outputs": {},
            "timings_s": self.timings,
        }
        if config is not None and write:
            text = dump_config(config) if isinstance(config, BaseModel) else __import__("yaml").safe_dump(config)
            atomic_write_text(self.path / "config.yaml", text)
        self.save()

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        t = time.time()
        try:
            yield
        finally:
            self.timings[step] = round(self.timings.get(step, 0.0) + time.time() - t, 3)
            self.save()

    def output(self, name: str, relpath: str) -> Path:
        self.manifest["outputs"][name] = relpath
        return self.path / relpath

    def set(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.save()

    def finish(self, **fields: Any) -> None:
        self.timings["total"] = round(time.time() - self.t0, 3)
        self.manifest.update(status="done", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             **fields)
        self.save()

    def save(self) -> None:
        if self.write:
            atomic_write_json(self.path / "manifest.json", self.manifest)
