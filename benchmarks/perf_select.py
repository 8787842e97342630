"""Micro-benchmarks behind the overhead work (H200, 2026-12-01): the policy's top-k in float32 vs 16-bit
keys, and the gate's K pooling with the old repeat-then-project vs the grouped projection.

    python benchmarks/perf_select.py --out results.json
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl
import triton.testing

from seerflex.gates.pooling import block_pool


def ms(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def pooled_k_old(k, w):
    kb = block_pool(k, ("max", "min", "avg"), 64, None).to(w.dtype).repeat_interleave(w.shape[0] // k.shape[1], 1)
    return torch.einsum("bhnd,hde->bhne", kb, w)


def pooled_k_new(k, w):
    kb = block_pool(k, ("max", "min", "avg"), 64, None).to(w.dtype)
    hkv = k.shape[1]
    return torch.einsum("bgnd,gqde->bgqne", kb, w.view(hkv, -1, *w.shape[1:])).flatten(1, 2)


@triton.jit
def _pool_kernel(X, Out, D: tl.constexpr, BS: tl.constexpr):
    """One (batch x head, block): max, min and mean of BS rows of D channels, stored side by side."""
    row = tl.program_id(0)  # flattened (b, h, block)
    offs = tl.arange(0, BS)[:, None] * D + tl.arange(0, D)[None, :]
    x = tl.load(X + row.to(tl.int64) * BS * D + offs).to(tl.float32)
    base = Out + row.to(tl.int64) * 3 * D + tl.arange(0, D)
    tl.store(base, tl.max(x, 0).to(Out.dtype.element_ty))
    tl.store(base + D, tl.min(x, 0).to(Out.dtype.element_ty))
    tl.store(base + 2 * D, (tl.sum(x, 0) / BS).to(Out.dtype.element_ty))


def triton_pool(k, bs=64):
    b, h, s, d = k.shape
    out = torch.empty(b, h, s // bs, 3 * d, device=k.device, dtype=k.dtype)
    _pool_kernel[(b * h * (s // bs),)](k, out, D=d, BS=bs)
    return out


def pool_variants(k):
    b, h, s, d = k.shape
    flat = k.reshape(b * h, 1, s, d)
    return {
        "inductor (current)": torch.compile(lambda t: block_pool(t, ("max", "min", "avg"), 64, None)),
        "aten eager": lambda t: block_pool(t, ("max", "min", "avg"), 64, None),
        "pool2d compiled": torch.compile(lambda t: torch.cat([
            torch.nn.functional.max_pool2d(t.reshape(b * h, 1, s, d), (64, 1)),
            -torch.nn.functional.max_pool2d(-t.reshape(b * h, 1, s, d), (64, 1)),
            torch.nn.functional.avg_pool2d(t.reshape(b * h, 1, s, d), (64, 1))], -1).view(b, h, s // 64, 3 * d)),
        "triton kernel": triton_pool,
    }, flat


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    dev = torch.device("cuda")
    for s, (qb, kb) in [(s, shape) for s in (32768, 131072) for shape in ((128, 64), (128, 128), (64, 64))]:
        nq, nk = s // qb, s // kb
        k = int(0.1 * nk + 0.5) + 5
        scores = torch.randn(1, 32, nq, nk, device=dev).tril()
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            x = scores.to(dtype)
            f = torch.compile(lambda t: t.topk(k, dim=-1).indices)
            rows.append({"what": "topk", "seq_len": s, "shape": f"{qb}x{kb}", "dtype": str(dtype), "k": k,
                         "ms": ms(lambda: f(x))})
    for s in (32768, 131072):
        kt = torch.randn(1, 8, s, 128, device=dev, dtype=torch.bfloat16)
        w = torch.randn(32, 384, 64, device=dev, dtype=torch.bfloat16) * 0.02
        for name, fn in (("repeat then project", pooled_k_old), ("grouped projection", pooled_k_new)):
            f = torch.compile(fn)
            rows.append({"what": "K pool + projection", "seq_len": s, "variant": name, "ms": ms(lambda: f(kt, w))})
    for s in (32768, 131072):
        kt = torch.randn(1, 8, s, 128, device=dev, dtype=torch.bfloat16)
        variants, _ = pool_variants(kt)
        ref = block_pool(kt.float(), ("max", "min", "avg"), 64, None)
        for name, fn in variants.items():
            err = float((fn(kt).float() - ref).abs().max())
            rows.append({"what": "K pool max/min/avg", "seq_len": s, "variant": name, "ms": ms(lambda: fn(kt)),
                         "max_abs_err_vs_f32": err})
    for r in rows:
        print(r)
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, open(args.out, "w"),
              indent=1)


if __name__ == "__main__":
    main()
