"""SeerFlexConfig: what an adapter saves to rebuild its gates and their default block policies.

How layers *run* (compile mode, kernel backend, ``dense_below``, NaN checks) is not here: that
is ``seerflex.runtime.RuntimeOptions``, chosen at load time and never saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from seerflex.gates.gate_type import GateType
from seerflex.layout import check_block_shape
from seerflex.policies import Policy, TopK, as_policy

BLOCK_SIZES = (32, 64, 128)


@dataclass
class SeerFlexConfig:
    """Gate architecture plus the default block policy and per-layer overrides.

    Blocks are ``q_block_size`` queries x ``block_size`` keys; 128 x 64 fills FlashAttention-4's
    128-row tiles while keys are still chosen 64 at a time.

    Policies may be given as objects, ``to_dict`` dicts or spec strings (``"topk:0.1"``). Layers
    built from one config read its policies at every call: ``SeerFlexModel.set_policy`` edits them.
    """

    gate_type: str = "Qavg_Kmaxminavg"
    block_size: int = 64
    q_block_size: int | None = None  # query blocks: a multiple of block_size (None: square blocks)
    gate_hidden_size: int = 128
    policy: Policy = field(default_factory=lambda: TopK(density=0.1))
    layer_policies: dict[int, Policy] = field(default_factory=dict)
    # None: gates distilled on whole rows. {"sink": s, "local": l}: distilled with kl_blocks=free under policies
    # that always kept the diagonal, s sink and l local blocks, so their scores were never trained to rank those
    # blocks against the others: a policy keeping fewer is refused where the gates rank (counted in key blocks of
    # block_size tokens: a new key block size rescales them, SeerFlexModel.from_pretrained)
    free_beyond: dict[str, int] | None = None

    def __post_init__(self) -> None:
        GateType.parse(self.gate_type)
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {self.block_size}")
        if self.q_block_size is None:
            self.q_block_size = self.block_size
        if self.q_block_size not in BLOCK_SIZES:
            raise ValueError(f"q_block_size must be one of {BLOCK_SIZES}, got {self.q_block_size}")
        check_block_shape(self.q_block_size, self.block_size)
        if isinstance(self.gate_hidden_size, bool) or not isinstance(self.gate_hidden_size, int) \
                or self.gate_hidden_size < 2 or self.gate_hidden_size % 2:
            raise ValueError(f"gate_hidden_size must be a positive even number, got {self.gate_hidden_size}")
        self.policy = as_policy(self.policy)
        self.layer_policies = {int(i): as_policy(p) for i, p in self.layer_policies.items()}
        if self.free_beyond is not None:
            if set(self.free_beyond) != {"sink", "local"} or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in self.free_beyond.values()):
                raise ValueError(f"free_beyond must be None or {{'sink': int >= 0, 'local': int >= 0}}, "
                                 f"got {self.free_beyond!r}")

    def check_policy(self, policy: Policy) -> Policy:
        """``policy``, if these gates can rank under it: gates distilled with ``kl_blocks=free`` never learnt to
        score the always-on blocks of their training policy, so a policy keeping fewer would rank untrained scores
        (checked where the gates rank, ``SeerFlexAttention.check_gate_policy``: baselines may use any policy)."""
        need = self.free_beyond
        if need is not None and (policy.sink < need["sink"] or policy.local < need["local"]):
            raise ValueError(f"these gates were distilled with kl_blocks=free beyond sink={need['sink']}, "
                             f"local={need['local']} (their scores of those blocks are untrained); the policy "
                             f"{policy.name} has sink={policy.sink}, local={policy.local}: keep at least as many")
        return policy

    def policy_for(self, layer_idx: int | None) -> Policy:
        return self.layer_policies.get(layer_idx, self.policy) if layer_idx is not None else self.policy

    def to_dict(self) -> dict[str, Any]:
        return {"gate_type": self.gate_type, "block_size": self.block_size, "q_block_size": self.q_block_size,
                "gate_hidden_size": self.gate_hidden_size,
                "policy": self.policy.to_dict(),
                "layer_policies": {str(i): p.to_dict() for i, p in sorted(self.layer_policies.items())},
                "free_beyond": self.free_beyond}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeerFlexConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SeerFlexConfig fields {sorted(unknown)}; known: {sorted(known)} "
                             "(compile, dense_below and check_finite are runtime options: seerflex.RuntimeOptions)")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Path) -> "SeerFlexConfig":
        """From a JSON string or a path to a JSON file."""
        if isinstance(text, Path) or (not text.lstrip().startswith("{") and Path(text).is_file()):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))
