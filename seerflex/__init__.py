"""seerflex: learned block-sparse attention (SeerAttention gates) on PyTorch FlexAttention."""

from seerflex.attention import SeerFlexAttention
from seerflex.block_masks import BlockLayout, Policy, SparsityStats, Threshold, TopK, TopP, build_block_mask
from seerflex.config import SeerFlexConfig
from seerflex.gates import AttnGate, RopeSpec

__all__ = ["AttnGate", "BlockLayout", "Policy", "RopeSpec", "SeerFlexAttention", "SeerFlexConfig",
           "SparsityStats", "Threshold", "TopK", "TopP", "build_block_mask"]
__all__ += ["SeerFlexModel", "get_seerflex_model"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """SeerFlexModel and get_seerflex_model load on first use: they import transformers (seconds)."""
    if name in ("SeerFlexModel", "get_seerflex_model"):
        from seerflex import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'seerflex' has no attribute {name!r}")
