"""Triton route of the ground truth: an lse pass and a per-tile map kernel (see the package docstring).

On CPU tensors the kernels run in Triton's interpreter (TRITON_INTERPRET=1 set before triton is
imported): that is how the tests check them without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


try:  # Triton is optional: without it everything runs on the PyTorch route
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 -- a broken install must not break importing seerflex
    triton = None
    tl = None

LOG2E = 1.4426950408889634
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def triton_supported(q: Tensor, k: Tensor, block_size: int) -> bool:
    """Whether the kernels cover these inputs (tl.dot needs tiles of 16..128 and a float16/32 type;
    the grid's second axis, one program per query block, stops at 65535)."""
    return (triton is not None and q.dtype in TRITON_DTYPES and k.dtype == q.dtype
            and 16 <= block_size <= 128 and block_size & (block_size - 1) == 0 and q.shape[-1] <= 256
            and -(-q.shape[2] // block_size) <= 65535)


def triton_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                     block_size: int, mode: str, lse_config: dict[str, int] | None = None,
                     map_config: dict[str, int] | None = None, rows: Tensor | None = None) -> Tensor:
    """Triton map. ``lse_config`` / ``map_config`` override launch settings (benchmark sweeps, tests);
    ``rows`` (sorted square-block indices): programs for those rows alone, and lse only where they need it.

    On CPU tensors the kernels run in Triton's interpreter (slow; for tests; needs TRITON_INTERPRET=1).
    """
    if not triton_supported(q, k, block_size):
        raise ValueError(f"the Triton route does not cover dtype {q.dtype}/{k.dtype}, block_size {block_size}, "
                         f"head size {q.shape[-1]}, length {q.shape[2]} (needs float16/bfloat16/float32, "
                         "power-of-two block 16..128, head size <= 256, at most 65535 query blocks)")
    if q.is_cuda:
        with torch.cuda.device(q.device):  # Triton launches on the current device
            return _triton_block_map(q, k, valid, lse, scale, block_size, mode, lse_config, map_config, rows)
    return _triton_block_map(q, k, valid, lse, scale, block_size, mode, lse_config, map_config, rows)


def _triton_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                      block_size: int, mode: str, lse_config: dict[str, int] | None,
                      map_config: dict[str, int] | None, rows: Tensor | None) -> Tensor:
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
        lse2 = torch.empty(b, hq, s, dtype=torch.float32, device=q.device)  # rows not asked for stay unset
        lse_rows = None if rows is None else _lse_rows(rows, block_size, cfg["BLOCK_M"])
        lse_kernel[(b * hq, triton.cdiv(s, cfg["BLOCK_M"]) if rows is None else len(lse_rows))](
            q, k, mask, lse2, _rows_arg(lse_rows, q), *qs, *ks, *ms, s, hq, group, scale * LOG2E, **common,
            HAS_ROWS=rows is not None, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], num_warps=cfg["num_warps"],
            num_stages=cfg["num_stages"])
    else:
        lse2 = (lse.to(device=q.device, dtype=torch.float32) * LOG2E).contiguous()
    cfg = _default_map_config(d, block_size, q.dtype) | (map_config or {})
    out = torch.zeros(b, hq, n, n, dtype=torch.float32, device=q.device)
    map_rows = None if rows is None else rows.flip(0)  # longest rows first
    map_kernel[(b * hq, n if rows is None else len(map_rows))](
        q, k, mask, lse2, out, _rows_arg(map_rows, q), *qs, *ks, *ms, s, hq, group, n, scale * LOG2E, **common,
        HAS_ROWS=rows is not None, MODE_MAX=mode == "max", BS=block_size, num_warps=cfg["num_warps"],
        num_stages=cfg["num_stages"])
    return out


def _lse_rows(rows: Tensor, block_size: int, block_m: int) -> Tensor:
    """The lse kernel's row blocks (of ``block_m`` queries) that cover the map rows ``rows``, longest first."""
    starts = (rows[:, None] * block_size + torch.arange(0, block_size, block_m)).flatten()
    return (starts // block_m).unique().flip(0).to(torch.int32)


def _rows_arg(rows: Tensor | None, like: Tensor) -> Tensor:
    if rows is None:
        return like.new_zeros(1, dtype=torch.int32)
    rows = rows.to(torch.int32).contiguous()
    # from pinned memory without blocking: a plain host-to-GPU copy would wait for the GPU's queue to drain
    return rows.pin_memory().to(like.device, non_blocking=True) if like.is_cuda else rows


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
    def _lse_kernel(Q, K, Mask, Lse2, Rows,
                    sqb, sqh, sqs, sqd, skb, skh, sks, skd, smb, sms,
                    S, H, GROUP, qk_scale,
                    HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr, HAS_MASK: tl.constexpr,
                    HAS_ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Row log2-sum-exp2 of causal scores for BLOCK_M queries: FlashAttention's forward minus P.V."""
        pid_bh = tl.program_id(0)
        if HAS_ROWS:  # the row blocks asked for, longest first
            pid_m = tl.load(Rows + tl.program_id(1))
        else:
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
    def _map_kernel(Q, K, Mask, Lse2, Out, Rows,
                    sqb, sqh, sqs, sqd, skb, skh, sks, skd, smb, sms,
                    S, H, GROUP, NB, qk_scale,
                    HEAD_D: tl.constexpr, BLOCK_D: tl.constexpr, FP32: tl.constexpr, HAS_MASK: tl.constexpr,
                    HAS_ROWS: tl.constexpr, MODE_MAX: tl.constexpr, BS: tl.constexpr):
        """Row i of the block map for one (batch, head): each causal BS x BS tile reduced to one number."""
        pid_bh = tl.program_id(0)
        if HAS_ROWS:
            pid_i = tl.load(Rows + tl.program_id(1))
        else:
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
