"""What decides the kept blocks during an evaluation: a scorer name and a policy spec string.

Scorers: ``dense`` (no sparsity), ``gate`` (the loaded, learned gates) and the training-free ones
of ``seerflex.scorers`` (``recency``, ``pooled``, ``oracle``). Policies are the spec strings of
``seerflex.policies`` (``topk:0.1``, ``topk:k=8``, ``threshold:2e-3``, ``topp:0.9``, with optional
``:sink=N:local=N:max_blocks=N``); ``threshold:density=0.1`` / ``topp:density=0.1`` ask for
calibration to that average density (``policy_specs.py``).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, ContextManager, Iterator

from seerflex.policies import Policy, SparsityStats
from seerflex.scorers import SCORERS

SCORER_NAMES = ("dense", "gate", *SCORERS)


def runs(scorers: list[str], policies: list[str]) -> list[tuple[str, str | None]]:
    """(scorer, policy spec) pairs of a sweep: ``dense`` once without a policy, others x every policy."""
    unknown = [s for s in scorers if s not in SCORER_NAMES]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}; known: {list(SCORER_NAMES)}")
    out: list[tuple[str, str | None]] = [("dense", None)] if "dense" in scorers else []
    return out + [(s, p) for s in scorers if s != "dense" for p in policies]


@contextmanager
def selection(model: Any, scorer: str, policy: Policy | dict[int, Policy] | None
              ) -> Iterator[list[tuple[int, SparsityStats]]]:
    """Run ``model`` (a SeerFlexModel) with ``scorer`` and ``policy``; yields the sparsity records.

    ``policy``: one for every layer, ``{layer index: policy}`` (layers left out run dense), or None
    (each layer keeps its own, e.g. an adapter's per-layer budget). Everything is restored after.
    """
    if scorer not in SCORER_NAMES:
        raise ValueError(f"unknown scorer {scorer!r}; known: {list(SCORER_NAMES)}")
    dense: ContextManager = model.disable_adapter() if scorer == "dense" else nullcontext()
    with model.overrides(policy=policy, scorer=None if scorer == "dense" else scorer), dense, \
            model.track_sparsity() as records:
        yield records


def achieved_density(records: list[tuple[int, SparsityStats]]) -> float | None:
    """Kept fraction of the causal block triangle over all recorded layers (None: nothing sparse ran)."""
    stats = [s for _, s in records if s is not None]
    if not stats:
        return None
    kept = sum(float(s.kept_blocks.sum()) for s in stats)
    return kept / max(1.0, sum(float(s.total_blocks.sum()) for s in stats))
