"""SeerFlexConfig: everything needed to rebuild seerflex layers, serialisable to JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from seerflex.block_masks import Policy, TopK, policy_from_dict
from seerflex.flex import COMPILE_MODES
from seerflex.gates.gate_type import GateType

BLOCK_SIZES = (32, 64, 128)


@dataclass
class SeerFlexConfig:
    """Gate architecture plus the default block policy (and per-layer overrides).

    ``dense_below``: prompts shorter than this many tokens run dense attention (the sparse path
    only pays off on long prefills). ``compile``: how flex_attention runs, one of
    ``seerflex.flex.COMPILE_MODES`` ("auto" = compiled for all lengths on CUDA, eager on CPU).
    ``check_finite``: raise on NaN gate scores (costs one host sync per layer).
    """

    gate_type: str = "Qavg_Kmaxminavg"
    block_size: int = 64
    gate_hidden_size: int = 128
    policy: Policy = field(default_factory=lambda: TopK(density=0.1))
    layer_policies: dict[int, Policy] = field(default_factory=dict)
    dense_below: int = 1024
    compile: str = "auto"
    check_finite: bool = True

    def __post_init__(self) -> None:
        GateType.parse(self.gate_type)
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {self.compile!r}; choose one of {COMPILE_MODES}")
        if self.block_size not in BLOCK_SIZES:
            raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {self.block_size}")
        if self.gate_hidden_size < 2 or self.gate_hidden_size % 2:
            raise ValueError(f"gate_hidden_size must be a positive even number, got {self.gate_hidden_size}")
        if isinstance(self.policy, dict):
            self.policy = policy_from_dict(self.policy)
        self.layer_policies = {int(i): policy_from_dict(p) if isinstance(p, dict) else p
                               for i, p in self.layer_policies.items()}
        for p in (self.policy, *self.layer_policies.values()):
            if not isinstance(p, Policy):
                raise TypeError(f"policy must be a seerflex Policy (TopK, Threshold, TopP), got {type(p).__name__}")

    def policy_for(self, layer_idx: int | None) -> Policy:
        return self.layer_policies.get(layer_idx, self.policy) if layer_idx is not None else self.policy

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self) | {"policy": self.policy.to_dict()}
        out["layer_policies"] = {str(i): p.to_dict() for i, p in self.layer_policies.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SeerFlexConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SeerFlexConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | Path) -> "SeerFlexConfig":
        """From a JSON string or a path to a JSON file."""
        if isinstance(text, Path) or (not text.lstrip().startswith("{") and Path(text).is_file()):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))
