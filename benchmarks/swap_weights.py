"""Distillation layer weights from single-layer swaps: 1 + SCALE x the share of the gates' perplexity gap that the
swap scorer closes in that layer alone (negative shares count 0), printed as a `layer_weights=` mapping.

    python benchmarks/swap_weights.py DIR/layer_swap.json 8   ->   {16: 1.0, 17: 2.6, ...}

Rows of more than one layer, or of chosen heads, are left out. Why: on SmolLM2 one layer held half the gap that
recall did not show (RESULTS.md), and `distill layer_weights` gives such layers more of the gates' loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def weights(rows: list[dict], scale: float) -> dict[int, float]:
    single = [r for r in rows if len(r["layers"]) == 1 and r.get("heads") is None and r["swapped"].isdigit()]
    if not single:
        raise ValueError("no single-layer rows: run layer_swap.py with sets=0;1;2;...")
    return {r["layers"][0]: round(1 + scale * max(0.0, r["gap_closed"]), 3) for r in single}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: swap_weights.py LAYER_SWAP_JSON SCALE")
    print(json.dumps(weights(json.loads(Path(sys.argv[1]).read_text())["rows"], float(sys.argv[2]))).replace('"', ""))
