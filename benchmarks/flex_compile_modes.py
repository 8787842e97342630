"""Which torch.compile mode and kernel options make the sparse flex kernel fast (H100 experiment).

Run: python benchmarks/flex_compile_modes.py --out results.json
Same mask and inputs for every variant; dynamo is reset between compile modes.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from torch.nn.attention.flex_attention import flex_attention

from seerflex import BlockLayout, SeerFlexAttention, SeerFlexConfig, TopK, build_block_mask
from seerflex.flex import dense_attention
from seerflex.recipes.bench_kernel import timed
from seerflex.recipes.common import environment, print_table, write_json


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768])
    p.add_argument("--out", default="flex_compile_modes.json")
    args = p.parse_args()
    rows = []
    for s in args.lengths:
        q, k, v = (torch.randn(1, h, s, 128, device="cuda", dtype=torch.bfloat16) for h in (32, 8, 8))
        layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.1), dense_below=0), 32, 8, 128).cuda().bfloat16()
        layout = BlockLayout(s, 64)
        with torch.no_grad():
            kept = layer.policy.select(layer.gate(q, k, layout), layout).kept
        bm = build_block_mask(kept, layout)
        sdpa = timed(lambda: dense_attention(q, k, v))
        rows.append({"seq_len": s, "variant": "sdpa dense", "ms": sdpa})
        variants = [("dynamic=False", False, {"BLOCK_M": 64, "BLOCK_N": 64})]
        variants += [("dynamic=True", True, {"BLOCK_M": 64, "BLOCK_N": 64})]
        for warps, stages in itertools.product((4, 8), (1, 2, 3, 4)):
            variants.append((f"static w{warps} s{stages}", False,
                             {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": warps, "num_stages": stages}))
        for name, dynamic, opts in variants:
            torch._dynamo.reset()
            fn = torch.compile(flex_attention, dynamic=dynamic)
            try:
                with torch.no_grad():
                    ms = timed(lambda: fn(q, k, v, block_mask=bm, enable_gqa=True, kernel_options=opts))
                rows.append({"seq_len": s, "variant": name, "ms": ms, "vs_density_x_sdpa": ms / (0.1 * sdpa)})
            except Exception as err:  # a tile config the kernel rejects is a result too
                rows.append({"seq_len": s, "variant": name, "error": str(err)[:300]})
            print(rows[-1], flush=True)
        write_json(args.out, {"environment": environment(), "rows": rows})
    print_table("sparse flex kernel, density 0.1", ["seq_len", "variant", "ms", "vs_density_x_sdpa"],
                [[r.get(c, "") for c in ("seq_len", "variant", "ms", "vs_density_x_sdpa")] for r in rows])


if __name__ == "__main__":
    main()
