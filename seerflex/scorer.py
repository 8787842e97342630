"""The scorer protocol: what stands between Q/K and a policy.

A scorer turns one layer's queries and keys into block scores [B, Hq, nq, nk] (float32 logits,
-inf where a key block may not be chosen). The learned ``AttnGate`` and every training-free
baseline implement it, so ``SeerFlexAttention`` never branches on what it holds and every policy
works with every scorer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor

from seerflex.layout import BlockLayout


@dataclass(frozen=True)
class ScorerInputs:
    """One attention call, as a scorer may see it.

    ``gate_q``/``gate_k``: pre-RoPE Q [B, Hq, S, D] and K [B, Hkv, S, D] (what the learned gate was
    trained on); ``q``/``k``: the post-RoPE tensors the attention itself uses (all four detached: block
    scores never send a gradient into the model). ``compile``: the runtime compile mode
    (``seerflex.compile``), for scorers with compiled math. ``scale``: the attention's softmax scale (None:
    1/sqrt(head_dim)).
    """

    gate_q: Tensor
    gate_k: Tensor
    q: Tensor
    k: Tensor
    layout: BlockLayout
    compile: str = "auto"
    scale: float | None = None
    v: Tensor | None = None


@runtime_checkable
class BlockScorer(Protocol):
    """Anything with ``score_blocks(inputs) -> [B, Hq, nq, nk]`` block logits (-inf = not selectable)."""

    def score_blocks(self, inputs: ScorerInputs) -> Tensor: ...
