"""Block pooling in one pass on CUDA: a Triton kernel registered as a torch custom op (``seerflex::block_pool``).

Inductor's fused reduction ran the gate's K pooling (max, min and mean over 64-token blocks) at 0.4 TB/s
on an H200: 0.14 ms at 32k, 0.56 ms at 128k (8 KV heads, head 128). One program per block that reads
its [block, head_dim] tile once and writes every pool took 0.07 / 0.25 ms
(``benchmarks/results/2026-12-01_h200_perf_select2.json``). As a ``triton_op`` it sits inside the
layer's compiled graph. Unpadded whole blocks without gradients only; ``pooling.block_pool`` routes the rest
to PyTorch.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

CODES = {"max": 0, "min": 1, "avg": 2}
TRITON = importlib.util.find_spec("triton") is not None


def usable(x: Tensor, block_size: int) -> bool:
    """The kernel covers ``x`` [B, H, S, D]: CUDA, whole blocks, power-of-two sizes, no gradient to carry."""
    d = x.shape[-1]
    return (TRITON and x.is_cuda and x.shape[2] % block_size == 0 and d & (d - 1) == 0 and 16 <= d <= 256
            and block_size & (block_size - 1) == 0 and not (torch.is_grad_enabled() and x.requires_grad))


if TRITON:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def _reduce(x, code: tl.constexpr, bs: tl.constexpr):
        """max / min / mean over rows; max and min keep a NaN (tl.max/tl.min skip it, torch.amax does not)."""
        if code == 2:
            return tl.sum(x, 0) / bs
        nan = tl.max((x != x).to(tl.int32), 0) > 0
        val = tl.max(x, 0) if code == 0 else tl.min(x, 0)
        return tl.where(nan, float("nan"), val)

    @triton.jit
    def _pool_kernel(X, Out, H, NB, sb, sh, ss, sd, D: tl.constexpr, BS: tl.constexpr, NP: tl.constexpr,
                     P0: tl.constexpr, P1: tl.constexpr, P2: tl.constexpr):
        """Program (b, h, block): the pools P0..P2 (-1 = unused) of BS rows, side by side in Out's last dim."""
        pid = tl.program_id(0)
        blk, bh = pid % NB, pid // NB
        rows = (blk * BS + tl.arange(0, BS)).to(tl.int64)
        cols = tl.arange(0, D)
        base = X + (bh // H).to(tl.int64) * sb + (bh % H).to(tl.int64) * sh
        x = tl.load(base + rows[:, None] * ss + cols[None, :] * sd).to(tl.float32)
        out = Out + pid.to(tl.int64) * (NP * D) + cols
        tl.store(out, _reduce(x, P0, BS).to(Out.dtype.element_ty))
        if P1 >= 0:
            tl.store(out + D, _reduce(x, P1, BS).to(Out.dtype.element_ty))
        if P2 >= 0:
            tl.store(out + 2 * D, _reduce(x, P2, BS).to(Out.dtype.element_ty))

    @triton_op("seerflex::block_pool", mutates_args=())
    def block_pool_op(x: Tensor, pools: str, block_size: int) -> Tensor:
        """[B, H, S, D] -> [B, H, S / block_size, D * pools] for comma-separated ``pools`` (max, min, avg)."""
        b, h, s, d = x.shape
        codes = [CODES[p] for p in pools.split(",")]
        nb = s // block_size
        out = torch.empty(b, h, nb, len(codes) * d, device=x.device, dtype=x.dtype)
        p0, p1, p2 = codes + [-1] * (3 - len(codes))
        wrap_triton(_pool_kernel)[(b * h * nb,)](
            x, out, h, nb, *x.stride(), D=d, BS=block_size, NP=len(codes), P0=p0, P1=p1, P2=p2,
            num_warps=8 if block_size * d > 8192 else 4)
        return out
