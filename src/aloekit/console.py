"""One place for terminal output: results go to stdout, progress and notes to stderr (quiet-able)."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
QUIET = False


def set_quiet(quiet: bool) -> None:
    global QUIET
    QUIET = quiet


def note(msg: str) -> None:
    if not QUIET:
        err.print(msg, highlight=False)


def warn(msg: str) -> None:
    """A warning the user must see even with --quiet (it changes what a result means)."""
    err.print(f"warning: {msg}", highlight=False, markup=False)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr; `advance(n)` on the yielded object. Silent with --quiet."""
    if QUIET:
        class _Null:
            def advance(self, n: int = 1) -> None:
                pass
        yield _Null()
        return
    p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TimeRemainingColumn(), console=err, transient=False)
    with p:
        task = p.add_task(description, total=total)

        class _Bar:
            def advance(self, n: int = 1) -> None:
                p.advance(task, n)
        yield _Bar()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    items = list(items) if total is None else items
    with progress(description, total if total is not None else len(items)) as bar:  # type: ignore[arg-type]
        for x in items:
            yield x
            bar.advance()
