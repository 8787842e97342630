"""Policies (gate scores -> kept blocks) and the BlockMask builder (kept blocks -> FlexAttention)."""

from __future__ import annotations

from typing import Any

from seerflex.block_masks.builder import (block_mask_for, block_mask_from_selection, build_block_mask,
                                          compact_indices, selection_mask_mod)
from seerflex.block_masks.layout import BlockLayout
from seerflex.block_masks.policy import BlockSelection, Policy
from seerflex.block_masks.stats import SparsityStats
from seerflex.block_masks.threshold import Threshold
from seerflex.block_masks.top_k import TopK
from seerflex.block_masks.top_p import TopP

POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (TopK, Threshold, TopP)}


def policy_from_dict(spec: dict[str, Any]) -> Policy:
    """Rebuild a policy from ``Policy.to_dict()`` output, e.g. ``{"type": "topk", "density": 0.1}``."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in POLICIES:
        raise ValueError(f"unknown policy type {kind!r}; known: {sorted(POLICIES)}")
    try:
        return POLICIES[kind](**spec)
    except TypeError as err:
        raise ValueError(f"bad fields for policy {kind!r}: {err}") from None


__all__ = ["BlockLayout", "BlockSelection", "POLICIES", "Policy", "SparsityStats", "Threshold", "TopK", "TopP",
           "block_mask_for", "block_mask_from_selection", "build_block_mask", "compact_indices", "policy_from_dict",
           "selection_mask_mod"]
