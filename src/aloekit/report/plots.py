"""The report's charts as base64 PNG strings (embedded in the HTML: the report is one self-contained file).

Figures are drawn on matplotlib's Agg canvas directly, without pyplot, so no global backend or figure state is
touched; PNGs carry no software metadata, so the same run gives the same bytes.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def to_b64(fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def grouped_bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
                 horizontal: bool = False, limits: tuple[float, float] | None = (0, 100)) -> str:
    """One group of bars per label, one bar per series (missing values are left out, not drawn as 0). The value
    axis is fixed to `limits` (percentages by default), so all-zero or near-equal results are not magnified."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    long = max(3.0, 0.35 * len(groups) * n + 1.0)
    fig = _figure(8, long) if horizontal else _figure(min(12.0, max(6.0, 0.4 * len(groups) * n + 2.0)), 4)
    ax = fig.subplots()
    for i, (name, vals) in enumerate(series.items()):
        pos = [p + (i - (n - 1) / 2) * width for p, v in zip(x, vals) if v is not None]
        val = [v for v in vals if v is not None]
        if horizontal:
            ax.barh(pos, val, height=width, label=name)
        else:
            ax.bar(pos, val, width=width, label=name)
    if horizontal:
        ax.set_yticks(x, groups, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
        ax.set_xlim(limits)
        ax.grid(True, axis="x", alpha=0.3)
    else:
        ax.set_xticks(x, groups, rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center",
                      fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_ylim(limits)
        ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return to_b64(fig)


def stacked_funnel(steps: list[str], per_source: dict[str, list[int]]) -> str:
    """Rows per source after each data step, stacked."""
    fig = _figure(8, 4)
    ax = fig.subplots()
    bottom = np.zeros(len(steps))
    for source, counts in per_source.items():
        ax.bar(steps, counts, bottom=bottom, label=source)
        bottom += np.asarray(counts, dtype=float)
    ax.set_ylabel("rows")
    ax.set_title("Data funnel: rows per source after each step")
    ax.tick_params(axis="x", labelrotation=25, labelsize=8)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", alpha=0.3)
    return to_b64(fig)


def medprompt(summaries: dict[str, dict], title: str) -> str:
    """The Medprompt stage's own accuracy-vs-tokens plot, rendered here from its results.json."""
    from ..medprompt.plot import plot_accuracy_vs_tokens
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_accuracy_vs_tokens({k: v for k, v in summaries.items() if v.get("n")},
                                       Path(tmp) / "medprompt.png", title)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def seconds_per_stage(names: list[str], seconds: list[float]) -> str:
    fig = _figure(8, max(2.5, 0.32 * len(names) + 1.0))
    ax = fig.subplots()
    ax.barh(names, seconds, color="#4f6fa8")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("Compute: wall time per stage")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    return to_b64(fig)
