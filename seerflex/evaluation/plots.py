"""Pictures people would rather look at than read: quality vs density, accuracy heatmaps."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, *, tight: bool) -> Path:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def density_curve(rows: list[dict[str, Any]], metric: str, path: Path, title: str) -> Path:
    """``metric`` against achieved density: a line per scorer through its top-k points, other policy
    kinds (calibrated top-p/threshold, budgets) as separate markers; dense as a horizontal line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"topp": "s", "threshold": "^", "budget": "D", "adapter": "*"}
    for ci, scorer in enumerate(sorted({r["scorer"] for r in rows} - {"dense"})):
        color = f"C{ci}"
        for kind in sorted({r["policy"].split(":")[0] for r in rows if r["scorer"] == scorer}):
            pts = sorted((r["density"], r[metric]) for r in rows
                         if r["scorer"] == scorer and r["policy"].split(":")[0] == kind)
            label = scorer if kind == "topk" else f"{scorer} {kind}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, label=label,
                    marker=markers.get(kind, "o"), linestyle="-" if kind == "topk" else "none")
    for r in rows:
        if r["scorer"] == "dense":
            ax.axhline(r[metric], color="black", linestyle="--", label="dense")
    ax.set_xlabel("achieved block density")
    ax.set_ylabel(metric)
    ax.set_title(textwrap.fill(title, 80), fontsize=10)  # long text specs clipped the title
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path, tight=True)


def heatmap(matrix: list[list[float]], rows: list[str], cols: list[str], path: Path, title: str,
            xlabel: str, ylabel: str, vmax: float = 1.0, fmt: str = ".2f") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(16, 1 + 0.6 * len(cols)), min(16, 1 + 0.5 * len(rows))))
    im = ax.imshow(matrix, vmin=0, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    if len(rows) * len(cols) <= 400:  # numbers only where they stay readable
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, format(v, fmt), ha="center", va="center", color="white" if v < vmax / 2 else "black", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 48), fontsize=9)  # narrow heatmaps clipped long titles
    fig.colorbar(im, ax=ax)
    return _save(fig, path, tight=True)


def block_maps(gate: list[list[float]], truth: list[list[float]], path: Path, title: str) -> Path:
    """Gate softmax next to the ground-truth block map (log colour scale: the mass spans decades)."""
    import matplotlib.colors as colors

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, data, name in zip(axes, (gate, truth), ("gate softmax", "ground truth")):
        im = ax.imshow(data, norm=colors.LogNorm(vmin=1e-4, vmax=1), cmap="magma")
        ax.set_title(name)
        ax.set_xlabel("key block")
        ax.set_ylabel("query block")
    fig.colorbar(im, ax=axes)
    fig.suptitle(title)
    return _save(fig, path, tight=False)  # tight_layout fights the shared colour bar


def bars(labels: list[str], values: list[float], path: Path, title: str, ylabel: str) -> Path:
    """One bar per label, values in [0, 1] (accuracies)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(labels), 3.8))
    ax.bar(range(len(labels)), values, color=[f"C{i}" for i in range(len(labels))])
    ax.set_xticks(range(len(labels)), [textwrap.fill(label, 14) for label in labels], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 48), fontsize=9)
    return _save(fig, path, tight=True)


def length_curve(rows: list[dict[str, Any]], lengths: list[int], path: Path, title: str) -> Path:
    """Average accuracy against prompt length: one line per (scorer, policy) row (``row["by_length"]``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(rows):
        label = r["scorer"] if r["policy"] == "-" else f"{r['scorer']} {r['policy']} (d={r['density']:.3f})"
        ax.plot(lengths, [r["by_length"][str(n)] for n in lengths], marker="o", color="black" if r["scorer"] == "dense"
                else f"C{i}", linestyle="--" if r["scorer"] == "dense" else "-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths])
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("\n".join(textwrap.wrap(title, 70)))
    ax.legend(fontsize=8)
    return _save(fig, path, tight=True)
