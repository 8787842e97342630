"""Performance experiments on the GPU: flex kernel options/compile modes and overhead compile modes.

Run: python benchmarks/perf_experiments.py --out results.json [--only flex|overhead]
Same mask and inputs for every variant; dynamo is reset between variants. Each row says what ran.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from torch.nn.attention.flex_attention import flex_attention

from seerflex import BlockLayout, SeerFlexAttention, SeerFlexConfig, TopK, build_block_mask
from seerflex.block_masks import compact_indices
from seerflex.flex import dense_attention
from seerflex.recipes.bench_kernel import timed
from seerflex.recipes.common import environment, print_table, write_json

BASE = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
FLEX_VARIANTS: list[tuple[str, bool, dict[str, Any]]] = [
    ("w4 s2 static", False, BASE),
    ("w4 s2 dynamic", True, BASE),
    ("w4 s2 TMA", False, BASE | {"USE_TMA": True}),
    ("w4 s2 rows-safe", False, BASE | {"ROWS_GUARANTEED_SAFE": True}),
    ("w4 s2 prescale", False, BASE | {"PRESCALE_QK": True}),
    ("N32 w4 s2", False, BASE | {"BLOCK_N": 32}),
    ("N32 w4 s3", False, BASE | {"BLOCK_N": 32, "num_stages": 3}),
    ("w4 s2 TMA rows-safe dynamic", True, BASE | {"USE_TMA": True, "ROWS_GUARANTEED_SAFE": True}),
]


def run(rows: list, s: int, name: str, fn: Callable[[], Any], ref_ms: float | None = None) -> None:
    try:
        ms = timed(fn)
        rows.append({"seq_len": s, "variant": name, "ms": ms} | ({"ratio": ms / ref_ms} if ref_ms else {}))
    except Exception as err:  # a config the kernel rejects is a result too
        rows.append({"seq_len": s, "variant": name, "error": f"{type(err).__name__}: {str(err)[:300]}"})
    print(rows[-1], flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--only", choices=["flex", "overhead"])
    p.add_argument("--out", default="perf_experiments.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    torch.set_grad_enabled(False)
    for s in args.lengths:
        q, k, v = (torch.randn(1, h, s, 128, device="cuda", dtype=torch.bfloat16) for h in (32, 8, 8))
        layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.1), dense_below=0), 32, 8, 128).cuda().bfloat16()
        layout = BlockLayout(s, 64)
        scores = layer.gate(q, k, layout)
        kept = layer.policy.select(scores, layout).kept
        bm = build_block_mask(kept, layout)
        sdpa = timed(lambda: dense_attention(q, k, v))
        rows.append({"seq_len": s, "variant": "sdpa dense", "ms": sdpa})
        if args.only in (None, "flex"):
            for name, dynamic, opts in FLEX_VARIANTS:
                torch._dynamo.reset()
                fn = torch.compile(flex_attention, dynamic=dynamic)
                run(rows, s, f"flex {name}",
                    lambda: fn(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts), 0.1 * sdpa)
        if args.only in (None, "overhead"):
            run(rows, s, "gate eager", lambda: layer.gate(q, k, layout))
            run(rows, s, "policy eager", lambda: layer.policy.select(scores, layout).kept)
            run(rows, s, "build eager", lambda: build_block_mask(kept, layout))
            run(rows, s, "compact eager", lambda: compact_indices(kept))
            for dynamic in (False, True):
                torch._dynamo.reset()
                gate = torch.compile(layer.gate, dynamic=dynamic)
                select = torch.compile(lambda sc: layer.policy.select(sc, layout).kept, dynamic=dynamic)
                compact = torch.compile(compact_indices, dynamic=dynamic)
                run(rows, s, f"gate compiled dyn={dynamic}", lambda: gate(q, k, layout))
                run(rows, s, f"policy compiled dyn={dynamic}", lambda: select(scores))
                run(rows, s, f"compact compiled dyn={dynamic}", lambda: compact(kept))
            run(rows, s, "layer total (eager pipeline)", lambda: layer(q, k, v), 0.1 * sdpa)
        write_json(args.out, {"environment": environment(), "rows": rows})
    print_table("perf experiments (ratio: vs 0.1 x SDPA dense)", ["seq_len", "variant", "ms", "ratio", "error"],
                [[r.get(c, "") for c in ("seq_len", "variant", "ms", "ratio", "error")] for r in rows])


if __name__ == "__main__":
    main()
