"""Where a sparse layer spends its GPU time at one length: top CUDA kernels of whole layer calls (torch.profiler).

    python benchmarks/profile_overhead.py --seq-len 32768 --density 0.1 --block-size 64 --q-block-size 128 --backend flash
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from seerflex import RuntimeOptions, SeerFlexAttention, SeerFlexConfig, TopK
from seerflex.runtime import Runtime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq-len", type=int, default=32768)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--block-size", type=int, default=64)
    p.add_argument("--q-block-size", type=int, default=None)
    p.add_argument("--backend", default="auto")
    args = p.parse_args()
    s, dev = args.seq_len, torch.device("cuda")
    q = torch.randn(1, 32, s, 128, device=dev, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 8, s, 128, device=dev, dtype=torch.bfloat16) for _ in range(2))
    cfg = SeerFlexConfig(policy=TopK(density=args.density), block_size=args.block_size, q_block_size=args.q_block_size)
    runtime = Runtime(RuntimeOptions(compile="static", backend=args.backend, dense_below=0, check_finite=False))
    layer = SeerFlexAttention(cfg, 32, 8, 128, runtime=runtime).to(dev, torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):  # compile and warm up
            layer(q, k, v)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                layer(q, k, v)
            torch.cuda.synchronize()
    print(f"== layer {cfg.q_block_size}x{cfg.block_size}, backend {args.backend}, S={s}, d={args.density}, 5 calls")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=80))


if __name__ == "__main__":
    main()
