"""Calling flex_attention: the compiled function for the runtime's mode, kernel options per device.

Compiling once and reusing it is what makes sparse prefill fast; the BlockMask and its captured
tensors are inputs, so new masks and policies (and, in dynamic mode, new lengths) reuse the same
kernels.
"""

from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, create_mask, flex_attention

from seerflex.block_mask import causal_mask_mod
from seerflex.compile import compiled


# Distinct compiled shapes allowed before an error. Dynamo's default (8) is low for static mode, one
# graph per length, and past it dynamo silently runs flex_attention *eagerly*, which materialises
# S x S scores: at 128k that was an out-of-memory error asking for 2 TiB (benchmarks/NOTES.md, v4).
RECOMPILE_LIMIT = 64
BACKENDS = ("auto", "triton", "flash")
HALF = (torch.float16, torch.bfloat16)


def flex_function(mode: str, device: torch.device) -> Callable[..., Tensor]:
    """The flex_attention to call for a compile mode (``seerflex.compile``).

    ``dynamic`` compiles once for all sequence lengths; ``static`` compiles once per length and
    ran the sparse kernel ~20% faster on H100 (32k: 2.64 vs 3.20 ms), for fixed-length workloads;
    ``eager`` is exact but materialises S x S; ``auto`` = dynamic on CUDA, eager elsewhere.
    """
    return compiled(flex_attention, mode, device, dynamic=mode != "static")


@cache
def flash_unavailable(device: torch.device) -> str | None:
    """Why flex cannot run FlashAttention-4 kernels on ``device`` (None: it can).

    torch >= 2.10 lowers compiled flex_attention to FA4's CuTe kernels with ``BACKEND="FLASH"`` on
    Hopper and Blackwell when ``flash_attn.cute`` imports (``pip install seerflex[flash]``).
    """
    if device.type != "cuda":
        return "it needs a CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 9:
        return f"it needs an sm90+ GPU (Hopper, Blackwell), this one is sm{major}{minor}"
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 10):
        return f"it needs torch >= 2.10, this is {torch.__version__}"
    try:  # FA4's package and its CuTe DSL (a flash_attn found without cutlass failed only at the first compile)
        found = all(importlib.util.find_spec(name) is not None for name in ("flash_attn.cute", "cutlass"))
    except ModuleNotFoundError:
        found = False
    return None if found else "flash-attn-4 is not installed (pip install 'seerflex[flash]')"


def flash_backward_unfit(block_size: tuple[int, int] | None) -> str | None:
    """Why FA4's block-sparse backward cannot take masks of ``block_size`` (None: it can).

    flash-attn-4 4.0.0b36 under torch 2.11 (H200, 2026-12-01): "Block sparsity requires sparse_block_size[0]
    to be a multiple of tile_m=128" and "expects sparse_block_size[1]=128"; its forward takes 64-token blocks.
    """
    if block_size is None:
        return "its block-sparse backward needs 128 x 128 blocks, and the call named no block size"
    q_block, kv_block = block_size
    if q_block % 128 or kv_block != 128:
        return f"its block-sparse backward needs 128 x 128 blocks, these are {q_block} x {kv_block}"
    return None


def kernel_backend(backend: str, device: torch.device, *, compiled: bool, plain_mask: bool,
                   dtype: torch.dtype = torch.bfloat16, block_size: tuple[int, int] | None = None,
                   backward: bool = False) -> str:
    """The kernel one call runs: "triton" or "flash".

    "auto" takes FLASH where it can run and the call fits it: compiled flex, float16/bfloat16 inputs
    (FA4 has no float32 kernels), a causal ``mask_mod`` (FA4 compiles mask_mod to CuTe, where the
    padded route's tensor lookups are slow), no score_mod, and for a call that needs a backward 128 x 128
    blocks (``flash_backward_unfit``); "flash" insists and raises where it cannot run, never falling back
    silently.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; choose one of {BACKENDS}")
    reason = (flash_unavailable(device) or (None if compiled else "it runs only compiled (compile='eager' was set)")
              or (None if dtype in HALF else f"FlashAttention-4 takes float16/bfloat16 inputs, got {dtype}")
              or (flash_backward_unfit(block_size) if backward else None))
    if backend == "flash":
        if reason:
            raise ValueError(f"kernel backend 'flash' cannot run here: {reason}")
        return "flash"
    return "flash" if backend == "auto" and plain_mask and reason is None else "triton"


def kernel_options(device: torch.device, head_dim: int, block_size: tuple[int, int], backend: str = "triton"
                   ) -> dict[str, Any] | None:
    """Kernel options of the resolved ``backend`` ("triton" or "flash", see ``kernel_backend``).

    FLASH: FA4 picks its own tiles. Triton: forward tile sizes and pipelining for this (query, key)
    block size, as ``fwd_`` options: unprefixed ``num_warps``/``num_stages`` would pin the backward's
    too, whose tiles ``backward_tiles`` offers.

    On GPU the mask's block size must be a multiple of the kernel tile; the default tiles (128 x 64
    at head 128) reject 64- and 32-token blocks ("Q and KV block size must be divisible by BLOCK_M
    and BLOCK_N"), so query tiles follow the block size up to 128 and key tiles up to 64. With
    64 x 64 tiles, 4 warps and 2 stages ran the sparse kernel 1.9x faster than the defaults on H100
    (32k, head 128, density 0.1: 2.62 vs 5.06 ms; ..._flex_compile_modes_v1.json); for 128-token
    blocks 128 x 64 tiles with 4 warps / 2 stages beat 64 x 64 by 10-12% at 32k and 128k
    (2.19 vs 2.43 ms, 34.7 vs 39.5 ms; ..._perf_experiments_v3.json).
    """
    if backend == "flash":
        return {"BACKEND": "FLASH"}
    if device.type != "cuda":
        return None
    q_block, kv_block = block_size
    return {"BLOCK_M": min(q_block, 128), "BLOCK_N": min(kv_block, 64), "fwd_num_warps": 4, "fwd_num_stages": 2}


def flex_has_backward(device: torch.device) -> bool:
    """flex_attention has a backward on CUDA only ("FlexAttention does not support backward on CPU", torch 2.13):
    elsewhere training attends through ``masked_sdpa``."""
    return device.type == "cuda"


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, *, scale: float | None = None,
                     compile: str = "auto", backend: str = "auto",
                     score_mod: Callable[..., Tensor] | None = None) -> Tensor:
    """flex_attention over ``block_mask`` (GQA when K/V have fewer heads than Q).

    ``score_mod`` (e.g. Gemma-2 logit soft-capping) must be the same function object on every
    call to reuse the compiled kernel. A compiled mode never falls back to eager flex (S x S memory):
    past ``RECOMPILE_LIMIT`` shapes it raises instead. ``backend``: ``RuntimeOptions.backend``.
    """
    backward = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if backward and not flex_has_backward(q.device):
        return masked_sdpa(q, k, v, block_mask, scale=scale, score_mod=score_mod)
    fn = flex_function(compile, q.device)
    options = flex_options(q, block_mask.BLOCK_SIZE, backend, compiled=fn is not flex_attention,
                           plain_mask=block_mask.mask_mod is causal_mask_mod and score_mod is None, backward=backward)

    def call() -> Tensor:
        return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                  enable_gqa=q.shape[1] != k.shape[1], kernel_options=options)

    if fn is flex_attention:  # eager by choice (CPU, compile="eager"): torch's advice to compile is noise here
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return call()
    with backward_tiles() if backward else nullcontext():
        return within_recompile_limit(call, compile)


@contextmanager
def backward_tiles() -> Iterator[None]:
    """While compiling a flex call that needs a backward: offer inductor backward tiles that fit 64- and 32-token
    blocks, and compile the backward now, in this thread.

    Without max-autotune inductor offers one backward tile config per GPU and head size and drops it
    unless the BlockMask's block sizes are multiples of its tiles; on sm90 at head dim 64-128 that is
    (64, 128, 128, 64), so no 64-token mask had a backward ("NoValidChoicesError: No choices to select",
    H200, torch 2.11, 2026-12-01). The extra tiles go in through inductor's hook for heuristics
    (``V.set_choices_handler``), which is per thread: AOTAutograd would otherwise lower a static-shape
    backward lazily, at the first backward, in autograd's device thread, without them. A handler the user
    set is left alone; nothing outlives the call.
    """
    from torch._inductor.choices import InductorChoices
    from torch._inductor.virtualized import V

    if type(V.choices) is not InductorChoices:
        yield
        return
    eager = (torch._functorch.config.patch(force_non_lazy_backward_lowering=True)
             if hasattr(torch._functorch.config, "force_non_lazy_backward_lowering") else nullcontext())
    with V.set_choices_handler(_small_backward_tiles()()), eager:
        yield


@cache
def _small_backward_tiles() -> type:
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexBwDConfig

    class SmallBackwardTiles(InductorChoices):
        def get_flex_attention_bwd_configs(self, head_dim: int, dtype: torch.dtype,
                                           device_type: str | None = "cuda") -> list[Any]:
            configs = list(super().get_flex_attention_bwd_configs(head_dim, dtype, device_type))
            if device_type != "cuda" or dtype == torch.float32:
                return configs
            stages = 3 if head_dim <= 64 else 2  # head 64, 64 x 64 tiles: 3 stages won inductor's autotune (H200)
            small = [FlexBwDConfig(t, t, t, t, stages, 4) for t in (64, 32)]
            return configs + [c for c in small if c not in configs]

    return SmallBackwardTiles


def masked_sdpa(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, *, scale: float | None = None,
                score_mod: Callable[..., Tensor] | None = None) -> Tensor:
    """The same attention as flex over ``block_mask``, as SDPA with an S x S token mask: the training route off
    CUDA (flex_attention has no backward on CPU). Tokens are kept where their tile is listed (partial or full)
    and, in partial tiles, where ``mask_mod`` allows; rows with nothing kept give 0, as flex does."""
    if score_mod is not None:
        raise ValueError("training through sparse attention with a score_mod (logit soft-capping) needs a CUDA GPU")
    sq, skv = q.shape[2], k.shape[2]
    q_block, kv_block = block_mask.BLOCK_SIZE
    tiles = block_mask.to_dense().bool()  # [B|1, H|1, nq, nk]: listed tiles
    full = torch.zeros_like(tiles)
    if block_mask.full_kv_num_blocks is not None:
        full = BlockMask.from_kv_blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices,
                                        BLOCK_SIZE=block_mask.BLOCK_SIZE, seq_lengths=(sq, skv)).to_dense().bool()
    rows, cols = torch.arange(sq, device=q.device) // q_block, torch.arange(skv, device=q.device) // kv_block
    listed, whole = (t[:, :, rows][..., cols] for t in (tiles, full))
    mod = create_mask(block_mask.mask_mod, tiles.shape[0], tiles.shape[1], sq, skv, device=q.device)
    mask = (listed & mod) | whole
    empty = ~mask.any(-1, keepdim=True)  # e.g. left-padded rows: attend to something finite, then give 0
    safe = mask | (empty & (torch.arange(skv, device=q.device) == 0))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=safe, scale=scale,
                                                          enable_gqa=q.shape[1] != k.shape[1])
    return out.masked_fill(empty, 0.0)


def flex_options(q: Tensor, block_size: tuple[int, int], backend: str, *, compiled: bool,
                 plain_mask: bool, backward: bool = False) -> dict[str, Any] | None:
    """The ``kernel_options`` of one call: the resolved backend's (``kernel_backend``, ``kernel_options``)."""
    kernel = kernel_backend(backend, q.device, compiled=compiled, plain_mask=plain_mask, dtype=q.dtype,
                            block_size=block_size, backward=backward)
    return kernel_options(q.device, q.shape[-1], block_size, kernel)


def within_recompile_limit(call: Callable[[], Any], mode: str) -> Any:
    """Run a compiled call that holds flex_attention; past ``RECOMPILE_LIMIT`` shapes raise, never run eager."""
    try:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
            return call()
    except torch._dynamo.exc.FailOnRecompileLimitHit as err:
        raise RuntimeError(f"flex_attention was compiled for {RECOMPILE_LIMIT} different shapes in compile mode "
                           f"{mode!r} (static compiles once per sequence length); use compile='auto' for "
                           "workloads with many lengths") from err


def dense_attention(q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None, *,
                    scale: float | None = None) -> Tensor:
    """Causal SDPA, queries aligned to the end of the keys (prefill, chunked prefill and decode).

    ``attention_mask`` is [B, Skv] with 1 for real tokens. Queries with no real key to attend
    (left padding) attend everything instead of producing NaN; their outputs are padding anyway.
    """
    sq, skv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if attention_mask is None and sq in (1, skv):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=sq > 1, scale=scale,
                                                                enable_gqa=gqa)
    rows = torch.arange(skv - sq, skv, device=q.device)[:, None]
    mask = (torch.arange(skv, device=q.device)[None, :] <= rows)[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
    mask = mask | ~mask.any(-1, keepdim=True)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
