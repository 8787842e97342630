"""Ground truth for gate distillation: the block-pooled attention map of the frozen model.

For every (head, query block i, key block j) of causal attention softmax(q k^T * scale):

* ``max`` (the original SeerAttention target): the largest softmax probability inside the tile,
  each row i then normalised to sum 1;
* ``mass``: the probability mass a query puts in key block j, averaged over block i's real queries
  (rows sum to 1 by construction) -- what a block-sparse mask actually keeps or loses.

Two routes compute the same map:

* PyTorch, chunked over query blocks against only the keys they can see, so memory stays
  O(B x H x chunk x S) and never S x S (CPU, float64 references, anything the kernels don't cover).
* Triton, for CUDA tensors: one QK^T-only pass for the row log-sum-exp (skipped when the caller
  already has ``lse`` from its dense flex pass), then one pass over the causal 2D tiles that reduces
  each tile to a single number in registers. No [S, S] or [S, S/bs] buffer exists, K is indexed by
  KV head (GQA without repeat_interleave), and the ``max`` mode needs no exponent per score:
  max_t,s exp(c*qk - lse_t) = exp(max_t (c*max_s qk - lse_t)).

``SEERFLEX_GT_BACKEND`` = ``torch`` | ``triton`` | ``auto`` (default) overrides the choice; ``triton``
on CPU tensors runs the kernels in Triton's interpreter (with TRITON_INTERPRET=1 set before triton is
imported), which is how the tests check them.
"""

import math
import os
from typing import Any, Literal

import torch
from torch import Tensor

try:  # Triton is optional: without it everything runs on the PyTorch route
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 -- a broken install must not break importing seerflex
    triton = None
    tl = None

MODES = ("max", "mass")
CHUNK_ELEMENTS = 1 << 27  # scores per chunk on the torch route (512 MB in float32)
BACKEND_ENV = "SEERFLEX_GT_BACKEND"
LOG2E = 1.4426950408889634
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def block_attention_map(q: Tensor, k: Tensor, *, block_size: int = 64, mode: Literal["max", "mass"] = "max",
                        scale: float | None = None, attention_mask: Tensor | None = None,
                        lse: Tensor | None = None) -> Tensor:
    """Block map [B, Hq, n, n] (float32, n = ceil(S / block_size), zeros above the diagonal).

    q [B, Hq, S, D] and k [B, Hkv, S, D] as the attention sees them (post-RoPE); GQA: query head h
    uses KV head h // (Hq // Hkv). ``attention_mask`` [B, S], 1 = real token: padded keys get no
    probability and padded queries contribute nothing (a fully padded query block is a zero row).
    ``lse`` [B, Hq, S]: the rows' natural-log sum of exp(scores), if a dense pass already made it
    (flex_attention's ``return_aux=AuxRequest(lse=True)``); it saves one pass over QK^T.
    Runs without autograd (the target of a distillation loss needs no gradient).
    """
    _check(q, k, block_size, mode, attention_mask, lse)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    valid = None if attention_mask is None else attention_mask.to(device=q.device, dtype=torch.bool)
    with torch.no_grad():
        if _backend(q, k, block_size) == "triton":
            return triton_block_map(q, k, valid, lse, scale, block_size, mode)
        return torch_block_map(q, k, valid, lse, scale, block_size, mode)


# ----------------------------------------------------------------------------------------------
# PyTorch route


def torch_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                    block_size: int, mode: str) -> Tensor:
    """Chunked PyTorch map; computes in float64 when q is float64 (the references use that)."""
    b, hq, s, d = q.shape
    hkv, n = k.shape[1], -(-s // block_size)
    if valid is None:
        valid = torch.ones(b, s, dtype=torch.bool, device=q.device)
    out = torch.zeros(b, hq, n, n, dtype=torch.float32, device=q.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // (b * hq * s * block_size)) * block_size
    # query heads grouped by KV head: [B, Hkv, G, S, D] (splitting one dim is always a view), so K is never repeated
    qg = q.view(b, hkv, hq // hkv, s, d)
    lse_g = None if lse is None else lse.view(b, hkv, hq // hkv, s)
    for start in range(0, s, rows_per_chunk):
        stop = min(s, start + rows_per_chunk)
        block = chunk_map(qg[:, :, :, start:stop], k[:, :, :stop], valid[:, start:stop], valid[:, :stop],
                          None if lse_g is None else lse_g[:, :, :, start:stop], start, scale, block_size,
                          mode == "max")
        out[:, :, start // block_size: -(-stop // block_size), : block.shape[-1]] = block.flatten(1, 2)
    return _normalise(out) if mode == "max" else out


def chunk_map(q: Tensor, k: Tensor, q_valid: Tensor, k_valid: Tensor, lse: Tensor | None, start: int,
              scale: float, bs: int, tile_max: bool) -> Tensor:
    """Block map rows for queries ``start .. start + R`` ([B, Hkv, G, R, D]) against keys ``0 .. start + R``."""
    b, hkv, g, r, d = q.shape
    kv_len = k.shape[2]
    dtype = torch.float64 if torch.float64 in (q.dtype, k.dtype) else torch.float32
    scores = torch.einsum("bhgrd,bhkd->bhgrk", q.to(dtype), k.to(dtype)) * scale
    qpos = torch.arange(start, start + r, device=q.device)
    allowed = (torch.arange(kv_len, device=q.device)[None, :] <= qpos[:, None])[None] & k_valid[:, None, :]
    allowed = allowed & q_valid[:, :, None]
    scores = scores.masked_fill_(~allowed[:, None, None], float("-inf"))
    if lse is None:
        lse = scores.logsumexp(-1)
    # a padded query row is all -inf; its lse is -inf (or junk): exp gives 0 or NaN -> 0, never NaN out
    probs = scores.sub_(lse.to(dtype)[..., None]).exp_().nan_to_num_(0.0)
    pad_q, pad_k = -r % bs, -kv_len % bs
    probs = torch.nn.functional.pad(probs, (0, pad_k, 0, pad_q))
    tiles = probs.view(b, hkv, g, (r + pad_q) // bs, bs, (kv_len + pad_k) // bs, bs)
    if tile_max:
        return tiles.amax(dim=(4, 6)).float()
    counts = torch.nn.functional.pad(q_valid, (0, pad_q)).view(b, 1, 1, -1, bs).sum(-1, keepdim=True)
    return (tiles.sum(dim=(4, 6)) / counts.clamp(min=1)).float()


def _normalise(out: Tensor) -> Tensor:
    return out / out.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


# ----------------------------------------------------------------------------------------------
# Triton route


def triton_supported(q: Tensor, k: Tensor, block_size: int) -> bool:
    """Whether the kernels cover these inputs (tl.dot needs tiles of 16..128 and a float16/32 type;
    the grid's second axis, one program per query block, stops at 65535)."""
    return (triton is not None and q.dtype in TRITON_DTYPES and k.dtype == q.dtype
            and 16 <= block_size <= 128 and block_size & (block_size - 1) == 0 and q.shape[-1] <= 256
            and -(-q.shape[2] // block_size) <= 65535)


def triton_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                     block_size: int, mode: str, lse_config: dict[str, int] | None = None,
                     map_config: dict[str, int] | None = None) -> Tensor:
    """Triton map. ``lse_config`` / ``map_config`` override launch settings (benchmark sweeps, tests).

    On CPU tensors the kernels run in Triton's interpreter (slow; for tests; needs TRITON_INTERPRET=1).
    """
    if not triton_supported(q, k, block_size):
        raise ValueError(f"the Triton route does not cover dtype {q.dtype}/{k.dtype}, block_size {block_size}, "
                         f"head size {q.shape[-1]}, length {q.shape[2]} (needs float16/bfloat16/float32, "
                         "power-of-two block 16..128, head size <= 256, at most 65535 query blocks)")
    if q.is_cuda:
        with torch.cuda.device(q.device):  # Triton launches on the current device
            return _triton_block_map(q, k, valid, lse, scale, block_size, mode, lse_config, map_config)
    return _triton_block_map(q, k, valid, lse, scale, block_size, mode, lse_config, map_config)


def _triton_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                      block_size: int, mode: str, lse_config: dict[str, int] | None,
                      map_config: dict[str, int] | None) -> Tensor:
    b, hq, s, d = q.shape
    group, n = hq // k.shape[1], -(-s // block_size)
    lse_kernel, map_kernel = _kernels(interpret=not q.is_cuda)
    block_d = max(16, triton.next_power_of_2(d))
    fp32 = q.dtype == torch.float32  # fp32 inputs: 3-pass TF32 products (~fp32 accurate), not plain TF32
    common = dict(HEAD_D=d, BLOCK_D=block_d, FP32=fp32, HAS_MASK=valid is not None)
    mask = valid.to(torch.int8).contiguous() if valid is not None else q.new_zeros(1, 1, dtype=torch.int8)
    qs, ks, ms = q.stride(), k.stride(), mask.stride()
    if lse is None:
        cfg = _default_lse_config(d, q.dtype) | (lse_config or {})
        if cfg["BLOCK_M"] % cfg["BLOCK_N"] or cfg["BLOCK_N"] < 16:
            raise ValueError(f"lse tiles need BLOCK_N >= 16 dividing BLOCK_M, got {cfg}")
        lse2 = torch.empty(b, hq, s, dtype=torch.float32, device=q.device)
        lse_kernel[(b * hq, triton.cdiv(s, cfg["BLOCK_M"]))](
            q, k, mask, lse2, *qs, *ks, *ms, s, hq, group, scale * LOG2E, **common,
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    else:
        lse2 = (lse.to(device=q.device, dtype=torch.float32) * LOG2E).contiguous()
    cfg = _default_map_config(d, block_size, q.dtype) | (map_config or {})
    out = torch.zeros(b, hq, n, n, dtype=torch.float32, device=q.device)
    map_kernel[(b * hq, n)](
        q, k, mask, lse2, out, *qs, *ks, *ms, s, hq, group, n, scale * LOG2E, **common,
        MODE_MAX=mode == "max", BS=block_size, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return _normalise(out) if mode == "max" else out


def _default_lse_config(d: int, dtype: torch.dtype) -> dict[str, int]:
    """FlashAttention-like forward tiles; smaller where shared memory would not hold them (fp32, d 256)."""
    if dtype == torch.float32 or d > 128:
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}


def _default_map_config(d: int, block_size: int, dtype: torch.dtype) -> dict[str, int]:
    big = dtype == torch.float32 or d > 128
    return {"num_warps": 8 if block_size >= 128 else 4, "num_stages": 2 if big or block_size >= 128 else 3}


if triton is not None:

    @triton.jit
    def _lse_kernel(Q, K, Mask, Lse2,
                    sqb, sqh, sqs, sqd, skb, skh, sks, skd, smb, sms,
                    S, H, GROUP, qk_scale,
                    HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr, HAS_MASK: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Row log2-sum-exp2 of causal scores for BLOCK_M queries: FlashAttention's forward minus P.V."""
        pid_bh = tl.program_id(0)
        pid_m = tl.num_programs(1) - 1 - tl.program_id(1)  # longest rows first
        off_b = pid_bh // H
        off_h = pid_bh % H
        start_m = pid_m * BLOCK_M
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_n0 = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_D
        # 64-bit bases, small 32-bit offsets inside a tile: no overflow at any length or layout
        q_ptrs = (Q + off_b.to(tl.int64) * sqb + off_h.to(tl.int64) * sqh + start_m.to(tl.int64) * sqs
                  + tl.arange(0, BLOCK_M)[:, None] * sqs + offs_d[None, :] * sqd)
        q = tl.load(q_ptrs, mask=(offs_m[:, None] < S) & d_ok[None, :], other=0.0)
        k_base = K + off_b.to(tl.int64) * skb + (off_h // GROUP).to(tl.int64) * skh
        k_tile = offs_n0[:, None] * sks + offs_d[None, :] * skd
        m_base = Mask + off_b.to(tl.int64) * smb
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        # keys before the block: every query sees them, all are < S
        k_ptrs = k_base + k_tile
        mk_ptrs = m_base + offs_n0 * sms
        for _ in range(0, start_m, BLOCK_N):
            kt = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
            if FP32:
                x = tl.dot(q, tl.trans(kt), input_precision="tf32x3") * qk_scale
            else:
                x = tl.dot(q, tl.trans(kt)) * qk_scale
            if HAS_MASK:
                x = tl.where(tl.load(mk_ptrs)[None, :] != 0, x, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(x, 1))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet: no -inf - -inf
            l_i = l_i * tl.exp2(m_i - m_ref) + tl.sum(tl.exp2(x - m_ref[:, None]), 1)
            m_i = m_new
            k_ptrs += BLOCK_N * sks
            mk_ptrs += BLOCK_N * sms
        # the block's own keys: causal and length masks
        for start_n in range(start_m, tl.minimum(start_m + BLOCK_M, S), BLOCK_N):
            offs_n = start_n + offs_n0
            kt = tl.load(k_ptrs, mask=(offs_n[:, None] < S) & d_ok[None, :], other=0.0)
            if FP32:
                x = tl.dot(q, tl.trans(kt), input_precision="tf32x3") * qk_scale
            else:
                x = tl.dot(q, tl.trans(kt)) * qk_scale
            ok = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < S)
            if HAS_MASK:
                ok = ok & (tl.load(mk_ptrs, mask=offs_n < S, other=0)[None, :] != 0)
            x = tl.where(ok, x, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(x, 1))
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp2(m_i - m_ref) + tl.sum(tl.exp2(x - m_ref[:, None]), 1)
            m_i = m_new
            k_ptrs += BLOCK_N * sks
            mk_ptrs += BLOCK_N * sms
        # a row with any key has l_i >= 1 (its max adds exp2(0)); the maximum only silences log2(0)
        lse2 = tl.where(l_i > 0, m_i + tl.log2(tl.maximum(l_i, 1.0)), float("-inf"))
        tl.store(Lse2 + pid_bh.to(tl.int64) * S + offs_m, lse2, mask=offs_m < S)

    @triton.jit
    def _map_kernel(Q, K, Mask, Lse2, Out,
                    sqb, sqh, sqs, sqd, skb, skh, sks, skd, smb, sms,
                    S, H, GROUP, NB, qk_scale,
                    HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr, HAS_MASK: tl.constexpr,
                    MODE_MAX: tl.constexpr, BS: tl.constexpr):
        """Row i of the block map for one (batch, head): each causal BS x BS tile reduced to one number."""
        pid_bh = tl.program_id(0)
        pid_i = tl.num_programs(1) - 1 - tl.program_id(1)  # longest rows first
        off_b = pid_bh // H
        off_h = pid_bh % H
        start_m = pid_i * BS
        offs_m = start_m + tl.arange(0, BS)
        offs_n0 = tl.arange(0, BS)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_D
        m_base = Mask + off_b.to(tl.int64) * smb
        row_ok = offs_m < S
        if HAS_MASK:
            row_ok = row_ok & (tl.load(m_base + offs_m * sms, mask=offs_m < S, other=0) != 0)
        # a masked row gets lse = +inf: every score minus it is -inf, so it adds 0 to max and sum
        lse2 = tl.load(Lse2 + pid_bh.to(tl.int64) * S + offs_m, mask=row_ok, other=0.0)
        lse2 = tl.where(row_ok, lse2, float("inf"))
        inv_count = 1.0 / tl.maximum(tl.sum(row_ok.to(tl.float32), 0), 1.0)
        q_ptrs = (Q + off_b.to(tl.int64) * sqb + off_h.to(tl.int64) * sqh + start_m.to(tl.int64) * sqs
                  + offs_n0[:, None] * sqs + offs_d[None, :] * sqd)
        q = tl.load(q_ptrs, mask=(offs_m[:, None] < S) & d_ok[None, :], other=0.0)
        k_base = K + off_b.to(tl.int64) * skb + (off_h // GROUP).to(tl.int64) * skh
        k_ptrs = k_base + offs_n0[:, None] * sks + offs_d[None, :] * skd
        mk_ptrs = m_base + offs_n0 * sms
        out_ptr = Out + (pid_bh.to(tl.int64) * NB + pid_i) * NB
        for _ in range(0, pid_i):  # tiles below the diagonal: all keys seen, all < S
            kt = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
            if FP32:
                qk = tl.dot(q, tl.trans(kt), input_precision="tf32x3")
            else:
                qk = tl.dot(q, tl.trans(kt))
            if HAS_MASK:
                qk = tl.where(tl.load(mk_ptrs)[None, :] != 0, qk, float("-inf"))
            if MODE_MAX:  # exp is monotone: one exponent per tile, not per score
                val = tl.exp2(tl.max(tl.max(qk, 1) * qk_scale - lse2, 0))
            else:
                val = tl.sum(tl.sum(tl.exp2(qk * qk_scale - lse2[:, None]), 1), 0) * inv_count
            tl.store(out_ptr, val)
            out_ptr += 1
            k_ptrs += BS * sks
            mk_ptrs += BS * sms
        # the diagonal tile (k_ptrs, mk_ptrs and out_ptr now point at it)
        offs_n = start_m + offs_n0
        kt = tl.load(k_ptrs, mask=(offs_n[:, None] < S) & d_ok[None, :], other=0.0)
        if FP32:
            qk = tl.dot(q, tl.trans(kt), input_precision="tf32x3")
        else:
            qk = tl.dot(q, tl.trans(kt))
        ok = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < S)
        if HAS_MASK:
            ok = ok & (tl.load(mk_ptrs, mask=offs_n < S, other=0)[None, :] != 0)
        qk = tl.where(ok, qk, float("-inf"))
        if MODE_MAX:
            val = tl.exp2(tl.max(tl.max(qk, 1) * qk_scale - lse2, 0))
        else:
            val = tl.sum(tl.sum(tl.exp2(qk * qk_scale - lse2[:, None]), 1), 0) * inv_count
        tl.store(out_ptr, val)


def _kernels(interpret: bool) -> tuple[Any, Any]:
    """The two kernels; CPU tensors need them built by Triton's interpreter (TRITON_INTERPRET=1 at import)."""
    if interpret and not _interpreted(_lse_kernel):
        raise ValueError("the Triton route on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported")
    return _lse_kernel, _map_kernel


def _interpreted(kernel: Any) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


# ----------------------------------------------------------------------------------------------
# dispatch and checks


def _backend(q: Tensor, k: Tensor, block_size: int) -> str:
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"{BACKEND_ENV} must be auto, torch or triton, got {choice!r}")
    if choice == "auto":
        return "triton" if q.is_cuda and triton_supported(q, k, block_size) else "torch"
    return choice


def _check(q: Tensor, k: Tensor, block_size: int, mode: str, attention_mask: Tensor | None,
           lse: Tensor | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown ground-truth mode {mode!r}; choose one of {MODES}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not isinstance(q, Tensor) or not isinstance(k, Tensor):
        raise ValueError("q and k must be tensors")
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"expected q [B, Hq, S, D] and k [B, Hkv, S, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if min(q.shape) == 0 or k.shape[1] == 0:
        raise ValueError(f"q and k must not be empty, got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]})")
    if not (q.is_floating_point() and k.is_floating_point()) or q.dtype != k.dtype or q.device != k.device:
        raise ValueError(f"q and k must be floating tensors of one dtype and device, got {q.dtype} on {q.device} "
                         f"and {k.dtype} on {k.device}")
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (q.shape[0], q.shape[2]):
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask)
            raise ValueError(f"attention_mask must be [B, S] = {(q.shape[0], q.shape[2])}, got {shape}")
        if attention_mask.is_complex():
            raise ValueError("attention_mask must be bool or integer (1 = real token)")
    if lse is not None:
        if not isinstance(lse, Tensor) or tuple(lse.shape) != tuple(q.shape[:3]):
            shape = tuple(lse.shape) if isinstance(lse, Tensor) else type(lse)
            raise ValueError(f"lse must be [B, Hq, S] = {tuple(q.shape[:3])}, got {shape}")
        bad = ~torch.isfinite(lse)
        if attention_mask is not None:  # padded rows may carry -inf (flex gives that)
            bad &= attention_mask.to(device=lse.device, dtype=torch.bool)[:, None, :]
        if bad.any():
            raise ValueError("lse must be finite at real (unpadded) query positions (found NaN or inf)")
    if not (_finite(q) and _finite(k)):
        raise ValueError("q and k must be finite (found NaN or inf)")


def _finite(t: Tensor) -> bool:
    # amax/amin propagate NaN and expose inf without an isfinite copy of a 32k-token q (134 MB)
    return bool(torch.isfinite(torch.stack([t.amax(), t.amin()])).all())


__all__ = ["MODES", "block_attention_map", "chunk_map", "torch_block_map", "triton_block_map", "triton_supported"]
