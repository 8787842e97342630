"""The prompt's last queries read exactly: what a policy's ``vertical`` columns are ranked by.

A policy with ``vertical=N`` keeps, in every row, the N far key blocks that the last real query-block row ranks
highest. A scorer's own last row is an estimate; the last ``LAST_QUERIES`` queries' causal attention
(post-RoPE Q/K, as MInference's vertical lines) is cheap to compute exactly (64 x S per head) and is what the
question at the prompt's end reads. The layer therefore writes that attention's log mass per key block into
the last real row of the scores the policy ranks (never into a learning gate's logits). On Qwen2.5-Coder at 16k
and 32k, XAttention's own last row as the columns' ranking lifted RULER by 0.043 while the learned gates'
pooled last row did not (RESULTS.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.policies.base import Policy
from seerflex.scorer import ScorerInputs

LAST_QUERIES = 64


def last_rows(valid: Tensor, last_q: int = LAST_QUERIES) -> tuple[Tensor, Tensor]:
    """(rows [B, L], real [B, L]): the positions of each sequence's last ``last_q`` real tokens (``valid`` [B, S]
    bool), oldest first; where a sequence has fewer, the missing rows are position 0 and not ``real``."""
    s = valid.shape[1]
    end = s - 1 - valid.int().flip(-1).argmax(-1)  # [B] the last real token
    rows = end[:, None] - torch.arange(min(last_q, s) - 1, -1, -1, device=valid.device)  # [B, L]
    real = (rows >= 0) & valid.gather(1, rows.clamp(min=0))
    return rows.clamp(min=0), real


def last_query_attention(q: Tensor, k: Tensor, valid_tokens: Tensor | None, scale: float | None = None,
                         last_q: int = LAST_QUERIES) -> tuple[Tensor, Tensor]:
    """(probs [B, H, L, S] float32, rows [B, L]): the causal attention of each sequence's last ``last_q`` real
    queries (post-RoPE ``q`` [B, H, S, D], ``k`` [B, Hkv, S, D]; padding anywhere is left out, and a sequence with
    fewer real tokens has zero rows) and their positions. The one reading of the prompt's end that the vertical
    columns, MInference's vertical-slash lines and FlexPrefill share. A ``score_mod`` (soft-capping) is not applied.
    Memory: [B, H, L, S] float32 (1 GiB at 128k tokens with 32 heads)."""
    b, h, s, d = q.shape
    valid = torch.ones(b, s, dtype=torch.bool, device=q.device) if valid_tokens is None else valid_tokens
    rows, real = last_rows(valid, last_q)
    hkv, n_rows = k.shape[1], rows.shape[1]
    # GQA without repeating K: query heads h = kv * group + g read key head kv, so a head group is one matmul
    queries = q.gather(2, rows[:, None, :, None].expand(b, h, n_rows, d)).float().reshape(b, hkv, -1, d)
    logits = (queries @ k.float().transpose(-1, -2)).view(b, h, n_rows, s)  # [B, H, L, S]
    logits = logits * (d ** -0.5 if scale is None else scale)
    allowed = (torch.arange(s, device=q.device) <= rows[:, :, None]) & valid[:, None, :] & real[:, :, None]
    return logits.masked_fill_(~allowed[:, None], float("-inf")).softmax(-1).nan_to_num_(0.0), rows


def with_last_queries(scores: Tensor, q: Tensor, k: Tensor, valid_tokens: Tensor | None, block_size: int,
                      q_block_size: int, scale: float | None = None, last_q: int = LAST_QUERIES) -> Tensor:
    """``scores`` [B, H, nq, nk] with each sequence's last real query-block row replaced by the log of the block
    mass that its last ``last_q`` real queries' exact causal attention (``last_query_attention``) puts on each key
    block (``valid_tokens`` [B, S] as ``BlockLayout``'s). Plain tensors and sizes, so the fused plan calls it
    inside its graph."""
    b, h, s, _ = q.shape
    probs, rows = last_query_attention(q, k, valid_tokens, scale, last_q)
    n = -(-s // block_size)
    mass = torch.nn.functional.pad(probs.sum(2), (0, n * block_size - s)).view(b, h, n, -1).sum(-1)
    row = (rows[:, -1] // q_block_size).view(b, 1, 1, 1).expand(b, h, 1, n)
    return scores.scatter(2, row, mass.clamp(min=1e-30).log()[:, :, None].to(scores.dtype))


def last_query_inputs(policy: Policy, q: Tensor, k: Tensor, scale: float | None
                      ) -> tuple[Tensor, Tensor, float | None] | None:
    """The post-RoPE Q/K and scale whose last queries rank ``policy``'s vertical columns; None without them."""
    return (q.detach(), k.detach(), scale) if policy.vertical else None


def ranked_scores(policy: Policy, scores: Tensor, inputs: ScorerInputs) -> Tensor:
    """What ``policy`` ranks for one call's ``scores``: detached, with the last queries' row when it keeps
    ``vertical`` columns (the layer and the distillation collector read the same)."""
    last, layout = last_query_inputs(policy, inputs.q, inputs.k, inputs.scale), inputs.layout
    return scores.detach() if last is None else with_last_queries(
        scores.detach(), last[0], last[1], layout.valid_tokens, layout.block_size, layout.q_block_size, last[2])
