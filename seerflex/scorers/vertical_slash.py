"""MInference's vertical-slash estimate (Jiang et al. 2024, microsoft/MInference), mapped to blocks.

The last ``last_q`` real queries (64) attend to every key (causal softmax, post-RoPE Q/K). Their summed
probabilities per key column are the *vertical* lines (tokens every query reads: sinks, anchors) and
per offset q - k the *slash* lines (fixed relative distances: local windows, periodic patterns). A
tile's score is the log of the vertical mass of its key block plus the slash mass of every offset
that crosses the tile, so a policy keeps the tiles the strongest lines pass through. MInference
itself keeps the top 1000 vertical and 6096 slash lines and computes every tile a kept line crosses;
here the same estimate ranks tiles and the policy sets the budget (e.g. ``topk:0.1`` or
``topp:0.95``). Padding is left out: under right padding the lines are the last *real* queries'.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.last_queries import last_query_attention
from seerflex.layout import BlockLayout
from seerflex.scorer import ScorerInputs


class VerticalSlashScores:
    name = "vertical_slash"

    def __init__(self, last_q: int = 64) -> None:
        self.last_q = last_q

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        return tile_scores(*last_query_lines(x, self.last_q), x.layout)


def tile_scores(vertical: Tensor, slash: Tensor, layout: BlockLayout) -> Tensor:
    """Log of each tile's vertical mass (its key block) plus the slash mass of the offsets crossing it."""
    s = slash.shape[-1]
    # offsets crossing tile (i, j): first row - last key ... last row - first key (a short last block too)
    cumulative = torch.nn.functional.pad(slash.cumsum(-1), (1, 0))  # prefix sums: mass of offsets < o
    (q_first, q_final), (k_first, k_final) = (_spans(size, s, slash.device)
                                              for size in (layout.q_block_size, layout.block_size))
    low = (q_first[:, None] - k_final[None, :]).clamp(0, s)
    high = (q_final[:, None] - k_first[None, :] + 1).clamp(0, s)
    crossing = cumulative[..., high] - cumulative[..., low]  # [b, h, nq, nk]
    mass = block_sums(vertical, layout)[:, :, None, :] + crossing
    return mass.clamp(min=1e-30).log().masked_fill(~layout.selectable_blocks(slash.device), float("-inf"))


def _spans(size: int, s: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """First and last token of every block of ``size`` tokens."""
    first = torch.arange(-(-s // size), device=device) * size
    return first, (first + size).clamp(max=s) - 1


def block_sums(lines: Tensor, layout: BlockLayout) -> Tensor:
    """[B, H, S] per-key values summed per key block: [B, H, n]."""
    b, h, s = lines.shape
    n = layout.num_blocks
    return torch.nn.functional.pad(lines, (0, n * layout.block_size - s)).view(b, h, n, -1).sum(-1)


def last_query_lines(x: ScorerInputs, last_q: int) -> tuple[Tensor, Tensor]:
    """(vertical [B, H, S], slash [B, H, S]): each sequence's last ``last_q`` real queries' causal attention
    (``seerflex.last_queries``) summed per key column and per offset q - k."""
    probs, rows = last_query_attention(x.q, x.k, x.layout.valid_tokens, x.scale, last_q)  # [B, H, L, S], [B, L]
    b, h, n_rows, s = probs.shape
    offsets = (rows[:, :, None] - torch.arange(s, device=probs.device)).clamp(min=0)  # masked keys carry no mass
    slash = torch.zeros(b, h, s, device=probs.device).scatter_add_(
        -1, offsets.flatten(1)[:, None].expand(b, h, n_rows * s), probs.flatten(2))
    return probs.sum(2), slash
