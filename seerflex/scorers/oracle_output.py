"""Output oracle: key blocks ranked by how far dropping them moves each query's attention output.

The mass oracle keeps the blocks holding the most probability. What a dropped block costs a query t is
not its mass p_tj but d_tj = sum_{s in j} p_ts (v_s - o_t): a block whose values equal the output it
contributes to can go at no cost, however heavy. (Dropping a set J moves o_t by -sum_{j in J} d_tj /
(1 - sum_{j in J} p_tj), so ranking by ||d_tj|| is the greedy choice for the output error.) The score is
log mean_{t in query block i} ||d_tj||, on the exact post-RoPE attention (a ``score_mod`` such as
soft-capping is not applied): a per-block greedy proxy for the output error, the evidence for or against
distilling gates towards a value-aware target. On Qwen2.5-Coder and SmolLM2 it reads within one point of the
mass oracle (RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.scorer import ScorerInputs

CHUNK_ELEMENTS = 1 << 26  # elements per chunk tensor (256 MB in float32; ~5 such tensors live at once)


class OracleOutputScores:
    name = "oracle_output"

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        if x.v is None:
            raise ValueError("the oracle_output scorer needs the values (ScorerInputs.v); this caller gave none")
        layout, q, k, v = x.layout, x.q, x.k, x.v
        b, hq, s, d = q.shape
        hkv, dv = k.shape[1], v.shape[-1]
        (nq, nk), bs, qbs = layout.shape, layout.block_size, layout.q_block_size
        dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        valid = torch.ones(b, s, dtype=torch.bool, device=q.device) if layout.valid_tokens is None \
            else layout.valid_tokens
        scale = d ** -0.5 if x.scale is None else x.scale
        pad = nk * bs - s
        qg = q.view(b, hkv, hq // hkv, s, d)  # query heads grouped by KV head: K and V are never repeated
        keys = torch.nn.functional.pad(k, (0, 0, 0, pad)).to(dtype)
        values = torch.nn.functional.pad(v, (0, 0, 0, pad)).to(dtype).view(b, hkv, nk, bs, dv)
        k_valid = torch.nn.functional.pad(valid, (0, pad))
        out = torch.zeros(b, hq, nq, nk, dtype=torch.float32, device=q.device)
        rows = max(1, CHUNK_ELEMENTS // (b * hq * nk * max(dv, bs)) // qbs) * qbs  # whole query blocks
        for start in range(0, s, rows):
            stop = min(s, start + rows)
            cols = -(-stop // bs)  # key blocks this chunk can see
            logits = torch.einsum("bhgrd,bhkd->bhgrk", qg[:, :, :, start:stop].to(dtype), keys[:, :, :cols * bs])
            qpos = torch.arange(start, stop, device=q.device)
            allowed = (torch.arange(cols * bs, device=q.device) <= qpos[:, None])[None] & k_valid[:, None, :cols * bs]
            probs = (logits * scale).masked_fill_(~allowed[:, None, None], float("-inf")).softmax(-1)
            probs = probs.nan_to_num_(0.0).unflatten(-1, (cols, bs))  # [B, Hkv, G, R, cols, bs]
            partial = torch.einsum("bhgrjs,bhjsd->bhgrjd", probs, values[:, :, :cols])
            output = partial.sum(-2, keepdim=True)
            cost = (partial - probs.sum(-1, keepdim=True) * output).norm(dim=-1).flatten(1, 2)  # [B, Hq, R, cols]
            out[:, :, start // qbs: -(-stop // qbs), :cols] = _block_means(cost, valid[:, start:stop], qbs)
        scores = out.clamp(min=1e-30).log()
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))


def _block_means(cost: Tensor, q_valid: Tensor, qbs: int) -> Tensor:
    """[B, H, R, n] per-query costs -> [B, H, ceil(R / qbs), n]: the mean over each query block's real queries
    (padded ones are left out here)."""
    pad = -cost.shape[2] % qbs
    cost = torch.nn.functional.pad(cost, (0, 0, 0, pad)).unflatten(2, (-1, qbs))
    real = torch.nn.functional.pad(q_valid, (0, pad)).to(cost.dtype).view(cost.shape[0], 1, -1, qbs, 1)
    return ((cost * real).sum(3) / real.sum(3).clamp(min=1)).float()
