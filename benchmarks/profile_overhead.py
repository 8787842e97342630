"""Where the gate and the policy spend their time at one length: top CUDA kernels (torch.profiler).

    python benchmarks/profile_overhead.py --seq-len 131072 --density 0.1
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from seerflex import BlockLayout, SeerFlexAttention, SeerFlexConfig, TopK


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq-len", type=int, default=131072)
    p.add_argument("--density", type=float, default=0.1)
    p.add_argument("--block-size", type=int, default=64)
    args = p.parse_args()
    s, dev = args.seq_len, torch.device("cuda")
    q = torch.randn(1, 32, s, 128, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, 8, s, 128, device=dev, dtype=torch.bfloat16)
    cfg = SeerFlexConfig(policy=TopK(density=args.density), block_size=args.block_size)
    layer = SeerFlexAttention(cfg, 32, 8, 128).to(dev, torch.bfloat16)
    layout = BlockLayout(s, args.block_size)
    with torch.no_grad():
        for _ in range(3):  # compile and warm up
            scores = layer.gate(q, k, layout)
            layer.policy.select(scores, layout)
        torch.cuda.synchronize()
        for name, fn in (("gate", lambda: layer.gate(q, k, layout)), ("policy", lambda: layer.policy.select(scores, layout))):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                torch.cuda.synchronize()
            print(f"== {name}, S={s}, 5 calls")
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=70))


if __name__ == "__main__":
    main()
