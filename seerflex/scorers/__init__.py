"""Block scorers: the learned gate's protocol and the training-free baselines it has to beat.

A new scorer is one small file with a class that has ``name`` and ``score_blocks`` (see
``seerflex.scorer``), added to ``SCORERS`` below; ``SeerFlexModel.set_scorer(name)`` and the eval recipes
then take it by name. Baselines may look at the post-RoPE Q/K the attention itself uses.
"""

from __future__ import annotations

from typing import Callable

from seerflex.scorer import BlockScorer, ScorerInputs
from seerflex.scorers.flexprefill import FlexPrefillScores
from seerflex.scorers.oracle import OracleMaxScores, OracleScores
from seerflex.scorers.oracle_output import OracleOutputScores
from seerflex.scorers.pooled import PooledQKScores
from seerflex.scorers.recency import RecencyScores
from seerflex.scorers.vertical_slash import VerticalSlashScores
from seerflex.scorers.xattention import XAttentionScores

SCORERS: dict[str, Callable[[], BlockScorer]] = {
    cls.name: cls for cls in (RecencyScores, PooledQKScores, OracleScores, OracleMaxScores, OracleOutputScores,
                              XAttentionScores, VerticalSlashScores, FlexPrefillScores)}


def make_scorer(name: str) -> BlockScorer:
    """A training-free scorer by name (``gate`` is not one: it is the adapter's learned gates)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; known: {sorted(SCORERS)} (or 'gate' for the learned gates)")
    return SCORERS[name]()


__all__ = ["SCORERS", "BlockScorer", "FlexPrefillScores", "OracleMaxScores", "OracleOutputScores", "OracleScores",
           "PooledQKScores", "RecencyScores", "ScorerInputs", "VerticalSlashScores", "XAttentionScores", "make_scorer"]
