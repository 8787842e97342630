"""What decides the kept blocks during an evaluation: a scorer name and a policy spec string.

Scorers: ``dense`` (no sparsity), ``gate`` (the loaded, learned gates), ``recency`` (sink + local
window), ``pooled`` (training-free pooled Q.K), ``oracle`` (exact block attention mass). Policy specs
are short strings so a whole sweep fits on a command line: ``topk:0.1`` (density), ``topk:k=8``,
``threshold:2e-3``, ``topp:0.9``, with optional ``:sink=N:local=N:max_blocks=N`` suffixes.
``threshold:density=0.1`` / ``topp:density=0.1`` ask for calibration to that average density.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator

import torch

from seerflex.attention import SeerFlexAttention
from seerflex.block_masks import Policy, SparsityStats, Threshold, TopK, TopP
from seerflex.gates.baselines import SCORERS

SCORER_NAMES = ("dense", "gate", *SCORERS)
_POLICY_KINDS = {"topk": (TopK, "density"), "threshold": (Threshold, "threshold"), "topp": (TopP, "p")}


def parse_policy(spec: str) -> tuple[Policy, float | None]:
    """``kind:value[:key=value...]`` -> (Policy, density to calibrate to or None), e.g. ``topk:0.1:sink=0``."""
    kind, *parts = spec.split(":")
    if kind not in _POLICY_KINDS:
        raise ValueError(f"unknown policy {kind!r} in {spec!r}; known: {sorted(_POLICY_KINDS)}")
    cls, main = _POLICY_KINDS[kind]
    kwargs: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key, value = (key, value) if sep else (main, key)
        kwargs[key] = float(value) if key in ("density", "threshold", "p") else int(float(value))
    target = kwargs.pop("density") if cls is not TopK and "density" in kwargs else None
    try:
        return cls(**kwargs), target
    except TypeError as err:
        raise ValueError(f"bad policy spec {spec!r}: {err}") from None


def sparse_layers(model: torch.nn.Module) -> list[SeerFlexAttention]:
    return [m for m in model.modules() if isinstance(m, SeerFlexAttention)]


def runs(scorers: list[str], policies: list[str]) -> list[tuple[str, str | None]]:
    """(scorer, policy spec) pairs of a sweep: ``dense`` once without a policy, others x every policy."""
    out: list[tuple[str, str | None]] = [("dense", None)] if "dense" in scorers else []
    return out + [(s, p) for s in scorers if s != "dense" for p in policies]


@contextmanager
def selection(model: Any, scorer: str, policy: Policy | dict[int, Policy] | None
              ) -> Iterator[list[tuple[int, SparsityStats]]]:
    """Run ``model`` (a SeerFlexModel) with ``scorer`` and ``policy``; yields the sparsity records.

    ``policy``: one for every layer, ``{layer index: policy}`` (layers left out run dense), or None
    (each layer keeps its own, e.g. an adapter's per-layer budget).
    """
    if scorer not in SCORER_NAMES:
        raise ValueError(f"unknown scorer {scorer!r}; known: {SCORER_NAMES}")
    layers = sparse_layers(model)
    saved = [(m.scorer, m.policy, m.enabled) for m in layers]
    for m in layers:
        m.scorer = None if scorer in ("dense", "gate") else SCORERS[scorer]()
        if isinstance(policy, dict):
            m.enabled = m.enabled and m.layer_idx in policy
            m.policy = policy.get(m.layer_idx, m.policy)
        elif policy is not None:
            m.policy = policy
    dense: ContextManager = model.disable_adapter() if scorer == "dense" else nullcontext()
    try:
        with dense, model.track_sparsity() as records:
            yield records
    finally:
        for m, (sc, po, en) in zip(layers, saved):
            m.scorer, m.policy, m.enabled = sc, po, en


def achieved_density(records: list[tuple[int, SparsityStats]]) -> float | None:
    """Kept fraction of the causal block triangle over all recorded layers (None: nothing sparse ran)."""
    stats = [s for _, s in records if s is not None]
    if not stats:
        return None
    kept = sum(float(s.kept_blocks.sum()) for s in stats)
    return kept / max(1.0, sum(float(s.total_blocks.sum()) for s in stats))
