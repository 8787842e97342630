"""The training route's attention kernel at the fine-tune's shape (SmolLM2: 9 query / 3 KV heads, head 64, bf16,
density ~0.1, causal): forward + backward of compiled flex over a seerflex BlockMask, side by side with dense
cuDNN SDPA and dense flex, for

* ``seerflex``: today's kernel options and backward tiles (``seerflex.flex.sparse_attention``), and the same
  with a 3-stage forward;
* ``autotuned``: inductor's max-autotune over a wider set of backward tiles that fit the mask (which the
  first fine-tune profile says is where a density-0.1 step spends most of its attention time);
* ``flash``: flex's FLASH (FlashAttention-4) backend, where it is installed (its backward takes 128 x 128
  blocks only).

Every variant's output and gradients are checked against the ``seerflex`` variant's (same mask). Prints a table
and writes JSON; the autotuner's pick is in inductor's "Autotune Choices Stats" log lines.

    python benchmarks/bench_flex_train.py --out flex_train.json [--seq 32768]
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from seerflex.block_mask import block_mask_for
from seerflex.flex import backward_tiles, kernel_options, sparse_attention
from seerflex.layout import BlockLayout
from seerflex.policies import TopK
from seerflex.recipes.bench_kernel import timed

HQ, HKV, D = 9, 3, 64
# (BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2, num_stages, num_warps); the kernel needs N1 % M1 == 0 and M2 % N2 == 0
TILES = [(m1, n1, m2, n2, stages, warps)
         for (m1, n1, m2, n2) in ((64, 64, 64, 64), (32, 64, 64, 32), (32, 64, 32, 32), (32, 32, 32, 32), (16, 64, 64, 16))
         for (stages, warps) in ((2, 4), (3, 4), (2, 8), (1, 4))]


@contextmanager
def wide_backward_tiles() -> Iterator[None]:
    """Offer inductor every tile in ``TILES`` for flex's backward (it drops those the mask's blocks do not fit)."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexBwDConfig
    from torch._inductor.virtualized import V

    class Wide(InductorChoices):
        def get_flex_attention_bwd_configs(self, head_dim: int, dtype: torch.dtype,
                                           device_type: str | None = "cuda") -> list[Any]:
            return [FlexBwDConfig(*t) for t in TILES]

    with V.set_choices_handler(Wide()), torch._functorch.config.patch(force_non_lazy_backward_lowering=True):
        yield


def run(attend: Callable[[], torch.Tensor], inputs: tuple[torch.Tensor, ...], grad: torch.Tensor
        ) -> tuple[float, list[torch.Tensor]]:
    def step() -> None:
        for t in inputs:
            t.grad = None
        attend().backward(grad)

    ms = timed(step)
    out = attend()
    return ms, [out.detach(), *torch.autograd.grad(out, inputs, grad)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seq", type=int, default=32768)
    p.add_argument("--density", type=float, default=0.1)
    args = p.parse_args()
    torch.manual_seed(0)
    dev, s = "cuda", args.seq
    q, k, v = (torch.randn(1, h, s, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for h in (HQ, HKV, HKV))
    grad = torch.randn(1, HQ, s, D, device=dev, dtype=torch.bfloat16)
    rows: list[dict[str, Any]] = []

    def record(name: str, block: str, ms: float, got: list[torch.Tensor] | None = None,
               ref: list[torch.Tensor] | None = None) -> None:
        err = None if ref is None else {n: float((a.float() - r.float()).abs().max() / r.float().abs().max())
                                        for n, a, r in zip(("out", "dq", "dk", "dv"), got, ref)}
        rows.append({"variant": name, "block": block, "fwd_bwd_ms": ms, "rel_diff_vs_seerflex": err})
        print(rows[-1], flush=True)

    sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # noqa: E731
    record("dense SDPA (cuDNN)", "-", run(sdpa, (q, k, v), grad)[0])
    causal = create_block_mask(lambda b, h, qi, ki: qi >= ki, 1, 1, s, s, device=dev)
    dense_flex = torch.compile(flex_attention)
    record("dense flex (Triton, 128 x 128)", "128x128",
           run(lambda: dense_flex(q, k, v, block_mask=causal, enable_gqa=True), (q, k, v), grad)[0])
    for q_block, kv_block in ((64, 64), (128, 64), (128, 128)):
        layout = BlockLayout(s, kv_block, None, q_block)
        selection = TopK(density=args.density).select(torch.randn(1, HQ, *layout.shape, device=dev), layout)
        mask = block_mask_for(selection, layout, compute_q_blocks=True)
        block = f"{q_block}x{kv_block} d={float(selection.kept.float().mean()):.3f}"
        ms, ref = run(lambda: sparse_attention(q, k, v, mask, compile="static", backend="triton"), (q, k, v), grad)
        record("seerflex (today's options)", block, ms)
        torch._dynamo.reset()
        plain = torch.compile(flex_attention, dynamic=False)
        options = kernel_options(q.device, D, (q_block, kv_block)) | {"fwd_num_stages": 3}
        with backward_tiles():
            ms, got = run(lambda: plain(q, k, v, block_mask=mask, enable_gqa=True, kernel_options=options),
                          (q, k, v), grad)
        record("seerflex, forward 3 stages", block, ms, got, ref)
        before = {"BLOCK_M": min(q_block, 128), "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}  # pins both passes
        torch._dynamo.reset()
        plain = torch.compile(flex_attention, dynamic=False)
        with backward_tiles():
            ms, got = run(lambda: plain(q, k, v, block_mask=mask, enable_gqa=True, kernel_options=before),
                          (q, k, v), grad)
        record("seerflex before 2026-12-01 (2 stages)", block, ms, got, ref)
        torch._dynamo.reset()
        tuned = torch.compile(flex_attention, mode="max-autotune-no-cudagraphs", dynamic=False)
        options = {"fwd_BLOCK_M": q_block, "fwd_BLOCK_N": 64}  # forward autotuned too
        with wide_backward_tiles():
            ms, got = run(lambda: tuned(q, k, v, block_mask=mask, enable_gqa=True, kernel_options=options),
                          (q, k, v), grad)
        record("autotuned backward tiles", block, ms, got, ref)
        try:
            with backward_tiles():
                ms, got = run(lambda: sparse_attention(q, k, v, mask, compile="static", backend="flash"),
                              (q, k, v), grad)
            record("flex FLASH backend", block, ms, got, ref)
        except Exception as e:  # noqa: BLE001 -- not installed / not supported: recorded, not fatal
            rows.append({"variant": "flex FLASH backend", "block": block, "error": f"{type(e).__name__}: {e}"[:300]})
            print(rows[-1], flush=True)
        torch._dynamo.reset()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "seq_len": s,
                   "heads": [HQ, HKV, D], "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
