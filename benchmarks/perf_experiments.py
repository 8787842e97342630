"""Performance experiments on the GPU, one question per section (v3).

Run: python benchmarks/perf_experiments.py --out results.json [--only blocks|order|topk]
- blocks: 64- vs 128-token blocks at equal density, with kernel tile options for each.
- order: the sparse kernel over the same kept tiles listed in priority order (the fast-path
  BlockMask) vs ascending order (stream compaction).
- topk: the policy's row ranking, partial top-k vs full argsort, at each length.
Same inputs for every variant; dynamo is reset between kernel variants. Each row says what ran.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from torch.nn.attention.flex_attention import flex_attention

from seerflex import BlockLayout, SeerFlexAttention, SeerFlexConfig, TopK, build_block_mask
from seerflex.block_mask import block_mask_from_selection
from seerflex.flex import dense_attention
from seerflex.recipes.bench_kernel import timed
from seerflex.recipes.common import environment, print_table, write_json

TILES: dict[int, list[tuple[str, dict[str, Any]]]] = {
    64: [("64x64 w4 s2", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}),
         ("64x64 w4 s2 rows-safe", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2,
                                    "ROWS_GUARANTEED_SAFE": True})],
    128: [("64x64 w4 s2", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}),
          ("128x64 w4 s2", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}),
          ("128x64 w8 s2", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}),
          ("128x64 w8 s3", {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}),
          ("128x128 w8 s2", {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2})],
}


def run(rows: list, s: int, name: str, fn: Callable[[], Any], ref_ms: float | None = None, **extra: Any) -> None:
    try:
        ms = timed(fn)
        rows.append({"seq_len": s, "variant": name, "ms": ms} | ({"ratio": ms / ref_ms} if ref_ms else {}) | extra)
    except Exception as err:  # a config the kernel rejects is a result too
        rows.append({"seq_len": s, "variant": name, "error": f"{type(err).__name__}: {str(err)[:300]}"})
    print(rows[-1], flush=True)


def selection_for(q: torch.Tensor, k: torch.Tensor, block_size: int, density: float):
    layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=density), block_size=block_size),
                              32, 8, 128).cuda().bfloat16()
    layout = BlockLayout(q.shape[2], block_size)
    scores = layer.gate(q, k, layout)
    return layer, layout, scores, layer.policy.select(scores, layout)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 131072])
    p.add_argument("--only", choices=["blocks", "order", "topk"])
    p.add_argument("--out", default="perf_experiments.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    torch.set_grad_enabled(False)
    for s in args.lengths:
        q, k, v = (torch.randn(1, h, s, 128, device="cuda", dtype=torch.bfloat16) for h in (32, 8, 8))
        sdpa = timed(lambda: dense_attention(q, k, v))
        rows.append({"seq_len": s, "variant": "sdpa dense", "ms": sdpa})
        if args.only in (None, "blocks"):
            for bs, tiles in TILES.items():
                _, layout, _, selection = selection_for(q, k, bs, 0.1)
                bm = block_mask_from_selection(selection, layout)
                density = float(selection.count.sum()) / (layout.num_blocks * (layout.num_blocks + 1) / 2 * 32)
                for name, opts in tiles:
                    torch._dynamo.reset()
                    fn = torch.compile(flex_attention)
                    run(rows, s, f"kernel block {bs}, {name}",
                        lambda: fn(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts), density * sdpa,
                        density=density)
        if args.only in (None, "order"):
            _, layout, _, selection = selection_for(q, k, 64, 0.1)
            opts = TILES[64][0][1]
            fn = torch.compile(flex_attention)
            for name, bm in (("priority order", block_mask_from_selection(selection, layout)),
                             ("ascending order", build_block_mask(selection.kept, layout))):
                run(rows, s, f"kernel 64, {name}", lambda: fn(q, k, v, block_mask=bm, enable_gqa=True,
                                                               kernel_options=opts))
        if args.only in (None, "topk"):
            _, layout, scores, selection = selection_for(q, k, 64, 0.1)
            bound = selection.order.shape[-1]
            run(rows, s, f"rank rows: topk {bound}", lambda: scores.topk(bound, dim=-1))
            run(rows, s, "rank rows: argsort", lambda: scores.argsort(dim=-1, descending=True))
            run(rows, s, "rank rows: topk bf16", lambda: scores.bfloat16().topk(bound, dim=-1))
        write_json(args.out, {"environment": environment(), "rows": rows})
    cols = ["seq_len", "variant", "ms", "ratio", "density", "error"]
    print_table("perf experiments (ratio: vs density x SDPA dense)", cols, [[r.get(c, "") for c in cols] for r in rows])


if __name__ == "__main__":
    main()
