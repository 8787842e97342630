"""Pictures people would rather look at than read: quality vs density, accuracy heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def density_curve(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> Path:
    """One line per scorer: ``metric`` against achieved density; dense as a horizontal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for scorer in sorted({r["scorer"] for r in rows} - {"dense"}):
        pts = sorted((r["density"], r[metric]) for r in rows if r["scorer"] == scorer)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=scorer)
    for r in rows:
        if r["scorer"] == "dense":
            ax.axhline(r[metric], color="black", linestyle="--", label="dense")
    ax.set_xlabel("achieved block density")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def heatmap(matrix: list[list[float]], rows: list[str], cols: list[str], path: Path, title: str,
            xlabel: str, ylabel: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(cols), 1 + 0.5 * len(rows)))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.5 else "black", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
