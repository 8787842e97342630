"""Training text (``seerflex.texts``) -> fixed-length token sequences.

Every document is tokenized, followed by EOS, concatenated and cut into ``seq_len`` pieces; the tail that
does not fill a piece is dropped. The order of pieces per epoch is a seeded permutation, so a
step number alone says which pieces come next (exact resume). A corpus with domains is packed per
domain and mixed by weight (``mixed_pieces``): an epoch lists piece ids, so repeats cost no memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seerflex.console import warn


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
    perms: dict[int, Tensor] = {}  # one permutation per epoch the batch touches
    out = []
    for pos in range(start, start + batch_size):
        epoch, offset = divmod(pos, num_pieces)
        if epoch not in perms:
            perms[epoch] = torch.randperm(num_pieces, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perms[epoch][offset]))
    return torch.tensor(out)


def check_mixture(mixture: dict[str, float], data: str) -> None:
    """A mixture weights the domains of a corpus: non-negative numbers, a positive sum (checked before loading)."""
    if mixture and not data.startswith("corpus:"):
        raise ValueError(f"mixture weights domains of a corpus: data must be corpus:FOLDER, got {data!r}")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0 for w in mixture.values()) \
            or (mixture and sum(mixture.values()) <= 0):
        raise ValueError(f"mixture weights must be non-negative numbers with a positive sum, got {mixture}")


def mixed_pieces(domains: dict[str, list[str]], tokenizer: Any, seq_len: int, mixture: dict[str, float],
                 seed: int) -> tuple[Tensor, Tensor, dict[str, int]]:
    """(every piece once [N, seq_len], one epoch as piece ids, each domain's pieces per epoch).

    With a ``mixture`` an epoch is the shortest in which every domain with a positive weight makes up its
    share and none of its text is left out: the domain with the most pieces per unit of weight is read once,
    the others repeat (seeded permutations, back to back). A subset fixed for the whole run would leave part
    of a large domain unread however long the run. With an empty ``mixture`` every piece once."""
    if not mixture:  # every document once, packed together as one stream
        pieces = pack([t for d in sorted(domains) for t in domains[d]], tokenizer, seq_len)
        return pieces, torch.arange(len(pieces)), {"all": len(pieces)}
    unknown = sorted(set(mixture) - set(domains))
    if unknown:
        raise ValueError(f"mixture names unknown domain(s) {unknown}; the data has {sorted(domains)}")
    packed = {}
    for d in sorted(d for d, w in mixture.items() if w > 0):
        try:
            packed[d] = pack(domains[d], tokenizer, seq_len)
        except ValueError:  # shorter than one sequence: it cannot take a share
            warn(f"domain {d!r} holds less than one sequence of {seq_len} tokens; left out of the mixture")
    if not packed:
        raise ValueError(f"no domain of the mixture holds a whole sequence of {seq_len} tokens")
    norm = sum(mixture[d] for d in packed)
    length = max(len(p) * norm / mixture[d] for d, p in packed.items())  # the domain read once sets it
    epoch, counts, offset = [], {}, 0
    for i, (d, p) in enumerate(packed.items()):
        want = max(len(p), round(length * mixture[d] / norm))
        g = torch.Generator().manual_seed(seed + 7919 * (i + 1))
        reps = torch.rand(-(-want // len(p)), len(p), generator=g).argsort(-1).flatten()  # permutations back to back
        epoch.append(offset + reps[:want])
        counts[d], offset = want, offset + len(p)
    pieces, reads = torch.cat(list(packed.values())), sum(counts.values())
    if reads > 10 * len(pieces):
        warn(f"the mixture {mixture} reads each piece {reads / len(pieces):.0f} times an epoch on average "
             f"(pieces per epoch {counts}, stored {len(pieces)}): a domain with much text has a small weight")
    return pieces, torch.cat(epoch), counts
