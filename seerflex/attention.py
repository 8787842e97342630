"""SeerFlexAttention: learned block-sparse causal attention for one layer.

Top to bottom: pre-RoPE Q/K -> scorer (the layer's ``AttnGate``, or a training-free baseline the
runtime names) -> block scores -> Policy (kept blocks) -> BlockMask -> flex_attention over
post-RoPE Q/K/V. Decode steps, chunked prefill and short prompts take the dense path, where
sparsity would not pay; ``runs_sparse`` is the one place that decides.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from seerflex.block_mask import block_mask_for
from seerflex.config import SeerFlexConfig
from seerflex.flex import dense_attention, flex_has_backward, sparse_attention
from seerflex.gates import AttnGate, RopeSpec
from seerflex.last_queries import last_query_inputs, ranked_scores
from seerflex.layout import BlockLayout
from seerflex.plan import fusable, planned_attention, planned_block_mask
from seerflex.policies import Policy, PolicyLike, SparsityStats, as_policy
from seerflex.policies.base import BlockSelection
from seerflex.runtime import Runtime
from seerflex.scorer import ScorerInputs


class SeerFlexAttention(nn.Module):
    """Gate + policy + sparse flex attention for a layer with the given head layout.

    The layer keeps no copies of settings: its policy is read from ``config`` (shared by every
    layer built from it) and how it runs (compile mode, scorer, sparse layers, ``dense_below``)
    from ``runtime`` (shared by every layer of a model). Assigning ``policy`` (an object or a spec
    string such as ``"topk:0.1"``) sets this layer's entry in the config; nothing recompiles.
    """

    def __init__(self, config: SeerFlexConfig, num_heads: int, num_kv_heads: int, head_dim: int, *,
                 rope: RopeSpec | None = None, layer_idx: int | None = None, runtime: Runtime | None = None,
                 project_q: bool | None = None) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.runtime = Runtime() if runtime is None else runtime
        self.gate = AttnGate(config.gate_type, num_heads, num_kv_heads, head_dim, block_size=config.block_size,
                             q_block_size=config.q_block_size, hidden_size=config.gate_hidden_size, rope=rope, project_q=project_q)

    @property
    def policy(self) -> Policy:
        return self.config.policy_for(self.layer_idx)

    @policy.setter
    def policy(self, value: PolicyLike) -> None:
        policy = as_policy(value)
        if self.layer_idx is None:
            self.config.policy = policy
        else:
            self.config.layer_policies[self.layer_idx] = policy

    def check_gate_policy(self, scorer: object) -> None:
        """Refuse a policy that keeps fewer always-on blocks than gates distilled with ``kl_blocks=free`` learnt
        beyond, when they rank (``SeerFlexConfig.check_policy``): baselines may run any policy on the same model."""
        if scorer is self.gate:
            self.config.check_policy(self.policy)

    def runs_sparse(self, q_len: int, kv_len: int, *, sliding_window: int | None = None,
                    mask_supported: bool = True) -> bool:
        """Sparse or dense for one call: a whole prefill (no cache prefix) of at least ``dense_below``
        tokens, on a layer the runtime lets run sparse, that a sliding window (if any) covers, with a
        mask that is causal plus key padding."""
        runtime = self.runtime
        return (mask_supported and q_len == kv_len and q_len >= max(runtime.options.dense_below, 2)
                and (sliding_window is None or kv_len <= sliding_window)
                and (runtime.sparse_layers is None or self.layer_idx in runtime.sparse_layers))

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
        if not self.runs_sparse(q.shape[2], k.shape[2]):
            out = dense_attention(q, k, v, attention_mask, scale=scale)
            return (out, None) if return_stats else out
        options, scorer = self.runtime.options, self.runtime.scorer or self.gate
        layout = BlockLayout.from_attention_mask(attention_mask, q.shape[2], self.config.block_size,
                                                 self.config.q_block_size)
        inputs = ScorerInputs((q if gate_q is None else gate_q).detach(), (k if gate_k is None else gate_k).detach(),
                              q.detach(), k.detach(), layout, options.compile, scale, v.detach())
        backward = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        learns = self.runtime.gate_loss is not None and scorer is self.gate and self.gate.trains()
        self.check_gate_policy(scorer)
        fuse = fusable(self.gate, scorer, layout, options.compile, q.device)
        if fuse and (not backward or flex_has_backward(q.device)):  # gate, policy, indices, mask, kernel: one graph
            out, selection, nan_scores, scores = planned_attention(
                self.gate, self.policy, q, k, v, inputs.gate_q, inputs.gate_k, layout, mode=options.compile,
                backend=options.backend, scale=scale, score_mod=score_mod, backward=backward, with_logits=learns,
                graphs=options.cuda_graphs)
            if learns:
                self.runtime.gate_loss(self.layer_idx, scores, inputs)
            self._check_finite(nan_scores, v)  # after the kernel: a NaN output is never returned either way
            return self._finish(out, selection, layout, return_stats)
        if fuse:  # training where flex has no backward: gate (and its gradient), policy, both index sets: one graph
            block_mask, selection, nan_scores, scores = planned_block_mask(
                self.gate, self.policy, inputs.gate_q, inputs.gate_k, layout, mode=options.compile,
                compute_q_blocks=backward, with_logits=learns,
                last=last_query_inputs(self.policy, inputs.q, inputs.k, scale))
        else:
            scores = scorer.score_blocks(inputs)
            nan_scores = torch.isnan(scores).any()
            selection = self.policy.select(ranked_scores(self.policy, scores, inputs), layout, compile=options.compile)
            block_mask = block_mask_for(selection, layout, compile=options.compile, compute_q_blocks=backward)
        if learns:
            self.runtime.gate_loss(self.layer_idx, scores, inputs)  # the gate learns from this very call
        self._check_finite(nan_scores, v)
        out = sparse_attention(q, k, v, block_mask, scale=scale, compile=options.compile, backend=options.backend,
                               score_mod=score_mod)
        return self._finish(out, selection, layout, return_stats)

    def _check_finite(self, nan_scores: Tensor, v: Tensor) -> None:
        if self.runtime.options.check_finite and bool(nan_scores | torch.isnan(v).any()):  # one host sync
            where = "V" if bool(torch.isnan(v).any()) else "the gate's block scores"
            raise ValueError(f"layer {self.layer_idx}: NaN in {where}; check the inputs and the gate weights for "
                             "non-finite values (RuntimeOptions(check_finite=False) skips this check)")

    def _finish(self, out: Tensor, selection: BlockSelection, layout: BlockLayout,
                return_stats: bool) -> Tensor | tuple[Tensor, SparsityStats | None]:
        """Record and return the achieved sparsity."""
        stats = SparsityStats.of(selection.kept, layout) if return_stats or self.runtime.stats is not None else None
        if self.runtime.stats is not None:
            self.runtime.stats.append((self.layer_idx, stats))
        return (out, stats) if return_stats else out

    def _check(self, q: Tensor, k: Tensor, v: Tensor) -> None:
        g = self.gate
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise ValueError(f"q, k, v must be [batch, heads, seq, head_dim], got {tuple(q.shape)}, {tuple(k.shape)}, "
                             f"{tuple(v.shape)}")
        if not all(t.is_floating_point() for t in (q, k, v)) or len({q.dtype, k.dtype, v.dtype}) > 1:
            raise ValueError(f"q, k, v must be floating point tensors of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
        if q.shape[1] != g.num_heads or k.shape[1] != g.num_kv_heads or v.shape[1] != g.num_kv_heads:
            raise ValueError(f"layer built for {g.num_heads} query / {g.num_kv_heads} KV heads, got q "
                             f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        if q.shape[-1] != k.shape[-1] or k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0]:
            raise ValueError(f"mismatched q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
