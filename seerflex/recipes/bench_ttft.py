"""``seerflex bench ttft``: time to first token of a Llama-3.1-8B-shaped model, dense SDPA vs seerflex.

Random bf16 weights (speed does not depend on their values; no download), one prompt, prefill
with KV cache and only the last position's logits (a 128k x 128k-vocab logit tensor would not
fit). Dense and every density are measured in the same process, one after another, on the same
prompt. Peak GPU memory per run is recorded too. A run with every attention call replaced by zeros
measures the rest of the model (projections, MLP, norms): dense time / that time is the most any
attention speed-up can give end to end (Amdahl's ceiling).
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator
from unittest import mock

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from seerflex import RuntimeOptions, SeerFlexAttention, SeerFlexConfig, TopK, get_seerflex_model
from seerflex.console import console
from seerflex.recipes.common import environment, print_table, write_json
from seerflex.recipes.config import knob, parse_recipe

LLAMA_3_1_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192})


def random_llama(layers: int, device: str) -> torch.nn.Module:
    """Llama-3.1-8B shape with N(0, 0.02) bf16 weights, built directly on the device."""
    config = LlamaConfig(**(LLAMA_3_1_8B | {"num_hidden_layers": layers}))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
        rope = type(model.model.rotary_emb)(config).to(device)  # meta init left inv_freq empty
        model.model.rotary_emb = rope
    return model.eval()


def time_prefill(model: Any, ids: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median seconds and peak GiB of one prefill (first-token logits only)."""
    times = []
    for i in range(repeats + 1):  # the first run compiles and is not counted
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(input_ids=ids, use_cache=True, logits_to_keep=1)
        end.record()
        torch.cuda.synchronize()
        if i:
            times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**30


@contextmanager
def attention_free() -> Iterator[None]:
    """Every seerflex layer returns zeros at once: what is left is the non-attention time."""
    def zeros(self: SeerFlexAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **_: Any) -> torch.Tensor:
        return q.new_zeros(*q.shape[:3], v.shape[-1])

    with mock.patch.object(SeerFlexAttention, "forward", zeros):
        yield


@dataclass
class BenchTtftArgs:
    """Time to first token of a Llama-3.1-8B-shaped model: dense SDPA, attention-free ceiling, seerflex."""

    lengths: list[int] = knob([32768, 65536, 131072], "prompt lengths")
    densities: list[float] = knob([0.2, 0.1, 0.05], "top-k densities")
    layers: int = knob(32, "decoder layers (fewer for a quick look)")
    repeats: int = knob(2, "timed prefills per point (after one warm-up)")
    block_size: int = knob(64, "key block size")
    q_block_size: int | None = knob(None, "query block size, a multiple of block_size; default block_size")
    compile: str = knob("auto", "runtime compile mode: auto, dynamic, static, eager")
    backend: str = knob("auto", "flex kernel: auto, triton, flash (FlashAttention-4, sm90+)")
    check_finite: bool = knob(True, "layers check scores for NaN (one host sync per layer)")
    out: str = knob("benchmarks/results/bench_ttft.json", "result file")


def main(argv: list[str] | None = None) -> int:
    args = parse_recipe(BenchTtftArgs, argv or [], prog="seerflex bench ttft")
    if args is None:
        return 0
    if not torch.cuda.is_available():
        raise ValueError("bench ttft needs a CUDA GPU")
    torch.manual_seed(0)
    with console.status(f"building a {args.layers}-layer Llama-3.1-8B-shaped model on the GPU"):
        base = random_llama(args.layers, "cuda")
    model = get_seerflex_model(base,
                               SeerFlexConfig(policy=TopK(density=0.1), block_size=args.block_size,
                                              q_block_size=args.q_block_size),
                               runtime=RuntimeOptions(compile=args.compile, backend=args.backend, dense_below=0,
                                                      check_finite=args.check_finite))
    model.to(torch.bfloat16)
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        for s in args.lengths:
            ids = torch.randint(0, LLAMA_3_1_8B["vocab_size"], (1, s), device="cuda")
            try:
                with model.disable_adapter():
                    dense_s, dense_mem = time_prefill(model, ids, args.repeats)
                results.append({"seq_len": s, "method": "sdpa dense", "ttft_s": dense_s, "peak_gb": dense_mem})
                with attention_free():
                    rest_s, _ = time_prefill(model, ids, args.repeats)
                results.append({"seq_len": s, "method": "no attention (ceiling)", "ttft_s": rest_s,
                                "speedup_vs_dense": dense_s / rest_s})
                for d in args.densities:
                    model.set_policy(TopK(density=d))
                    t, mem = time_prefill(model, ids, args.repeats)
                    results.append({"seq_len": s, "method": "seerflex", "backend": args.backend,
                                    "block_size": args.block_size,
                                    "q_block_size": args.q_block_size or args.block_size, "density": d,
                                    "ttft_s": t, "peak_gb": mem, "speedup_vs_dense": dense_s / t})
                    console.log(f"S={s} density={d}: {t:.3f} s vs dense {dense_s:.3f} s")
            except torch.OutOfMemoryError:
                results.append({"seq_len": s, "error": "out of memory"})
                torch.cuda.empty_cache()
            write_json(args.out, {"environment": environment(), "args": asdict(args), "results": results})
    cols = ["seq_len", "method", "density", "ttft_s", "speedup_vs_dense", "peak_gb", "error"]
    print_table(f"time to first token, Llama-3.1-8B shape ({environment()['device']})", cols,
                [[r.get(c, "") for c in cols] for r in results])
    return 0
