"""``seerflex bench kernel``: per-layer attention time, dense vs seerflex, with the overhead broken out.

For each sequence length: SDPA dense causal, flex dense causal (128-token tiles, flex's best dense
case), and seerflex at each density, split into gate, policy, BlockMask build and the sparse flex
kernel, plus the whole layer call, and on GPU the same layer call replayed from a CUDA graph (what
is left once kernel launches cost nothing). Each seerflex output is checked on GPU against a
float32 dense reference that uses the same block decisions (on a few slices of query rows, so 128k
fits).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from seerflex import BlockLayout, SeerFlexAttention, SeerFlexConfig, TopK, build_block_mask
from seerflex.block_mask import block_mask_for, causal_mask_mod
from seerflex.compile import compiles
from seerflex.console import console
from seerflex.flex import dense_attention, kernel_backend, sparse_attention
from seerflex.last_queries import last_query_inputs, ranked_scores
from seerflex.plan import fusable, planned_block_mask
from seerflex.policies import SparsityStats
from seerflex.recipes.common import environment, print_table, write_json
from seerflex.recipes.config import knob, parse_recipe
from seerflex.runtime import Runtime, RuntimeOptions
from seerflex.scorer import ScorerInputs

GPU = torch.cuda.is_available()


@dataclass
class BenchKernelArgs:
    """Per-layer attention time: SDPA and flex dense vs seerflex at each density (gate, policy, build, kernel)."""

    lengths: list[int] = knob([8192, 32768, 65536, 131072], "sequence lengths")
    densities: list[float] = knob([1.0, 0.5, 0.2, 0.1, 0.05], "top-k densities")
    heads: int = knob(32, "query heads")
    kv_heads: int = knob(8, "KV heads")
    head_dim: int = knob(128, "head size")
    block_size: int = knob(64, "key block size")
    vertical: int = knob(0, "key blocks per row kept as the last 64 queries' vertical columns (the policies' "
                                "``vertical``); their exact attention is then part of the layer's time (columns_ms)")
    q_block_size: int | None = knob(None, "query block size, a multiple of block_size (128 with block_size=64: FA4's "
                                          "128-row tiles); default block_size")
    dtype: str = knob("bfloat16", "tensor dtype")
    compile: str = knob("auto", "runtime compile mode: auto, dynamic, static, eager")
    backend: str = knob("auto", "flex kernel: auto, triton, flash (FlashAttention-4, sm90+)")
    device: str = knob("cuda" if GPU else "cpu", "torch device")
    check: bool = knob(True, "check outputs against a float64 masked reference (--no-check to skip)")
    check_finite: bool = knob(True, "layers check scores for NaN (a host sync); --no-check-finite also times a "
                                    "CUDA-graph replay")
    out: str = knob("benchmarks/results/bench_kernel.json", "result file")


def timed(fn: Callable[[], Any]) -> float:
    """Median milliseconds (CUDA events via triton's do_bench; host clock on CPU)."""
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    import time

    fn()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[1]


def reference_rows(q: Tensor, k: Tensor, v: Tensor, kept: Tensor, layout: BlockLayout, rows: slice) -> Tensor:
    """float32 masked attention for query ``rows`` only: memory O(rows x S), not S x S."""
    group = q.shape[1] // k.shape[1]
    qs = q[:, :, rows].float()
    kf, vf = (t.float().repeat_interleave(group, 1) for t in (k, v))
    qpos = torch.arange(q.shape[2], device=q.device)[rows]
    kpos = torch.arange(k.shape[2], device=q.device)
    mask = (kpos[None] <= qpos[:, None])[None, None] & kept[:, :, qpos // layout.q_block_size][..., kpos // layout.block_size]
    scores = (qs @ kf.transpose(-1, -2) * q.shape[-1] ** -0.5).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ vf


def max_relative_error(out: Tensor, q: Tensor, k: Tensor, v: Tensor, kept: Tensor, layout: BlockLayout) -> float:
    s, errs = q.shape[2], []
    for start in (0, s // 2, s - 256):
        rows = slice(start, start + 256)
        ref = reference_rows(q, k, v, kept, layout, rows)
        errs.append(float((out[:, :, rows].float() - ref).norm() / ref.norm()))
    return max(errs)


def graph_replay_ms(fn: Callable[[], Any]) -> float | str:
    """Median ms of ``fn`` captured once in a CUDA graph and replayed (the error text if capture fails)."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return timed(graph.replay)
    except Exception as err:  # a capture the runtime refuses is a result to record
        return f"{type(err).__name__}: {str(err)[:200]}"


def bench_length(s: int, densities: list[float], args: BenchKernelArgs) -> list[dict[str, Any]]:
    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    q, k, v = (torch.randn(1, h, s, args.head_dim, device=dev, dtype=dtype)
               for h in (args.heads, args.kv_heads, args.kv_heads))
    rows: list[dict[str, Any]] = []
    base = {"seq_len": s, "compile": args.compile, "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
            "dtype": args.dtype, "block_size": args.block_size, "q_block_size": args.q_block_size or args.block_size,
            "vertical": args.vertical}
    sdpa_ms = timed(lambda: dense_attention(q, k, v))
    rows.append(base | {"method": "sdpa dense", "density": 1.0, "total_ms": sdpa_ms})
    dense_layout = BlockLayout(s, 128)
    causal = dense_layout.selectable_blocks(dev)
    dense_mask = build_block_mask(causal, dense_layout)
    flex_ms = timed(lambda: sparse_attention(q, k, v, dense_mask, compile=args.compile))
    rows.append(base | {"method": "flex dense", "density": 1.0, "total_ms": flex_ms})
    for density in densities:
        cfg = SeerFlexConfig(policy=TopK(density=density, vertical=args.vertical), block_size=args.block_size,
                             q_block_size=args.q_block_size)
        runtime = Runtime(RuntimeOptions(compile=args.compile, backend=args.backend, dense_below=0,
                                         check_finite=args.check_finite))
        layer = SeerFlexAttention(cfg, args.heads, args.kv_heads, args.head_dim, runtime=runtime).to(dev, dtype)
        layout, mode = BlockLayout(s, cfg.block_size, None, cfg.q_block_size), args.compile
        scores = layer.gate(q, k, layout, compile=mode)
        inputs = ScorerInputs(q, k, q, k, layout, mode)
        ranked = ranked_scores(layer.policy, scores, inputs)  # with the last queries' row when vertical > 0
        selection = layer.policy.select(ranked, layout, compile=mode)
        kept = selection.kept
        build = lambda: block_mask_for(selection, layout, compile=mode)  # noqa: E731
        block_mask = build()
        torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None
        out = layer(q, k, v)
        row = base | {
            "method": "seerflex", "density": density,
            "achieved_density": SparsityStats.of(kept, layout).mean_density,
            "gate_ms": timed(lambda: layer.gate(q, k, layout, compile=mode)),
            "policy_ms": timed(lambda: layer.policy.select(ranked, layout, compile=mode)),
            "build_ms": timed(build),
            "kernel": kernel_backend(args.backend, dev, compiled=compiles(mode, dev),
                                     plain_mask=block_mask.mask_mod is causal_mask_mod, dtype=dtype),
            "kernel_ms": timed(lambda: sparse_attention(q, k, v, block_mask, compile=mode, backend=args.backend)),
            "total_ms": timed(lambda: layer(q, k, v)),
        }
        if args.vertical:
            row["columns_ms"] = timed(lambda: ranked_scores(layer.policy, scores, inputs))
        if fusable(layer.gate, layer.gate, layout, mode, dev):  # what the layer runs before the kernel
            last = last_query_inputs(layer.policy, q, k, None)
            row["plan_ms"] = timed(lambda: planned_block_mask(layer.gate, layer.policy, q, k, layout, mode=mode,
                                                              last=last))
        if dev.type == "cuda":
            row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
            if not args.check_finite:  # the NaN check syncs with the host, which a graph cannot hold
                row["graph_ms"] = graph_replay_ms(lambda: layer(q, k, v))
        if args.check:
            row["max_rel_err"] = max_relative_error(out, q, k, v, kept, layout)
            dense_out = dense_attention(q, k, v).float()  # a sparse kernel that ran dense would show ~0 here
            row["rel_diff_vs_dense"] = float((out.float() - dense_out).norm() / dense_out.norm())
        row["total_vs_density_x_sdpa"] = row["total_ms"] / (row["achieved_density"] * sdpa_ms)
        row["overhead_vs_kernel"] = (row["total_ms"] - row["kernel_ms"]) / row["kernel_ms"]  # all of it, Python too
        if isinstance(row.get("graph_ms"), float):
            row["graph_vs_density_x_sdpa"] = row["graph_ms"] / (row["achieved_density"] * sdpa_ms)
        rows.append(row)
        console.log(f"S={s} density={density}: {row['total_ms']:.3f} ms (sdpa {sdpa_ms:.3f})")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_recipe(BenchKernelArgs, argv or [], prog="seerflex bench kernel")
    if args is None:
        return 0
    RuntimeOptions(compile=args.compile, backend=args.backend)  # bad values fail here, not after the first length
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for s in args.lengths:
            try:
                results += bench_length(s, args.densities, args)
            except torch.OutOfMemoryError as err:
                results.append({"seq_len": s, "error": f"out of memory: {err}"})
                torch.cuda.empty_cache()
            write_json(args.out, {"environment": environment(), "args": asdict(args), "results": results})
    cols = ["seq_len", "method", "kernel", "q_block_size", "block_size", "vertical", "density", "achieved_density",
            "columns_ms", "plan_ms",
            "kernel_ms", "total_ms", "graph_ms", "overhead_vs_kernel", "total_vs_density_x_sdpa", "max_rel_err"]
    print_table(f"per-layer attention ({environment()['device']})", cols,
                [[r.get(c, "") for c in cols] for r in results if "error" not in r])
    console.print(f"saved {args.out}")
    return 0
