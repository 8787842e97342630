"""Per-layer gate logits and ground truth, collected during an exact dense forward pass.

``distill_attention`` is registered with transformers' ``AttentionInterface``: every layer runs
ordinary SDPA (downstream layers see exact activations), and gated layers additionally score
their blocks with the active gate (the only part that carries gradients) and compute the block
attention map of the post-RoPE Q/K. The loss is taken right away, so no [B, H, n, n] tensor
outlives its layer.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from seerflex.distill.loss import focus_weights, free_blocks_only, gate_kl, gate_recall
from seerflex.ground_truth import block_attention_map
from seerflex.hf.attention_interface import STATE_ATTR
from seerflex.last_queries import ranked_scores
from seerflex.layout import BlockLayout
from seerflex.policies import SparsityStats
from seerflex.scorer import ScorerInputs

NAME = "seerflex_distill"


@dataclass
class Collector:
    """Loss options plus what one forward pass produced, per layer."""

    target: Literal["max", "mass"] = "max"
    reduction: Literal["mean", "batchmean"] = "mean"
    skip_first_rows: float = 0.25
    per_head: bool = False  # also keep per-head density and recall (evaluation)
    row_focus: float = 0.0  # rows weighted 1 + row_focus x the mass the current selection misses (loss.focus_weights)
    kl_blocks: Literal["all", "free"] = "all"  # free: the KL over the blocks the policy does not keep anyway
    losses: dict[int, Tensor] = field(default_factory=dict)
    recalls: dict[int, float] = field(default_factory=dict)
    # layer -> (density [H], recall [H], lost [H]: the share of real query-block rows that keep under half their mass,
    # free recall [H]: the share of the mass outside the always-on blocks that the chosen blocks hold)
    head_stats: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=dict)
    maps: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # layer -> (gate softmax, target) of batch 0

    def add(self, layer_idx: int, logits: Tensor, target: Tensor, kept: Tensor, layout: BlockLayout,
            always_on: Tensor | None = None) -> None:
        """One layer's loss and recall; with ``per_head`` also its per-head statistics (``always_on``: the policy's
        blocks kept whatever the scores, [B or 1, 1, nq, nk], for the free recall; None counts none as such)."""
        weights = focus_weights(kept, target, self.row_focus) if self.row_focus else None
        if self.kl_blocks == "free" and always_on is None:
            raise ValueError("kl_blocks='free' needs the policy's always-on blocks")
        scored, goal = (logits, target) if self.kl_blocks == "all" else free_blocks_only(logits, target, always_on)
        self.losses[layer_idx] = gate_kl(scored, goal, skip_first_rows=self.skip_first_rows, reduction=self.reduction,
                                         row_weights=weights)
        self.recalls[layer_idx] = float(gate_recall(kept, target, self.skip_first_rows))
        if self.per_head:
            first = int(kept.shape[-2] * self.skip_first_rows)
            rows = (target * kept)[..., first:, :].sum(-1)  # [B, H, rows]: each query block's covered mass
            real = target[..., first:, :].sum(-1) > 0  # padded query blocks have no target
            lost = ((rows < 0.5) & real).sum((0, 2)) / real.sum((0, 2)).clamp(min=1)
            recall = (rows * real).sum((0, 2)) / real.sum((0, 2)).clamp(min=1)  # over real rows, as ``lost``
            # the part a scorer decides: mass beyond the always-on blocks, pooled over the real rows of each head
            free = target if always_on is None else target * ~always_on
            free = free[..., first:, :]
            chosen = (free * kept[..., first:, :]).sum((0, 2, 3)) / free.sum((0, 2, 3)).clamp(min=1e-30)
            self.head_stats[layer_idx] = (SparsityStats.of(kept, layout).density.cpu(), recall.cpu(), lost.float().cpu(),
                                          chosen.cpu())
            self.maps[layer_idx] = (logits.detach()[0].float().softmax(-1).nan_to_num(0).cpu(), target[0].cpu())

    def total(self, scale: float = 10.0) -> Tensor:
        """Sum over layers x ``scale`` (the original's x10)."""
        if not self.losses:
            raise RuntimeError("no gated layer reported a loss: is the model wrapped by get_seerflex_model?")
        return sum(self.losses.values()) * scale

    def clear(self) -> None:
        self.losses.clear()
        self.recalls.clear()
        self.head_stats.clear()
        self.maps.clear()


_active: Collector | None = None


def register() -> None:
    AttentionInterface.register(NAME, distill_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@contextmanager
def collecting(hf_model: nn.Module, collector: Collector) -> Iterator[Collector]:
    """Run ``hf_model`` with the distillation attention; restores its attention implementation."""
    global _active
    register()
    previous = hf_model.config._attn_implementation
    hf_model.set_attn_implementation(NAME)
    _active = collector
    try:
        yield collector
    finally:
        _active = None
        hf_model.set_attn_implementation(previous)


def distill_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      **kwargs: Any) -> tuple[Tensor, Tensor | None]:
    """Dense SDPA attention; for gated layers also the gate's loss against the true block map."""
    out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    state = getattr(module, STATE_ATTR, None)
    layer = state.active() if state is not None else None
    if _active is None or layer is None or not layer.runs_sparse(query.shape[2], key.shape[2]):
        if state is not None:
            state.capture.clear()
        return out
    usable, padding = state.routing.key_padding(attention_mask, query.shape[2])
    if not usable:
        raise ValueError("distillation needs causal attention with key padding only (no packed/custom masks)")
    gate_q, gate_k = state.capture.take(query, key)
    layout = BlockLayout.from_attention_mask(padding, query.shape[2], layer.config.block_size, layer.config.q_block_size)
    mode = layer.runtime.options.compile
    scorer = layer.runtime.scorer  # None: the learned gate (distillation); else a baseline under evaluation
    inputs = ScorerInputs(gate_q.detach(), gate_k.detach(), query.detach(), key.detach(), layout, mode,
                          kwargs.get("scaling"), value.detach())
    layer.check_gate_policy(scorer or layer.gate)
    logits = layer.gate(gate_q, gate_k, layout, compile=mode) if scorer is None else scorer.score_blocks(inputs)
    with torch.no_grad():
        target = block_attention_map(query, key, block_size=layout.block_size, q_block_size=layout.q_block_size,
                                     mode=_active.target,
                                     scale=kwargs.get("scaling"), attention_mask=padding)
        kept = layer.policy.select(ranked_scores(layer.policy, logits, inputs), layout, compile=mode).kept
    needed = _active.per_head or _active.kl_blocks == "free"
    _active.add(state.layer_idx, logits, target, kept, layout,
                layer.policy.always_on(layout, query.device) if needed else None)
    return out
