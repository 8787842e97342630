"""Issue 15's per-model tables (benchmarks/gpu_qwen.sh for Qwen2.5-Coder-0.5B, the CPU runs for SmolLM2) as Markdown.

    python benchmarks/model_table.py benchmarks/results/qwen_h200_2026-12-02
    python benchmarks/model_table.py benchmarks/results/smollm2_table_cpu_2026-12-02   (SmolLM2, 8k, CPU)

Perplexity rise over dense per held-out domain for every scorer at top-k 0.05 / 0.1 / 0.2 (one rule, so equal
achieved density: only the ranking differs), the cumulative-mass rule calibrated to 0.1 where it was run, and the
RULER-style averages at 16k / 32k.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOMAINS = ("prose", "docs", "code")
SCORERS = ("gate", "xattention", "flexprefill", "vertical_slash", "pooled", "oracle", "oracle_max")
NAMES = {"gate": "learned gates", "xattention": "XAttention", "flexprefill": "FlexPrefill",
         "vertical_slash": "MInference vertical-slash", "pooled": "pooled Q.K", "oracle": "oracle (block mass)",
         "oracle_max": "oracle (block max)", "dense": "dense"}


def rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def main(folder: Path) -> None:
    topk = {d: rows(folder / f"ppl_topk_{d}" / "ppl.json") for d in DOMAINS}
    dense = {d: next(r["ppl"] for r in topk[d] if r["scorer"] == "dense") for d in DOMAINS}
    for policy in ("topk:0.1", "topk:0.05", "topk:0.2"):
        density = next(r["density"] for r in topk["code"] if r["policy"] == policy)
        print(f"\n| {policy} (achieved d = {density:.3f}) | " + " | ".join(DOMAINS) + " |")
        print("| --- |" + " --- |" * len(DOMAINS))
        print("| dense | " + " | ".join(f"{dense[d]:.3f}" for d in DOMAINS) + " |")
        for s in (s for s in SCORERS if all(any(r["scorer"] == s for r in topk[d]) for d in DOMAINS)):
            cells = []
            for d in DOMAINS:
                p = next(r["ppl"] for r in topk[d] if r["scorer"] == s and r["policy"] == policy)
                cells.append(f"{p:.3f} ({100 * (p / dense[d] - 1):+.1f}%)")
            print(f"| {NAMES[s]} | " + " | ".join(cells) + " |")
    if list(folder.glob("ppl_topp_*/ppl.json")):
        calibrated(folder, dense)
    ruler = [r for sub in ("ruler", "ruler_oracle", "ruler_gate_topp") for r in rows(folder / sub / "ruler.json")]
    if ruler:
        lengths = sorted(ruler[0]["by_length"], key=int)
        print("\n| RULER-style average | policy | density | " + " | ".join(lengths) + " | mean |")
        print("| --- | --- | --- |" + " --- |" * (len(lengths) + 1))
        for r in ruler:
            print(f"| {NAMES[r['scorer']]} | {r['policy']} | {r['density']:.3f} | "
                  + " | ".join(f"{r['by_length'][n]:.3f}" for n in lengths) + f" | {r['average']:.3f} |")


def calibrated(folder: Path, dense: dict[str, float]) -> None:
    """The cumulative-mass rule calibrated to 0.1, one run per (domain, scorer)."""
    print("\n| cumulative-mass rule calibrated to 0.1 | " + " | ".join(DOMAINS) + " |")
    print("| --- |" + " --- |" * len(DOMAINS))
    for s in ("gate", "xattention", "oracle"):
        cells = []
        for d in DOMAINS:
            r = rows(folder / f"ppl_topp_{d}_{s}" / "ppl.json")
            cells.append(f"{r[0]['ppl']:.3f} ({100 * (r[0]['ppl'] / dense[d] - 1):+.1f}%, d {r[0]['density']:.3f})"
                         if r else "-")
        print(f"| {NAMES[s]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
