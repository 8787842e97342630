"""Perplexity of one adapter run on several block shapes, read at equal achieved density by linear
interpolation between each shape's two top-k points (benchmarks/results/blockshape_cpu_2026-12-01/).

    python benchmarks/blockshape_table.py benchmarks/results/blockshape_cpu_2026-12-01 0.12
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def at_density(points: list[tuple[float, float]], d: float) -> float | None:
    (d0, p0), (d1, p1) = sorted(points)[:2]
    if not min(d0, d1) - 0.03 <= d <= max(d0, d1) + 0.03:
        return None  # too far outside the measured span to say
    return p0 + (p1 - p0) * (d - d0) / (d1 - d0)


def main() -> None:
    folder, d = Path(sys.argv[1]), float(sys.argv[2])
    table = {}
    for path in sorted(folder.glob("ppl_*/ppl.json")):
        _, text, shape = path.parent.name.split("_")
        rows = json.loads(path.read_text())["rows"]
        dense = next((r["ppl"] for r in rows if r["scorer"] == "dense"), None)
        for scorer in sorted({r["scorer"] for r in rows} - {"dense"}):
            pts = [(r["density"], r["ppl"]) for r in rows if r["scorer"] == scorer]
            table[(text, shape, scorer)] = (at_density(pts, d), pts, dense)
    print(f"perplexity at achieved density {d} (linear between each shape's two top-k points)")
    for (text, shape, scorer), (ppl, pts, dense) in sorted(table.items()):
        print(f"{text:6s} {shape:8s} {scorer:11s} {'-' if ppl is None else f'{ppl:.3f}':>7s}  points "
              + ", ".join(f"{p:.3f}@{q:.3f}" for q, p in pts))


if __name__ == "__main__":
    main()
