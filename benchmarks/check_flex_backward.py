"""GPU check of the training route: compiled flex_attention forward and backward over a seerflex BlockMask
(top-k selection on random scores, 64 x 64, 128 x 64 and 128 x 128 blocks (FLASH's backward where flash-attn-4 is
installed), the backward's indices made in the compiled plan, GQA 9/3, head 64, batch 2, odd and even
lengths, with and without left padding, compile auto and static) against the same mask as float64 masked SDPA; and a
learning gate through the layer, compiled vs eager; prints and writes JSON.

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


def learning_case(seq: int, q_block: int, kv_block: int) -> dict:
    """A learning gate through the whole layer, compiled (the training plan: logits with their gradient, in-graph
    backward indices) against the same layer eager: output, gate loss and the gradients of gate, q, k, v."""
    from seerflex import RuntimeOptions, SeerFlexAttention, SeerFlexConfig
    from seerflex.finetune import GateLoss
    from seerflex.runtime import Runtime

    torch.manual_seed(seq + q_block + kv_block)
    base = [torch.randn(1, h, seq, 64, device=DEV, dtype=torch.bfloat16) for h in (9, 3, 3)]
    weights = torch.randn(1, 9, seq, 64, device=DEV, dtype=torch.bfloat16)
    results = []
    for mode in ("eager", "auto"):
        torch.manual_seed(0)
        cfg = SeerFlexConfig(policy=TopK(density=0.1), block_size=kv_block, q_block_size=q_block)
        layer = SeerFlexAttention(cfg, 9, 3, 64, runtime=Runtime(RuntimeOptions(dense_below=0, compile=mode,
                                                                                check_finite=False)), layer_idx=0).to(DEV)
        layer.runtime.gate_loss = loss = GateLoss(row_fraction=0.25, seed=1)
        q, k, v = (t.clone().requires_grad_() for t in base)
        out = layer(q, k, v)
        total = loss.total()
        ((out.float() * weights.float()).sum() + total).backward()
        results.append((out, total, layer.gate.k_weight.grad, layer.gate.q_weight.grad, q.grad, k.grad, v.grad))
    err = {name: float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))
           for name, a, b in zip(("out", "gate_loss", "d_gate_k", "d_gate_q", "dq", "dk", "dv"), *results[::-1])}
    return {"learning_gate": True, "seq_len": seq, "block": [q_block, kv_block], "compiled_vs_eager_rel_err": err}


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
            rows.append(learning_case(seq, q_block, kv_block))
            print(rows[-1])
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
