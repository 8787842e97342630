"""GPU check of the training route: compiled flex_attention forward and backward over a seerflex BlockMask
(top-k selection on random scores, 64 x 64, 128 x 64 and 128 x 128 blocks (FLASH's backward where flash-attn-4 is
installed), the backward's indices made in the compiled plan, GQA 9/3, head 64, batch 2, odd and even
lengths, with and without left padding, compile auto and static) against the same mask as float64 masked SDPA; prints and writes JSON.

    python benchmarks/check_flex_backward.py --out check.json
"""

from __future__ import annotations

import argparse
import json

import torch

from seerflex.block_mask import block_mask_for
from seerflex.compile import compiles
from seerflex.flex import kernel_backend, masked_sdpa, sparse_attention
from seerflex.layout import BlockLayout
from seerflex.policies import TopK

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke run of this script (flex has no CPU backward)
SEQS = (4000, 8192) if DEV == "cuda" else (300,)


def case(seq: int, q_block: int, kv_block: int, padded: bool, mode: str) -> dict:
    torch.manual_seed(seq + q_block + kv_block)
    b, hq, hkv, d = 2, 9, 3, 64
    q, k, v = (torch.randn(b, h, seq, d, device=DEV, dtype=torch.bfloat16, requires_grad=True)
               for h in (hq, hkv, hkv))
    valid = None
    if padded:
        valid = torch.ones(b, seq, dtype=torch.bool, device=DEV)
        valid[1, :seq // 3] = False  # left padding of the second sequence
    layout = BlockLayout(seq, kv_block, valid, q_block)
    scores = torch.randn(b, hq, *layout.shape, device=DEV)
    selection = TopK(density=0.1).select(scores, layout)
    mask = block_mask_for(selection, layout, compute_q_blocks=True)
    grad = torch.randn(b, hq, seq, d, device=DEV, dtype=torch.bfloat16)
    out = sparse_attention(q, k, v, mask, compile=mode)
    got = torch.autograd.grad(out, (q, k, v), grad)
    ref_in = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = masked_sdpa(*ref_in, mask)
    want = torch.autograd.grad(ref, ref_in, grad.double())
    err = {name: float((a.double() - r).abs().max() / r.abs().max().clamp_min(1e-12))
           for name, a, r in zip(("out", "dq", "dk", "dv"), (out, *got), (ref, *want))}
    dense = float((out.double() - torch.nn.functional.scaled_dot_product_attention(
        *(t.double() for t in (q, k, v)), is_causal=True, enable_gqa=True)).abs().max())
    return {"seq_len": seq, "block": [q_block, kv_block], "backend": kernel_backend(
                "auto", q.device, compiled=compiles(mode, q.device), plain_mask=not padded, block_size=(q_block, kv_block),
                backward=True), "padded": padded, "compile": mode,
            "density": float(selection.kept.float().mean()), "rel_err": err, "max_abs_diff_from_dense": dense}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = []
    for seq in SEQS:
        for q_block, kv_block in ((64, 64), (128, 64), (128, 128)):
            for padded in (False, True):
                for mode in ("auto", "static"):  # static: the backward lowered in this thread, not autograd's
                    rows.append(case(seq, q_block, kv_block, padded, mode))
                    print(rows[-1])
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
