"""Training text (``seerflex.texts``) -> fixed-length token sequences.

Every document is tokenized, followed by EOS, concatenated and cut into ``seq_len`` pieces; the tail that
does not fill a piece is dropped. The order of pieces per epoch is a seeded permutation, so a
step number alone says which pieces come next (exact resume).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def pack(texts: list[str], tokenizer: Any, seq_len: int) -> Tensor:
    """[N, seq_len] int64 pieces of the EOS-joined token stream."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"the data has {len(stream)} tokens, fewer than one sequence of {seq_len}")
    return torch.tensor(stream[: n * seq_len]).view(n, seq_len)


def batch_indices(step: int, batch_size: int, num_pieces: int, seed: int) -> Tensor:
    """Which pieces form batch ``step``: epochs of seeded permutations, read consecutively."""
    start = step * batch_size
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, num_pieces)
        perm = torch.randperm(num_pieces, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perm[offset]))
    return torch.tensor(out)
