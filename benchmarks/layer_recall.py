"""Where the learned gates lose, per layer and head: `seerflex eval sparsity` runs of several scorers side by side.

    python benchmarks/layer_recall.py OUT_DIR gate=DIR xattention=DIR oracle=DIR

Each DIR holds one scorer's `sparsity.json` (same model, window, text and policy). Prints a Markdown table of the
recall of the block-mass map per layer (the share of each query block's attention that the kept blocks hold) with, in
brackets, the share of query blocks that keep under half of theirs (a mean hides such rows) and after it the free
recall (the share of the mass beyond the always-on blocks that the chosen blocks hold: the part a scorer decides),
the heads furthest below the oracle in recall, lost rows and free recall, and writes `layer_recall.png` (recall per
layer), `gate_gap.png` (oracle minus gates per layer and head), `lost_gap.png` (the gates' lost rows minus the
oracle's) and `free_gap.png` (the oracle's free recall minus the gates') to OUT_DIR.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

from seerflex.evaluation.plots import heatmap

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(folder: str) -> dict:
    data = json.loads((Path(folder) / "sparsity.json").read_text())
    return {"args": data["args"], "rows": sorted(data["rows"], key=lambda r: r["layer"])}


def main(out: Path, runs: dict[str, dict]) -> None:
    names = list(runs)
    layers = [r["layer"] for r in runs[names[0]]["rows"]]
    recall = {n: [r["recall"] for r in runs[n]["rows"]] for n in names}
    lost = {n: [r.get("lost_rows") for r in runs[n]["rows"]] for n in names}  # absent in runs before 2026-12-03
    free = {n: [r.get("free_recall") for r in runs[n]["rows"]] for n in names}  # absent before 2026-12-03 evening
    args = runs[names[0]]["args"]
    print(f"recall of the block-mass map per layer, {args['policy']}, window {args['window']}, {args['text']}\n")
    print("cells: recall (share of query blocks keeping under half their mass) free recall\n")
    print("| layer | " + " | ".join(names) + (" | oracle - gate |" if {"gate", "oracle"} <= set(names) else " |"))
    print("| --- |" + " --- |" * (len(names) + ({"gate", "oracle"} <= set(names))))
    for i, layer in enumerate(layers):
        cells = [f"{recall[n][i]:.3f}" + ("" if lost[n][i] is None else f" ({100 * lost[n][i]:.0f}%)")
                 + ("" if free[n][i] is None else f" {free[n][i]:.2f}") for n in names]
        if {"gate", "oracle"} <= set(names):
            cells.append(f"{recall['oracle'][i] - recall['gate'][i]:+.3f}")
        print(f"| {layer} | " + " | ".join(cells) + " |")
    means = [sum(recall[n]) / len(layers) for n in names]
    cells = [f"{m:.3f}" + ("" if None in lost[n] else f" ({100 * sum(lost[n]) / len(layers):.0f}%)")
             + ("" if None in free[n] else f" {sum(free[n]) / len(layers):.2f}") for n, m in zip(names, means)]
    if {"gate", "oracle"} <= set(names):
        cells.append(f"{means[names.index('oracle')] - means[names.index('gate')]:+.3f}")
    print("| mean | " + " | ".join(cells) + " |")
    fig, ax = plt.subplots(figsize=(8, 4))
    for n in names:
        ax.plot(layers, recall[n], marker="o", markersize=3, label=n)
    ax.set_xlabel("layer")
    ax.set_ylabel("recall of the block-mass map")
    ax.set_title(f"{args['model']}, {args['policy']}, {args['window']} tokens", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "layer_recall.png", dpi=120)
    plt.close(fig)
    if {"gate", "oracle"} <= set(names):
        gap_map(runs, layers, "recall_per_head", "oracle", out / "gate_gap.png", "oracle recall minus gate recall",
                "\nheads furthest below the oracle (layer, head: oracle - gate)", ".3f")
        gap_map(runs, layers, "lost_rows_per_head", "gate", out / "lost_gap.png",  # the rows a mean hides, per head
                "gate minus oracle: share of query blocks keeping under half their mass",
                "heads losing the most rows beyond the oracle (layer, head: gate - oracle share of rows under half "
                "their mass)", ".2f")
        gap_map(runs, layers, "free_recall_per_head", "oracle", out / "free_gap.png",  # the part the scorers decide
                "oracle minus gate: free recall (mass beyond the always-on blocks)",
                "heads furthest below the oracle in free recall (layer, head: oracle - gate)", ".2f")


def gap_map(runs: dict[str, dict], layers: list[int], key: str, ahead: str, path: Path, title: str, label: str,
            fmt: str) -> None:
    """One per-head statistic, ``ahead`` (gate or oracle) minus the other: the 8 largest gaps printed, a heatmap
    saved. Runs older than the statistic lack it and are skipped."""
    if not all(key in runs[n]["rows"][0] for n in ("gate", "oracle")):
        return
    behind = "gate" if ahead == "oracle" else "oracle"
    gaps = [[a - b for a, b in zip(ra[key], rb[key])] for ra, rb in zip(runs[ahead]["rows"], runs[behind]["rows"])]
    most = sorted(((gap, layer, h) for layer, row in zip(layers, gaps) for h, gap in enumerate(row)), reverse=True)
    print(f"{label}: " + ", ".join(f"{layer}.{h}: {gap:+{fmt}}" for gap, layer, h in most[:8]))
    heatmap(gaps, [str(layer) for layer in layers], [str(h) for h in range(len(gaps[0]))], path, title, "head",
            "layer", vmax=max(0.05, most[0][0]))

if __name__ == "__main__":
    if len(sys.argv) < 3 or not all("=" in a for a in sys.argv[2:]):
        sys.exit("usage: layer_recall.py OUT_DIR scorer=DIR [scorer=DIR ...]")
    main(Path(sys.argv[1]), {a.split("=", 1)[0]: load(a.split("=", 1)[1]) for a in sys.argv[2:]})
