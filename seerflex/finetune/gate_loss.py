"""The gates' loss while they select blocks for the model's own forward pass.

Set as ``Runtime.gate_loss``: each sparse call of a training gate hands over its logits (with gradient) and
the call's Q/K; the target is the block attention map of the same post-RoPE Q/K (``seerflex.ground_truth``,
no gradient), and the loss the same KL as in distillation (``seerflex.distill.loss``). The language-model
loss reaches the model through the sparse attention those gates chose; this loss reaches only the gates.

The target costs two dense Q.K passes over the rows it covers, more than the sparse attention it trains
for; ``row_fraction`` < 1 computes it (and the KL) on a random sample of query-block rows, drawn afresh per
layer and step from ``(seed, step, layer)`` so a resumed run draws the same rows. The mean KL over the
sample is an unbiased estimate of the mean over all rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from seerflex.compile import compiled
from seerflex.distill.loss import gate_kl
from seerflex.ground_truth import block_attention_map
from seerflex.scorer import ScorerInputs


@dataclass
class GateLoss:
    target: Literal["max", "mass"] = "mass"
    skip_first_rows: float = 0.25
    row_fraction: float = 1.0
    seed: int = 0
    step: int = 0  # set by the training loop before each forward pass
    losses: dict[int | None, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.row_fraction <= 1:
            raise ValueError(f"row_fraction must be in (0, 1], got {self.row_fraction}")
        if not 0 <= self.skip_first_rows < 1:
            raise ValueError(f"skip_first_rows must be in [0, 1), got {self.skip_first_rows}")

    def __call__(self, layer_idx: int | None, logits: Tensor, inputs: ScorerInputs) -> None:
        layout = inputs.layout
        rows = self.sample_rows(layer_idx, logits.shape[-2])
        with torch.no_grad():  # q/k are the model's own; the training loop checks its loss for NaN once per step
            target = block_attention_map(inputs.q.detach(), inputs.k.detach(), block_size=layout.block_size,
                                         q_block_size=layout.q_block_size, mode=self.target, scale=inputs.scale,
                                         attention_mask=layout.valid_tokens, rows=rows, check_finite=False)
        # compiled (CUDA): one fused kernel each way instead of ~10 eager launches per layer
        loss = compiled(gate_kl, inputs.compile, logits.device)(logits, target, skip_first_rows=self.skip_first_rows)
        if rows is not None:  # rows left out have a zero target, adding 0: the mean over the sampled rows
            n_rows = logits.shape[-2]
            loss = loss * ((n_rows - int(n_rows * self.skip_first_rows)) / len(rows))
        self.losses[layer_idx] = loss

    def sample_rows(self, layer_idx: int | None, n_rows: int) -> Tensor | None:
        """The query-block rows this layer's KL uses at this step (None: all after the skipped first ones)."""
        if self.row_fraction >= 1:
            return None
        first = int(n_rows * self.skip_first_rows)
        count = max(1, round((n_rows - first) * self.row_fraction))
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.step) * 1009 + (layer_idx or 0))
        return (first + torch.randperm(n_rows - first, generator=generator)[:count]).sort().values

    def total(self) -> Tensor:
        """Sum over the layers of this forward pass (then cleared for the next)."""
        if not self.losses:
            raise RuntimeError("no gated layer ran sparse with a training gate in this forward pass")
        total = torch.stack(list(self.losses.values())).sum()
        self.losses = {}
        return total
