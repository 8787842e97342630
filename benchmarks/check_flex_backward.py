"""GPU check of the training route: compiled flex_attention forward and backward over a seerflex BlockMask
(top-k selection on random scores, 64 x 64, 128 x 64 and 128 x 128 blocks (FLASH's backward where flash-attn-4 is
installed), the backward's indices made in the compiled plan, GQA 9/3, head 64, batch 2, odd and even
lengths, with and without left padding, compile auto and static) against the same mask as float64 masked SDPA; and a
learning gate through the layer (on CUDA its fused route: one compiled graph each way): output and q, k, v gradients
against float64 over its own selection, the gate's loss and gradients against the eager layer. Prints each case and
rewrites the JSON after it (a call cut short keeps what it measured).

    python benchmarks/check_flex_backward.py --out check.json [--learning-only] [--cuda-graphs]
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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to ``b``'s largest magnitude, in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


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
    err = {name: rel(a, r) for name, a, r in zip(("out", "dq", "dk", "dv"), (out, *got), (ref, *want))}
    dense = float((out.double() - torch.nn.functional.scaled_dot_product_attention(
        *(t.double() for t in (q, k, v)), is_causal=True, enable_gqa=True)).abs().max())
    return {"seq_len": seq, "block": [q_block, kv_block], "backend": kernel_backend(
                "auto", q.device, compiled=compiles(mode, q.device), plain_mask=not padded, block_size=(q_block, kv_block),
                backward=True), "padded": padded, "compile": mode,
            "density": float(selection.kept.float().mean()), "rel_err": err, "max_abs_diff_from_dense": dense}


def learning_case(seq: int, q_block: int, kv_block: int, graphs: bool = False) -> dict:
    """A learning gate through the whole layer, compiled (on CUDA one graph each way: gate with its gradient,
    policy, both index sets, BlockMask, flex) against the same layer eager. The gate's loss and gradients do not
    depend on the selection: compiled vs eager. Output and q, k, v gradients: the compiled run against float64
    masked SDPA over the compiled run's own selection (a near-tie may pick another block in eager bf16). ``graphs``:
    the compiled layer replays CUDA graphs (``RuntimeOptions.cuda_graphs``); its third call (warm-up, recording,
    replay) is the one checked."""
    from seerflex import RuntimeOptions, SeerFlexAttention, SeerFlexConfig
    from seerflex.finetune import GateLoss
    from seerflex.runtime import Runtime
    from torch._dynamo.utils import counters

    skips = counters["inductor"]["cudagraph_skips"]  # inductor counts every graph it refused to replay
    torch.manual_seed(seq + q_block + kv_block)
    base = [torch.randn(1, h, seq, 64, device=DEV, dtype=torch.bfloat16) for h in (9, 3, 3)]
    weights = torch.randn(1, 9, seq, 64, device=DEV, dtype=torch.bfloat16)
    results, selections = [], []
    for mode in ("eager", "auto"):
        torch.manual_seed(0)
        cfg = SeerFlexConfig(policy=TopK(density=0.1), block_size=kv_block, q_block_size=q_block)
        options = RuntimeOptions(dense_below=0, compile=mode, check_finite=False, cuda_graphs=graphs and mode == "auto")
        layer = SeerFlexAttention(cfg, 9, 3, 64, runtime=Runtime(options), layer_idx=0).to(DEV)
        finish = layer._finish
        layer._finish = lambda out, selection, *rest: (selections.append(selection), finish(out, selection, *rest))[1]
        layer.runtime.gate_loss = loss = GateLoss(row_fraction=0.25, seed=1)
        for _ in range(3 if options.cuda_graphs else 1):
            if options.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            layer.gate.zero_grad(set_to_none=True)
            q, k, v = (t.clone().requires_grad_() for t in base)
            out = layer(q, k, v)
            total = loss.total()
            ((out.float() * weights.float()).sum() + total).backward()
        results.append((out, total, layer.gate.k_weight.grad, layer.gate.q_weight.grad, q.grad, k.grad, v.grad))

    err = {name: rel(a, b) for name, a, b in zip(("gate_loss", "d_gate_k", "d_gate_q"), results[1][1:4], results[0][1:4])}
    layout = BlockLayout(seq, kv_block, None, q_block)
    mask = block_mask_for(selections[-1], layout, compute_q_blocks=True)
    ref_in = [t.double().requires_grad_() for t in base]
    ref = masked_sdpa(*ref_in, mask)
    want = torch.autograd.grad(ref, ref_in, weights.double())
    err |= {name: rel(a, r) for name, a, r in zip(("out", "dq", "dk", "dv"), (results[1][0], *results[1][4:]),
                                                (ref, *want))}
    differ = int((selections[0].kept != selections[-1].kept).sum())
    return {"learning_gate": True, "cuda_graphs": graphs, "seq_len": seq, "block": [q_block, kv_block],
            "backend": kernel_backend("auto", torch.device(DEV), compiled=DEV == "cuda", plain_mask=True,
                                      block_size=(q_block, kv_block), backward=True),
            "rel_err (gate: compiled vs eager; out, dq/dk/dv: compiled vs f64 on its selection)": err,
            "blocks_selected_differently_than_eager": differ,
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] - skips}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--learning-only", action="store_true", help="only the learning gate through the layer")
    p.add_argument("--cuda-graphs", action="store_true", help="the learning cases also with CUDA-graph replay")
    args = p.parse_args()
    rows = []
    for seq in SEQS:
        for q_block, kv_block in ((64, 64), (128, 64), (128, 128)):
            for padded in (() if args.learning_only else (False, True)):
                for mode in ("auto", "static"):  # static: the backward lowered in this thread, not autograd's
                    rows.append(case(seq, q_block, kv_block, padded, mode))
                    save(args.out, rows)
            for graphs in (False, True) if args.cuda_graphs else (False,):
                rows.append(learning_case(seq, q_block, kv_block, graphs))
                save(args.out, rows)


def save(path: str, rows: list[dict]) -> None:
    """Written after every case, so a run cut short keeps what it measured."""
    print(rows[-1], flush=True)
    with open(path, "w") as f:
        json.dump({"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
                   "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
