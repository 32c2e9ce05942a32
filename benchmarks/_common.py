"""Shared bits for benchmarks: results files and machine info."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def data_dir() -> Path:
    """Shared benchmark data: $ALOEKIT_DATA_DIR, else ../shared/data beside the checkout (whatever the cwd)."""
    return Path(os.environ.get("ALOEKIT_DATA_DIR") or REPO.parent / "shared" / "data")


def machine() -> dict:
    import torch
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            # other work on the machine slows a timing down: a reader can tell a busy run from an idle one
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def git_sha() -> str:
    import subprocess
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def write(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    import sys
    # the command line that made the file, so that it can be reproduced as it was
    head = {"machine": machine(), "git": git_sha(), "argv": [Path(sys.argv[0]).name, *sys.argv[1:]]}
    (RESULTS / f"{name}.json").write_text(json.dumps({**head, **payload}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def spread(xs: list[float], nd: int = 2) -> dict:
    """Median and min-max of repeated runs: the shape every timing in a results file takes."""
    import statistics
    return {"median": round(statistics.median(xs), nd), "min": round(min(xs), nd), "max": round(max(xs), nd),
            "runs": [round(x, nd) for x in xs]}


def fmt(s: dict, unit: str = "") -> str:
    return f"{s['median']}{unit} ({s['min']}–{s['max']})"
