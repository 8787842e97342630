"""seerflex: learned block-sparse attention (SeerAttention gates) on PyTorch FlexAttention."""

from seerflex.attention import SeerFlexAttention
from seerflex.block_masks import BlockLayout, Policy, SparsityStats, Threshold, TopK, TopP, build_block_mask
from seerflex.config import SeerFlexConfig
from seerflex.gates import AttnGate, RopeSpec

__all__ = ["AttnGate", "BlockLayout", "Policy", "RopeSpec", "SeerFlexAttention", "SeerFlexConfig",
           "SparsityStats", "Threshold", "TopK", "TopP", "build_block_mask"]
__version__ = "0.1.0"
