"""How a (possibly padded) batch of sequences falls into attention blocks.

Computed once per forward and shared by the gate (which blocks may be scored), the policy (where a
sequence's sink block is) and the BlockMask builder (which tiles need ``mask_mod``).

Query and key blocks may differ: ``q_block_size`` is a multiple r of the key ``block_size`` (128 x 64
runs FlashAttention-4's 128-row tiles at full speed while keys keep 64-token selection). Query
block i then sees key blocks j < (i + 1) r, and its *diagonal group* is the r key blocks
i r .. i r + r - 1 that it shares tokens with: those tiles are partial (causal inside).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockLayout:
    """Sequence length, key block size, query block size (default: the key block size) and, for padded
    batches, which tokens are real."""

    seq_len: int
    block_size: int
    valid_tokens: Tensor | None = None  # [B, S] bool, True = real token; None = all real
    q_block_size: int | None = None

    def __post_init__(self) -> None:
        if self.q_block_size is None:
            object.__setattr__(self, "q_block_size", self.block_size)
        check_block_shape(self.q_block_size, self.block_size)

    @classmethod
    def from_attention_mask(cls, attention_mask: Tensor | None, seq_len: int, block_size: int,
                            q_block_size: int | None = None) -> "BlockLayout":
        """Accept a HF-style [B, S] 0/1 mask (or None); an all-ones mask becomes None."""
        if attention_mask is None:
            return cls(seq_len, block_size, None, q_block_size)
        if attention_mask.dim() != 2 or attention_mask.shape[1] != seq_len:
            raise ValueError(
                f"attention_mask must be [batch, {seq_len}] with 1 for real tokens, "
                f"got shape {tuple(attention_mask.shape)}"
            )
        valid = attention_mask.bool()
        return cls(seq_len, block_size, None if bool(valid.all()) else valid, q_block_size)

    @property
    def num_blocks(self) -> int:
        """Key blocks (nk)."""
        return -(-self.seq_len // self.block_size)

    @property
    def num_q_blocks(self) -> int:
        """Query blocks (nq)."""
        return -(-self.seq_len // self.q_block_size)

    @property
    def ratio(self) -> int:
        """Key blocks per query block (r)."""
        return self.q_block_size // self.block_size

    @property
    def shape(self) -> tuple[int, int]:
        """(nq, nk): the last two dims of block scores and kept masks."""
        return self.num_q_blocks, self.num_blocks

    @cached_property
    def valid_blocks(self) -> Tensor | None:
        """[B, nk] bool: the key block holds at least one real token (None when nothing is padded)."""
        if self.valid_tokens is None:
            return None
        return self._tiles(self.valid_tokens, self.block_size).any(-1)

    @cached_property
    def valid_q_blocks(self) -> Tensor | None:
        """[B, nq] bool: the query block holds at least one real token (None when nothing is padded)."""
        if self.valid_tokens is None:
            return None
        return self._tiles(self.valid_tokens, self.q_block_size).any(-1)

    @cached_property
    def partial_blocks(self) -> Tensor | None:
        """[B, nk] bool: the key block mixes real tokens and padding, so its tiles need ``mask_mod``."""
        if self.valid_tokens is None:
            return None
        tiles = self._tiles(self.valid_tokens, self.block_size)
        return tiles.any(-1) & ~tiles.all(-1)

    @cached_property
    def first_block(self) -> Tensor | None:
        """[B] index of each sequence's first real key block: where its sink starts (left padding)."""
        if self.valid_blocks is None:
            return None
        return self.valid_blocks.int().argmax(-1)

    def selectable_blocks(self, device: torch.device) -> Tensor:
        """[B or 1, 1, nq, nk] bool: key block j is causal for query block i and holds a real token."""
        return selectable_blocks(*self.shape, self.ratio, self.valid_blocks, device)

    def diagonal(self, device: torch.device) -> Tensor:
        """[nq, nk] bool: the diagonal groups (tiles that share tokens, causal inside)."""
        return diagonal_blocks(*self.shape, self.ratio, device)

    def _tiles(self, valid: Tensor, size: int) -> Tensor:
        n = -(-self.seq_len // size)
        return torch.nn.functional.pad(valid, (0, n * size - self.seq_len), value=False).view(valid.shape[0], n, -1)


def check_block_shape(q_block_size: int, block_size: int) -> None:
    """Query blocks must hold a whole number of key blocks (r = q_block_size / block_size >= 1)."""
    if q_block_size < block_size or q_block_size % block_size:
        raise ValueError(f"the query block size ({q_block_size}) must be a multiple of the key block size "
                         f"({block_size})")


def block_grid(nq: int, nk: int, r: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(i [nq, 1], j // r [1, nk]): query block index and the query block each key block belongs to."""
    i = torch.arange(nq, device=device)[:, None]
    return i, torch.arange(nk, device=device)[None, :] // r


def diagonal_blocks(nq: int, nk: int, r: int, device: torch.device) -> Tensor:
    """[nq, nk] bool: key block j lies in query block i's diagonal group."""
    i, group = block_grid(nq, nk, r, device)
    return group == i


def selectable_blocks(nq: int, nk: int, r: int, valid_blocks: Tensor | None, device: torch.device) -> Tensor:
    """[B or 1, 1, nq, nk] bool from [B, nk] real key-block flags: a pure function, so compiled code can use it."""
    i, group = block_grid(nq, nk, r, device)
    causal = (group <= i)[None, None]
    return causal if valid_blocks is None else causal & valid_blocks[:, None, None, :]
