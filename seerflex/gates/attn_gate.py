"""AttnGate: scores every (query-block, key-block) pair from pooled, projected Q and K.

Data path: pre-RoPE Q [B, Hq, S, D] and K [B, Hkv, S, D] -> block pooling (Q over ``q_block_size``
tokens, K over ``block_size``) -> per-head projections (each KV head's pooled K by its query heads' maps:
the original's repeat to query heads, without the copy) -> RoPE at block starts -> q_blk . k_blk^T / sqrt(hidden) -> block-causal
logits [B, Hq, nq, nk] in float32, with -inf where a key block may not be chosen (after the query
block's diagonal group, or padding only).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seerflex.compile import compiled
from seerflex.gates.gate_type import GateType
from seerflex.gates.pooling import block_pool
from seerflex.gates.rope import RopeSpec, apply_rope
from seerflex.layout import BlockLayout, check_block_shape, selectable_blocks
from seerflex.scorer import ScorerInputs

RopeTables = tuple[Tensor, Tensor, Tensor, Tensor]


class AttnGate(nn.Module):
    """Trainable block scorer for one attention layer (bias-free per-head linear maps)."""

    def __init__(
        self,
        gate_type: str | GateType,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        block_size: int = 64,
        q_block_size: int | None = None,
        hidden_size: int = 128,
        rope: RopeSpec | None = None,
        project_q: bool | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads), ("head_dim", head_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        if head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary embeddings rotate pairs of channels), got {head_dim}")
        if hidden_size % 2:
            raise ValueError(f"gate hidden_size must be even for RoPE, got {hidden_size}")
        self.gate_type = gate_type if isinstance(gate_type, GateType) else GateType.parse(gate_type)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.block_size, self.hidden_size = block_size, hidden_size
        self.q_block_size = block_size if q_block_size is None else q_block_size
        check_block_shape(self.q_block_size, self.block_size)
        self.rope = rope if rope is not None else RopeSpec()
        if project_q is None:  # the original skips Q's map when it could only be a square matrix
            project_q = len(self.gate_type.q_pools) > 1 or hidden_size != head_dim
        elif not project_q and len(self.gate_type.q_pools) * head_dim != hidden_size:
            raise ValueError("an unprojected Q needs hidden_size == head_dim * number of Q poolings")
        q_in, k_in = (len(p) * head_dim for p in (self.gate_type.q_pools, self.gate_type.k_pools))
        self.q_weight = nn.Parameter(torch.empty(num_heads, q_in, hidden_size)) if project_q else None
        self.k_weight = nn.Parameter(torch.empty(num_heads, k_in, hidden_size))
        self._rope_tables: dict[tuple, tuple[Tensor, Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02), the original's initialisation."""
        for w in (self.q_weight, self.k_weight):
            if w is not None:
                nn.init.normal_(w, std=0.02)

    def score_blocks(self, inputs: ScorerInputs) -> Tensor:
        """The scorer protocol (``seerflex.scorers``): the gate scores the pre-RoPE Q/K."""
        return self(inputs.gate_q, inputs.gate_k, inputs.layout, compile=inputs.compile)

    def forward(self, q: Tensor, k: Tensor, layout: BlockLayout | None = None, *, compile: str = "auto") -> Tensor:
        """Block logits [B, Hq, nq, nk] (float32) for pre-RoPE ``q`` [B,Hq,S,D] and ``k`` [B,Hkv,S,D].

        Inference runs the math as one compiled graph under ``compile`` (``seerflex.compile``);
        training through this method (distillation, padded or uncompiled layers) runs it eagerly: distillation
        batches vary in length and padding, each a recompile of a graph with its backward. A learning gate in
        an unpadded compiled layer runs compiled, inside the layer's plan (``seerflex.plan``).
        """
        layout, rope = self.prepare(q, k, layout)
        scores = block_logits if self.trains() else compiled(block_logits, compile, q.device)
        return scores(q, k, self.q_weight, self.k_weight, rope, layout.valid_tokens, layout.valid_blocks,
                      self.gate_type.q_pools, self.gate_type.k_pools, self.block_size, self.q_block_size)

    def trains(self) -> bool:
        """A gradient will flow into the weights (``forward`` then runs eagerly)."""
        return torch.is_grad_enabled() and self.k_weight.requires_grad

    def prepare(self, q: Tensor, k: Tensor, layout: BlockLayout | None) -> tuple[BlockLayout, RopeTables]:
        """(layout, RoPE tables) for ``block_logits`` after checking q, k and the layout against the gate."""
        self.check_inputs(q, k)
        if layout is None:
            layout = BlockLayout(q.shape[2], self.block_size, None, self.q_block_size)
        elif (layout.block_size, layout.q_block_size) != (self.block_size, self.q_block_size) \
                or layout.seq_len != q.shape[2]:
            raise ValueError("layout does not match the gate's block sizes or the sequence length")
        return layout, self.rope_tables(layout.seq_len, q.device, self.k_weight.dtype)

    def rope_tables(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> RopeTables:
        """(q cos, q sin, k cos, k sin) at query- and key-block starts, cached: no host-to-device copy per call."""
        key = (seq_len, device, dtype)
        if key not in self._rope_tables:
            tables = ()
            for size in (self.q_block_size, self.block_size):
                starts = torch.arange(-(-seq_len // size), device=device) * size
                tables += self.rope.cos_sin(starts, self.hidden_size, dtype)
            self._rope_tables = {key: tables}
        return self._rope_tables[key]

    def check_inputs(self, q: Tensor, k: Tensor) -> None:
        if q.dim() != 4 or k.dim() != 4:
            raise ValueError(f"gate expects q [B, Hq, S, D] and k [B, Hkv, S, D], got {tuple(q.shape)} and {tuple(k.shape)}")
        if not (q.is_floating_point() and k.is_floating_point()):
            raise ValueError(f"gate inputs must be floating point tensors, got q {q.dtype} and k {k.dtype}")
        expected_q = (self.num_heads, q.shape[2], self.head_dim)
        if tuple(q.shape[1:]) != expected_q or tuple(k.shape[1:]) != (self.num_kv_heads, q.shape[2], self.head_dim) \
                or k.shape[0] != q.shape[0]:
            raise ValueError(
                f"gate built for {self.num_heads} query / {self.num_kv_heads} KV heads of size {self.head_dim} "
                f"got q {tuple(q.shape)} and k {tuple(k.shape)} (expected [B, H, S, D], same B and S)"
            )

    def extra_repr(self) -> str:
        return (f"{self.gate_type.name}, heads={self.num_heads}/{self.num_kv_heads}, head_dim={self.head_dim}, "
                f"blocks={self.q_block_size}x{self.block_size}, hidden={self.hidden_size}, rope={self.rope.rope_type}")


def block_logits(q: Tensor, k: Tensor, q_weight: Tensor | None, k_weight: Tensor, rope: RopeTables,
                 valid_tokens: Tensor | None, valid_blocks: Tensor | None, q_pools: tuple[str, ...],
                 k_pools: tuple[str, ...], block_size: int, q_block_size: int) -> Tensor:
    """The gate's math as a pure function of its weights, so one compiled graph serves every layer."""
    heads, hidden = k_weight.shape[0], k_weight.shape[-1]
    qb = block_pool(q, q_pools, q_block_size, valid_tokens).to(k_weight.dtype)
    kb = block_pool(k, k_pools, block_size, valid_tokens).to(k_weight.dtype)
    if q_weight is not None:
        qb = torch.einsum("bhnd,hde->bhne", qb, q_weight)
    # each KV head's pooled K meets its query heads' maps directly: a repeated K before the projection let
    # inductor recompute the pooling once per query head (0.66 ms at 128k on H200, 0.4 TB/s)
    hkv = k.shape[1]
    kb = torch.einsum("bgnd,gqde->bgqne", kb, k_weight.view(hkv, heads // hkv, *k_weight.shape[1:])).flatten(1, 2)
    qb, kb = apply_rope(qb, *rope[:2]), apply_rope(kb, *rope[2:])
    logits = (qb @ kb.transpose(-1, -2)).float() * hidden**-0.5
    nq, nk = logits.shape[-2:]
    return logits.masked_fill(~selectable_blocks(nq, nk, q_block_size // block_size, valid_blocks, q.device),
                              float("-inf"))
