"""How a (possibly padded) batch of sequences falls into attention blocks.

Computed once per forward and shared by the gate (which blocks may be scored), the policy (where a
sequence's sink block is) and the BlockMask builder (which tiles need ``mask_mod``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockLayout:
    """Sequence length, block size and, for padded batches, which tokens are real."""

    seq_len: int
    block_size: int
    valid_tokens: Tensor | None = None  # [B, S] bool, True = real token; None = all real

    @classmethod
    def from_attention_mask(cls, attention_mask: Tensor | None, seq_len: int, block_size: int) -> "BlockLayout":
        """Accept a HF-style [B, S] 0/1 mask (or None); an all-ones mask becomes None."""
        if attention_mask is None:
            return cls(seq_len, block_size)
        if attention_mask.dim() != 2 or attention_mask.shape[1] != seq_len:
            raise ValueError(
                f"attention_mask must be [batch, {seq_len}] with 1 for real tokens, "
                f"got shape {tuple(attention_mask.shape)}"
            )
        valid = attention_mask.bool()
        return cls(seq_len, block_size, None if bool(valid.all()) else valid)

    @property
    def num_blocks(self) -> int:
        return -(-self.seq_len // self.block_size)

    @cached_property
    def valid_blocks(self) -> Tensor | None:
        """[B, n] bool: the block holds at least one real token (None when nothing is padded)."""
        if self.valid_tokens is None:
            return None
        return self._tiles(self.valid_tokens).any(-1)

    @cached_property
    def partial_blocks(self) -> Tensor | None:
        """[B, n] bool: the block mixes real tokens and padding, so its tiles need ``mask_mod``."""
        if self.valid_tokens is None:
            return None
        tiles = self._tiles(self.valid_tokens)
        return tiles.any(-1) & ~tiles.all(-1)

    @cached_property
    def first_block(self) -> Tensor | None:
        """[B] index of each sequence's first real block: where its sink starts (left padding)."""
        if self.valid_blocks is None:
            return None
        return self.valid_blocks.int().argmax(-1)

    def selectable_blocks(self, device: torch.device) -> Tensor:
        """[B or 1, 1, n, n] bool: key block j is on or below the diagonal and holds a real token."""
        return selectable_blocks(self.num_blocks, self.valid_blocks, device)

    def _tiles(self, valid: Tensor) -> Tensor:
        pad = self.num_blocks * self.block_size - self.seq_len
        return torch.nn.functional.pad(valid, (0, pad), value=False).view(valid.shape[0], self.num_blocks, -1)


def selectable_blocks(n: int, valid_blocks: Tensor | None, device: torch.device) -> Tensor:
    """[B or 1, 1, n, n] bool from [B, n] real-block flags: a pure function, so compiled code can use it."""
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
    return causal if valid_blocks is None else causal & valid_blocks[:, None, None, :]
