"""Oracle: the exact block-pooled attention map (``seerflex.ground_truth``), an upper bound on what
any gate can know. Its log is the score, so softmax(scores) is the map itself."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from seerflex.ground_truth import block_attention_map
from seerflex.scorer import ScorerInputs


class OracleScores:
    name = "oracle"

    def __init__(self, mode: Literal["max", "mass"] = "mass") -> None:
        self.mode = mode

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        layout = x.layout
        truth = block_attention_map(x.q, x.k, block_size=layout.block_size, q_block_size=layout.q_block_size,
                                    mode=self.mode, scale=x.scale,
                                    attention_mask=layout.valid_tokens)
        scores = truth.clamp(min=1e-30).log()
        return scores.masked_fill(~layout.selectable_blocks(x.q.device), float("-inf"))


class OracleMaxScores(OracleScores):
    """The exact map under the original's ``max`` target (each block's largest attention weight): the bound of
    gates distilled with ``target=max``."""

    name = "oracle_max"

    def __init__(self) -> None:
        super().__init__("max")
