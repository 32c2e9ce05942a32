"""Where aloekit reads shared benchmark data from."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


def data_dir(explicit: str | os.PathLike | None = None, required: bool = True) -> Path | None:
    """`--data-dir`, else $ALOEKIT_DATA_DIR, else ../shared/data (the layout beside a checkout)."""
    p = Path(explicit or os.environ.get("ALOEKIT_DATA_DIR") or "../shared/data").expanduser()
    if p.is_dir():
        return p
    if required:
        raise UserError(f"data directory {p} does not exist: pass --data-dir or set ALOEKIT_DATA_DIR")
    return None
