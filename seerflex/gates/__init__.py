"""Gates: pooled, projected Q/K -> block scores (AttnGate), with the pieces it is made of."""

from seerflex.gates.attn_gate import AttnGate
from seerflex.gates.gate_type import GateType
from seerflex.gates.pooling import block_pool
from seerflex.gates.rope import RopeSpec, apply_rope

__all__ = ["AttnGate", "GateType", "RopeSpec", "apply_rope", "block_pool"]
