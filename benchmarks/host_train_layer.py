"""Host (Python) time of one training call of the sparse layer, by part, next to its GPU time.

The fine-tune's forward pass is host-bound (H200 profile, 2026-12-02: over the forward the GPU was busy 143 of
317 ms), so what a layer costs the CPU decides its step time as much as its kernels do. One SeerFlexAttention
layer at the fine-tune's shape (SmolLM2: 9 query / 3 KV heads, head 64, bf16 autocast, 32k tokens) runs forward
and backward; the host time of each part is measured with perf_counter around it (no sync inside), the whole
call's GPU time with CUDA events after a sync. Variants: the gate learning (gate loss on), the gate frozen, and
inference. Also a cProfile listing of the learning forward (own time per function). ``--levers``: host levers on
the same calls: cudagraphs (``RuntimeOptions.cuda_graphs``), skip_guards (as in ``finetune_variant.py``).

    python benchmarks/host_train_layer.py --out host.json [--seq 32768] [--block 128] [--levers cudagraphs]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from contextlib import nullcontext

import torch

import seerflex.attention as attention
from seerflex import RuntimeOptions, SeerFlexAttention, SeerFlexConfig, TopK
from seerflex.finetune import GateLoss
from seerflex.runtime import Runtime

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PARTS = {"plan": (attention, "planned_block_mask"), "flex": (attention, "sparse_attention"),
         "fused": (attention, "planned_attention"), "gate_loss": (GateLoss, "__call__")}  # CUDA: fused, no plan/flex


def timed_parts(totals: dict[str, list[float]]) -> None:
    """Wrap each part so that its host time per call lands in ``totals``."""
    for name, (owner, attr) in PARTS.items():
        fn = getattr(owner, attr)

        def wrapped(*args, _fn=fn, _name=name, **kwargs):
            t = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_name][-1] += time.perf_counter() - t

        setattr(owner, attr, wrapped)


def run(layer: SeerFlexAttention, seq: int, variant: str, totals: dict[str, list[float]], iters: int,
        levers: list[str]) -> dict:
    torch.manual_seed(0)
    train = variant != "inference"
    layer.gate.requires_grad_(variant == "learn")
    layer.runtime.gate_loss = GateLoss(row_fraction=0.125) if variant == "learn" else None
    q, k, v = (torch.randn(1, h, seq, 64, device=DEV, dtype=torch.bfloat16, requires_grad=train) for h in (9, 3, 3))
    weights = torch.randn(1, 9, seq, 64, device=DEV, dtype=torch.bfloat16)
    rows: dict[str, list[float]] = {"forward_host_ms": [], "backward_host_ms": [], "call_ms": []}
    for i in range(iters + 3):
        for part in totals.values():
            part.append(0.0)
        if "cudagraphs" in levers:
            torch.compiler.cudagraph_mark_step_begin()
        if "skip_guards" in levers and i == 3:  # this variant's graph exists: no guards but those between graphs
            torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)
        torch.cuda.synchronize() if DEV.type == "cuda" else None
        start = torch.cuda.Event(enable_timing=True) if DEV.type == "cuda" else None
        end = torch.cuda.Event(enable_timing=True) if DEV.type == "cuda" else None
        if start is not None:
            start.record()
        t0 = time.perf_counter()
        with torch.autocast(DEV.type, torch.bfloat16), (nullcontext() if train else torch.no_grad()):
            out = layer(q, k, v, gate_q=q.detach(), gate_k=k.detach())
            loss = (out * weights).float().sum()
            if variant == "learn":
                loss = loss + layer.runtime.gate_loss.total()
        t1 = time.perf_counter()
        if train:
            loss.backward()
        t2 = time.perf_counter()
        if end is not None:
            end.record()
            torch.cuda.synchronize()
        if i >= 3:  # after the compiles
            rows["forward_host_ms"].append((t1 - t0) * 1e3)
            rows["backward_host_ms"].append((t2 - t1) * 1e3)
            rows["call_ms"].append(start.elapsed_time(end) if start is not None else (t2 - t0) * 1e3)
        for t in (q, k, v):
            t.grad = None
        layer.gate.zero_grad(set_to_none=True)
    torch.compiler.set_stance("default")  # the next variant compiles its own graph
    summary = {key: statistics.median(vals) for key, vals in rows.items()}
    summary |= {f"{name}_host_ms": statistics.median(v[3:]) * 1e3 for name, v in totals.items()}
    for part in totals.values():
        part.clear()
    return summary


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seq", type=int, default=32768 if DEV.type == "cuda" else 1024)
    p.add_argument("--block", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--levers", default="", help="comma-separated finetune_variant.py levers: cudagraphs, skip_guards")
    args = p.parse_args()
    levers = [name for name in args.levers.split(",") if name]
    runtime = Runtime(RuntimeOptions(dense_below=0, check_finite=False, cuda_graphs="cudagraphs" in levers,
                                     compile="auto" if DEV.type == "cuda" else "dynamic"))
    layer = SeerFlexAttention(SeerFlexConfig(policy=TopK(density=0.1), block_size=args.block), 9, 3, 64,
                              runtime=runtime, layer_idx=0).to(DEV)
    totals: dict[str, list[float]] = {name: [] for name in PARTS}
    timed_parts(totals)
    result = {"device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "torch": torch.__version__,
              "seq_len": args.seq, "block": args.block, "levers": levers, "date": time.strftime("%Y-%m-%d"),
              "variants": {}}
    for variant in ("learn", "frozen", "inference"):
        result["variants"][variant] = run(layer, args.seq, variant, totals, args.iters, levers)
        print(variant, {k: round(v, 3) for k, v in result["variants"][variant].items()})
    layer.gate.requires_grad_(True)
    layer.runtime.gate_loss = GateLoss(row_fraction=0.125)
    q, k, v = (torch.randn(1, h, args.seq, 64, device=DEV, dtype=torch.bfloat16, requires_grad=True) for h in (9, 3, 3))
    for part in totals.values():
        part.append(0.0)  # the wrappers' accumulator while profiling (not reported)
    profiler = cProfile.Profile()
    for i in range(13):
        if i == 3:
            profiler.enable()
        with torch.autocast(DEV.type, torch.bfloat16):
            layer(q, k, v, gate_q=q.detach(), gate_k=k.detach())
            layer.runtime.gate_loss.losses.clear()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
    result["cprofile_forward_10_calls"] = text.getvalue()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(text.getvalue()[:6000])


if __name__ == "__main__":
    main()
