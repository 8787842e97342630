"""Runtime state: how seerflex layers run, as opposed to what an adapter saves.

``RuntimeOptions`` (compile mode, kernel backend, ``dense_below``, ``check_finite``) are chosen at
load time and may change at any time; they are never written into adapter files. ``Runtime`` is
the one object every seerflex layer of a model reads at each call: the options, which scorer ranks
blocks, which layers run sparse, and where sparsity statistics go. ``SeerFlexModel`` owns it and is
the one place that changes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from seerflex.compile import check_mode
from seerflex.flex import BACKENDS
from seerflex.policies.stats import SparsityStats
from seerflex.scorer import BlockScorer, ScorerInputs

# Fields adapters saved inside their config before runtime options were split off (format 1).
LEGACY_ADAPTER_FIELDS = ("compile", "dense_below", "check_finite")


@dataclass(frozen=True)
class RuntimeOptions:
    """``compile``: ``seerflex.compile.COMPILE_MODES`` ("auto" = compiled on CUDA, eager elsewhere;
    "static" compiles per length, ~20% faster kernels for fixed-length work; "eager" never compiles).
    ``backend``: flex kernel, "triton", "flash" (FlashAttention-4 through flex, sm90+ with
    ``seerflex[flash]``; an error where it cannot run) or "auto" (FLASH where it can run and the call
    fits it, else Triton; ``seerflex.flex.kernel_backend``). ``dense_below``: prompts shorter than this
    run dense (sparsity only pays on long prefills). ``check_finite``: raise on NaN block scores
    (one host sync per layer; switch off for CUDA-graph capture). ``cuda_graphs``: on CUDA, the layer's
    fused compiled graph (gate, policy, BlockMask, flex; ``seerflex.plan``) replays as a CUDA graph
    (inductor's CUDA-graph trees): for fixed-length, host-bound work such as a training step (one recording
    per layer and shape; call ``torch.compiler.cudagraph_mark_step_begin()`` before each step). Its outputs,
    gradients included, are overwritten by the next replay of the same graph (torch raises if one is read
    after that): no gradient accumulation across steps, and under ``no_grad`` use each output before the
    layer's next call."""

    compile: str = "auto"
    backend: str = "auto"
    dense_below: int = 1024
    check_finite: bool = True
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        check_mode(self.compile)
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown kernel backend {self.backend!r}; choose one of {BACKENDS}")
        if isinstance(self.dense_below, bool) or not isinstance(self.dense_below, int) or self.dense_below < 0:
            raise ValueError(f"dense_below must be a token count >= 0, got {self.dense_below!r}")
        for name in ("check_finite", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> "RuntimeOptions":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown runtime options {sorted(unknown)}; known: "
                             f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)


@dataclass(eq=False)
class Runtime:
    """Shared by every seerflex layer of one model; layers hold a reference, never a copy.

    ``scorer``: None = each layer's learned gate, else a training-free ``BlockScorer``.
    ``sparse_layers``: None = every layer with a gate, else only these layer indices.
    ``stats``: when a list, every sparse call appends (layer index, ``SparsityStats``).
    ``gate_loss``: when set, every sparse call whose learned gate trains reports (layer index, gate logits
    with their gradient, the call's ``ScorerInputs``) to it: gates learn while their sparse attention runs
    the forward pass (``seerflex.finetune``).
    """

    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    scorer: BlockScorer | None = None
    sparse_layers: frozenset[int] | None = None
    stats: list[tuple[int | None, SparsityStats]] | None = None
    gate_loss: Callable[[int | None, Tensor, ScorerInputs], None] | None = None
