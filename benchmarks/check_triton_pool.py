"""GPU check of the gate's Triton pooling (seerflex::block_pool): eager and inside torch.compile, against
float64 PyTorch pooling, at the gate's Q and K shapes; prints and writes JSON.

    python benchmarks/check_triton_pool.py --out check.json
"""

from __future__ import annotations

import argparse
import json

import torch

from seerflex.gates import triton_pool
from seerflex.gates.pooling import block_pool


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for s in (32768, 131072):
        for heads, pools, bs in ((32, ("avg",), 128), (8, ("max", "min", "avg"), 64), (8, ("max", "min", "avg"), 128)):
            x = torch.randn(1, s, heads, 128, device="cuda", dtype=torch.bfloat16).transpose(1, 2)  # HF layout view
            ref = block_pool(x.double(), pools, bs, None)
            for mode in ("eager", "compiled"):
                fn = block_pool if mode == "eager" else torch.compile(block_pool, fullgraph=True)
                with torch.no_grad():
                    out = fn(x, pools, bs, None)
                rows.append({"seq_len": s, "heads": heads, "pools": pools, "block": bs, "mode": mode,
                             "kernel_used": triton_pool.usable(x, bs),
                             "max_abs_err": float((out.double() - ref).abs().max()),
                             "ref_max_abs": float(ref.abs().max())})
                print(rows[-1])
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, open(args.out, "w"),
              indent=1)


if __name__ == "__main__":
    main()
