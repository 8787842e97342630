"""The one compile decision: whether seerflex's pieces run under ``torch.compile``.

Gate math, policy selection, BlockMask index building and flex_attention all ask ``compiled``
with the runtime's mode, so ``eager`` means no ``torch.compile`` anywhere and ``auto`` means
compiled on CUDA, eager elsewhere (CPU compilation costs more than it saves at test sizes).
"""

from __future__ import annotations

from functools import cache
from typing import Callable, TypeVar

import torch

COMPILE_MODES = ("auto", "dynamic", "static", "eager")

F = TypeVar("F", bound=Callable)


def check_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {COMPILE_MODES}")
    return mode


def compiles(mode: str, device: torch.device) -> bool:
    """True when code for ``device`` runs compiled under ``mode``."""
    check_mode(mode)
    return mode in ("dynamic", "static") or (mode == "auto" and device.type == "cuda")


def compiled(fn: F, mode: str, device: torch.device, *, dynamic: bool | None = None, graphs: bool = False) -> F:
    """``fn`` itself, or its compiled version (made once per function, ``dynamic`` and ``graphs`` setting).

    ``dynamic``: passed to ``torch.compile`` (None = its default: static first, dynamic on a
    recompile); flex_attention uses ``mode != "static"``, the small graphs their own setting.
    ``graphs``: on CUDA, inductor's CUDA-graph trees replay the compiled kernels (``mode="reduce-overhead"``):
    one graph launch instead of a launch per kernel, and the intermediates in one shared pool.
    """
    if not compiles(mode, device):
        return fn
    return _compile(fn, dynamic, graphs and device.type == "cuda")


@cache
def _compile(fn: F, dynamic: bool | None, graphs: bool) -> F:
    return torch.compile(fn, dynamic=dynamic, mode="reduce-overhead" if graphs else None)
