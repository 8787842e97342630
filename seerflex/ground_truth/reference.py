"""PyTorch route of the ground truth: chunked over query blocks, readable, float64-capable.

Each chunk of query blocks is scored only against the keys it can see, so memory stays
O(B x H x chunk x S), never S x S. The tests' references and every CPU run use this route.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 27  # scores per chunk (512 MB in float32)


def torch_block_map(q: Tensor, k: Tensor, valid: Tensor | None, lse: Tensor | None, scale: float,
                    block_size: int, mode: str, rows: Tensor | None = None) -> Tensor:
    """Chunked PyTorch map, square blocks, ``max`` tiles not yet normalised; computes in float64 when q is
    float64 (the references use that). ``rows`` (sorted square-block indices): only those rows, one chunk each."""
    b, hq, s, d = q.shape
    hkv, n = k.shape[1], -(-s // block_size)
    if valid is None:
        valid = torch.ones(b, s, dtype=torch.bool, device=q.device)
    out = torch.zeros(b, hq, n, n, dtype=torch.float32, device=q.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // (b * hq * s * block_size)) * block_size
    # query heads grouped by KV head: [B, Hkv, G, S, D] (splitting one dim is always a view), so K is never repeated
    qg = q.view(b, hkv, hq // hkv, s, d)
    lse_g = None if lse is None else lse.view(b, hkv, hq // hkv, s)
    starts = range(0, s, rows_per_chunk) if rows is None else [int(i) * block_size for i in rows]
    for start in starts:
        stop = min(s, start + (rows_per_chunk if rows is None else block_size))
        block = chunk_map(qg[:, :, :, start:stop], k[:, :, :stop], valid[:, start:stop], valid[:, :stop],
                          None if lse_g is None else lse_g[:, :, :, start:stop], start, scale, block_size,
                          mode == "max")
        out[:, :, start // block_size: -(-stop // block_size), : block.shape[-1]] = block.flatten(1, 2)
    return out


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


def normalise(out: Tensor) -> Tensor:
    return out / out.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)


def merge_query_blocks(raw: Tensor, ratio: int, mode: str, valid: Tensor | None, seq_len: int,
                       block_size: int) -> Tensor:
    """Square-block map [B, H, nk, nk] -> [B, H, nq, nk] for query blocks of ``ratio`` key blocks.

    ``max``: the largest probability of the merged tiles; ``mass``: the average over the query block's
    real queries, i.e. the sub-rows' averages weighted by their real-query counts.
    """
    b, h, nk, _ = raw.shape
    nq = -(-nk // ratio)
    rows = torch.nn.functional.pad(raw, (0, 0, 0, nq * ratio - nk)).view(b, h, nq, ratio, nk)
    if mode == "max":
        return rows.amax(3)
    real = torch.ones(b, seq_len, device=raw.device) if valid is None else valid.float()
    counts = torch.nn.functional.pad(real, (0, nq * ratio * block_size - seq_len)).view(b, 1, nq, ratio, 1, block_size)
    counts = counts.sum(-1)
    return (rows * counts).sum(3) / counts.sum(3).clamp(min=1)
