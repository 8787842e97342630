"""seerflex: learned block-sparse attention (SeerAttention gates) on PyTorch FlexAttention."""

from seerflex.attention import SeerFlexAttention
from seerflex.block_mask import build_block_mask
from seerflex.config import SeerFlexConfig
from seerflex.gates import AttnGate, RopeSpec
from seerflex.layout import BlockLayout
from seerflex.policies import Policy, SparsityStats, Threshold, TopK, TopP, as_policy
from seerflex.runtime import RuntimeOptions
from seerflex.scorer import BlockScorer, ScorerInputs
from seerflex.version import __version__

__all__ = ["AttnGate", "BlockLayout", "BlockScorer", "Policy", "RopeSpec", "RuntimeOptions", "ScorerInputs",
           "SeerFlexAttention", "SeerFlexConfig", "SparsityStats", "Threshold", "TopK", "TopP", "__version__",
           "as_policy", "build_block_mask"]
__all__ += ["SeerFlexModel", "get_seerflex_model"]


def __getattr__(name: str):
    """SeerFlexModel and get_seerflex_model load on first use: they import transformers (seconds)."""
    if name in ("SeerFlexModel", "get_seerflex_model"):
        from seerflex import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'seerflex' has no attribute {name!r}")
