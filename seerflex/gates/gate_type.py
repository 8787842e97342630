"""Parse gate type names such as ``Qavg_Kmaxminavg``.

The name says which block poolings feed each side of the gate. The original SeerAttention default
is ``Qavg_Kmaxminavg``: average-pooled queries, keys pooled by max, min and average (concatenated
on the channel axis).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

POOLINGS = ("max", "min", "avg")
_NAME = re.compile(r"^Q((?:max|min|avg)+)_K((?:max|min|avg)+)$")


@dataclass(frozen=True)
class GateType:
    """Which poolings (in order) are concatenated for the query and the key side."""

    q_pools: tuple[str, ...]
    k_pools: tuple[str, ...]

    @classmethod
    def parse(cls, name: str) -> "GateType":
        match = _NAME.match(name)
        if match is None:
            raise ValueError(
                f"unknown gate type {name!r}: expected 'Q<pools>_K<pools>' where <pools> is a "
                f"non-empty run of {'/'.join(POOLINGS)}, e.g. 'Qavg_Kmaxminavg'"
            )
        q, k = (tuple(re.findall("max|min|avg", part)) for part in match.groups())
        for side, pools in (("Q", q), ("K", k)):
            if len(set(pools)) != len(pools):
                raise ValueError(f"gate type {name!r} repeats a pooling on the {side} side")
        return cls(q, k)

    @property
    def name(self) -> str:
        return f"Q{''.join(self.q_pools)}_K{''.join(self.k_pools)}"
