"""Top-p policy: the smallest set of blocks whose gate probability reaches p.

Blocks are taken in priority order (always-on blocks first, then by gate score), so the mass of
the always-on blocks counts towards p; the cumulative-mass rule of XAttention/FlexPrefill, driven
by the learned gate instead of a heuristic estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seerflex.policies.base import PerHead, Policy, check_range, softmax_probs


@dataclass(frozen=True)
class TopP(Policy):
    p: PerHead = 0.9

    name = "topp"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "p", self.p, 0.0, 1.0)

    def rule_parameters(self, n: int) -> dict[str, PerHead]:
        return {"p": self.p}

    @staticmethod
    def row_counts(scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor,
                   params: dict[str, Tensor]) -> Tensor:
        sorted_probs = softmax_probs(scores).gather(-1, order)
        mass_before = sorted_probs.cumsum(-1) - sorted_probs
        return (mass_before < params["p"][..., None]).sum(-1).float()
