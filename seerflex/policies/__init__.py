"""Policies: block scores -> kept blocks per head and query-block row.

One syntax, three spellings that all go through ``as_policy``: objects (``TopK(density=0.1)``),
their ``to_dict`` form (``{"type": "topk", "density": 0.1}``, what adapters and YAML store), and
spec strings (``"topk:0.1"``, ``"topk:density=0.1:local=1"``, ``"threshold:2e-3"``,
``"topp:0.9"``) for command lines. A new policy is one small file with a ``Policy`` subclass,
added to ``POLICIES``.
"""

from __future__ import annotations

from typing import Any, Union

from seerflex.policies.base import BlockSelection, Policy
from seerflex.policies.stats import SparsityStats
from seerflex.policies.threshold import Threshold
from seerflex.policies.top_k import TopK
from seerflex.policies.top_p import TopP

POLICIES: dict[str, type[Policy]] = {cls.name: cls for cls in (TopK, Threshold, TopP)}
# the field a spec's bare value sets: "topk:0.1" is TopK(density=0.1)
MAIN_FIELD = {"topk": "density", "threshold": "threshold", "topp": "p"}
PolicyLike = Union[Policy, str, dict]


def spec_fields(spec: str) -> tuple[str, dict[str, Any]]:
    """``"kind:value:key=value..."`` -> (kind, fields); the one parser of spec strings."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a policy spec is a string like 'topk:0.1', got {spec!r}")
    kind, *parts = spec.strip().split(":")
    if kind not in POLICIES:
        raise ValueError(f"unknown policy {kind!r} in {spec!r}; known: {sorted(POLICIES)}")
    fields: dict[str, Any] = {}
    for part in parts:
        key, sep, text = part.partition("=")
        key, text = (key.strip(), text) if sep else (MAIN_FIELD[kind], key)
        try:
            fields[key] = _number(text.strip())
        except ValueError:
            raise ValueError(f"bad policy spec {spec!r}: {key} = {text!r} is not a number, true/false or none") from None
    return kind, fields


def policy_from_dict(spec: dict[str, Any]) -> Policy:
    """Rebuild a policy from ``Policy.to_dict()`` output, e.g. ``{"type": "topk", "density": 0.1}``."""
    fields = dict(spec)
    kind = fields.pop("type", None)
    if kind not in POLICIES:
        raise ValueError(f"unknown policy type {kind!r}; known: {sorted(POLICIES)}")
    try:
        return POLICIES[kind](**fields)
    except TypeError as err:
        raise ValueError(f"bad fields for policy {kind!r}: {err}") from None


def as_policy(value: PolicyLike) -> Policy:
    """A Policy from an object, a ``to_dict`` dict or a spec string."""
    if isinstance(value, Policy):
        return value
    if isinstance(value, dict):
        return policy_from_dict(value)
    if isinstance(value, str):
        kind, fields = spec_fields(value)
        try:
            return policy_from_dict({"type": kind, **fields})
        except ValueError as err:
            raise ValueError(f"bad policy spec {value!r}: {err}") from None
    raise TypeError(f"a policy is a seerflex Policy (TopK, Threshold, TopP), its dict or a spec string like "
                    f"'topk:0.1'; got {type(value).__name__}")


def _number(text: str) -> int | float | bool | None:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


__all__ = ["POLICIES", "BlockSelection", "Policy", "PolicyLike", "SparsityStats", "Threshold", "TopK", "TopP",
           "as_policy", "policy_from_dict", "spec_fields"]
