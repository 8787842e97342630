"""The gates' loss while they select blocks for the model's own forward pass.

Set as ``Runtime.gate_loss``: each sparse call of a training gate hands over its logits (with gradient) and
the call's Q/K; the target is the block attention map of the same post-RoPE Q/K (``seerflex.ground_truth``,
no gradient), and the loss the same KL as in distillation (``seerflex.distill.loss``). The language-model
loss reaches the model through the sparse attention those gates chose; this loss reaches only the gates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from seerflex.distill.loss import gate_kl
from seerflex.ground_truth import block_attention_map
from seerflex.scorer import ScorerInputs


@dataclass
class GateLoss:
    target: Literal["max", "mass"] = "mass"
    skip_first_rows: float = 0.25
    losses: dict[int | None, Tensor] = field(default_factory=dict)

    def __call__(self, layer_idx: int | None, logits: Tensor, inputs: ScorerInputs) -> None:
        layout = inputs.layout
        with torch.no_grad():
            target = block_attention_map(inputs.q.detach(), inputs.k.detach(), block_size=layout.block_size,
                                         q_block_size=layout.q_block_size, mode=self.target,
                                         scale=inputs.scale, attention_mask=layout.valid_tokens)
        self.losses[layer_idx] = gate_kl(logits, target, skip_first_rows=self.skip_first_rows)

    def total(self) -> Tensor:
        """Sum over the layers of this forward pass (then cleared for the next)."""
        if not self.losses:
            raise RuntimeError("no gated layer ran sparse with a training gate in this forward pass")
        total = torch.stack(list(self.losses.values())).sum()
        self.losses = {}
        return total
