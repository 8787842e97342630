"""SeerFlexAttention: learned block-sparse causal attention for one layer.

Top to bottom: pre-RoPE Q/K -> AttnGate block scores -> Policy (kept blocks) -> BlockMask ->
flex_attention over post-RoPE Q/K/V. Decode steps, chunked prefill and short prompts take the
dense path, where sparsity would not pay.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from seerflex.block_masks import BlockLayout, Policy, SparsityStats, block_mask_for
from seerflex.config import SeerFlexConfig
from seerflex.flex import dense_attention, skips_unlisted_tiles, sparse_attention
from seerflex.gates import AttnGate, RopeSpec
from seerflex.gates.baselines import BlockScorer


class SeerFlexAttention(nn.Module):
    """Gate + policy + sparse flex attention for a layer with the given head layout.

    ``enabled = False`` turns the gate off (dense attention); ``policy`` may be reassigned at any
    time without recompiling; ``scorer`` replaces the gate by a training-free baseline.
    """

    def __init__(self, config: SeerFlexConfig, num_heads: int, num_kv_heads: int, head_dim: int, *,
                 rope: RopeSpec | None = None, layer_idx: int | None = None) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.gate = AttnGate(config.gate_type, num_heads, num_kv_heads, head_dim, block_size=config.block_size,
                             hidden_size=config.gate_hidden_size, rope=rope)
        self.policy: Policy = config.policy_for(layer_idx)
        self.scorer: BlockScorer | None = None  # a training-free baseline in place of the gate
        self.enabled = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, gate_q: Tensor | None = None,
                gate_k: Tensor | None = None, attention_mask: Tensor | None = None,
                scale: float | None = None, score_mod: Callable[..., Tensor] | None = None,
                return_stats: bool = False) -> Tensor | tuple[Tensor, SparsityStats | None]:
        """Attention output [B, Hq, Sq, Dv] for q [B,Hq,Sq,D], k [B,Hkv,Skv,D], v [B,Hkv,Skv,Dv].

        ``gate_q``/``gate_k``: the pre-RoPE Q/K the gate scores (default: ``q``/``k``).
        ``attention_mask``: [B, Skv], 1 = real token. With ``return_stats`` also returns the
        achieved block density (None when the dense path ran). ``score_mod``: a flex score_mod for
        the sparse path (e.g. Gemma-2 soft-capping); the dense path here does not apply it.
        """
        self._check(q, k, v)
        sq, skv = q.shape[2], k.shape[2]
        if not self.enabled or sq != skv or sq < max(self.config.dense_below, 2):
            out = dense_attention(q, k, v, attention_mask, scale=scale)
            return (out, None) if return_stats else out
        layout = BlockLayout.from_attention_mask(attention_mask, sq, self.config.block_size)
        gate_q, gate_k = (q if gate_q is None else gate_q), (k if gate_k is None else gate_k)
        scores = self.gate(gate_q, gate_k, layout) if self.scorer is None else self.scorer(gate_q, gate_k, q, k, layout)
        if self.config.check_finite and torch.isnan(scores).any():
            raise ValueError(f"gate of layer {self.layer_idx} produced NaN block scores: "
                             "check the inputs and the gate weights for non-finite values")
        selection = self.policy.select(scores, layout)
        block_mask = block_mask_for(selection, layout,
                                    kernel_skips_unlisted_tiles=skips_unlisted_tiles(self.config.compile, q.device),
                                    compute_q_blocks=torch.is_grad_enabled() and q.requires_grad)
        out = sparse_attention(q, k, v, block_mask, scale=scale, compile=self.config.compile, score_mod=score_mod)
        return (out, SparsityStats.of(selection.kept, layout)) if return_stats else out

    def _check(self, q: Tensor, k: Tensor, v: Tensor) -> None:
        g = self.gate
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise ValueError("q, k, v must be [batch, heads, seq, head_dim]")
        if q.shape[1] != g.num_heads or k.shape[1] != g.num_kv_heads or v.shape[1] != g.num_kv_heads:
            raise ValueError(f"layer built for {g.num_heads} query / {g.num_kv_heads} KV heads, got q "
                             f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        if q.shape[-1] != k.shape[-1] or k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0]:
            raise ValueError(f"mismatched q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
