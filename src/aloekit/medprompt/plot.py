"""Accuracy against generated tokens per question, one point per strategy: what each point of accuracy costs."""

from __future__ import annotations

import os
from pathlib import Path


def plot_accuracy_vs_tokens(summaries: dict[str, dict], path: str | os.PathLike, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, s in summaries.items():
        x, y = s["generated_tokens_per_question"], 100 * s["accuracy"]
        ax.scatter([x], [y], s=40)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("generated tokens per question")
    ax.set_ylabel("accuracy (%)")
    n = next(iter(summaries.values()), {}).get("n", 0)
    ax.set_title(f"{title} (n={n})" if title else f"n={n}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
