"""Pre-RoPE Q/K for the gate, taken from forward hooks on the modules that produce them.

Transformers applies RoPE inside the attention module, before the attention function runs, so the
attention function only ever sees rotated Q/K. The gate needs them as the original SeerAttention
saw them: after the projection (and the q/k norm, where the family has one), before RoPE. A forward
hook on that module keeps a reference to its output (no copy); the attention function of the same
layer takes it moments later and the reference is dropped, so nothing outlives the layer call.
"""

from __future__ import annotations

from torch import Tensor, nn

from seerflex.hf.families import Family


class QKCapture:
    """Hooks on one attention module's Q and K capture points; ``take`` hands over [B, H, S, D]."""

    def __init__(self, attention: nn.Module, family: Family) -> None:
        self.family = family
        self.active = True
        self.q: Tensor | None = None
        self.k: Tensor | None = None
        self._handles = [
            getattr(attention, family.q_module).register_forward_hook(self._keep_q),
            getattr(attention, family.k_module).register_forward_hook(self._keep_k),
        ]

    def _keep_q(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.active:
            self.q = output

    def _keep_k(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if self.active:
            self.k = output

    def take(self, query: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        """Captured Q/K shaped like ``query``/``key`` ([B, H, S, D]); the references are dropped."""
        q, k = self.q, self.k
        self.clear()
        if q is None or k is None:
            raise RuntimeError(f"no pre-RoPE Q/K were captured from '{self.family.q_module}'/'{self.family.k_module}' "
                               "before the attention call; the attention module does not run them in its forward")
        return self._heads(q, query, self.family.q_module), self._heads(k, key, self.family.k_module)

    def clear(self) -> None:
        self.q = self.k = None

    def remove(self) -> None:
        """Remove the hooks (unload)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def _heads(self, x: Tensor, like: Tensor, name: str) -> Tensor:
        d = like.shape[-1]
        layout = self.family.qk_layout
        if layout == "flat" and x.dim() == 3 and x.shape[-1] % d == 0:
            x = x.unflatten(-1, (-1, d)).transpose(1, 2)
        elif layout == "bshd" and x.dim() == 4:
            x = x.transpose(1, 2)
        if x.shape != like.shape:
            raise ValueError(f"pre-RoPE output of '{name}' has shape {tuple(x.shape)} after the '{layout}' layout, "
                             f"expected {tuple(like.shape)} like the attention inputs")
        return x
