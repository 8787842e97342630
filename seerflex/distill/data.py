"""Training text -> fixed-length token sequences, through ``datasets``.

Sources: ``austen`` / ``austen:exclude=Emma`` / ``austen:Emma`` (the bundled novels), local
``.txt``/``.json``/``.jsonl``/``.parquet`` files or folders of them, or a hub dataset name. Every
document is tokenized, followed by EOS, concatenated and cut into ``seq_len`` pieces; the tail that
does not fill a piece is dropped. The order of pieces per epoch is a seeded permutation, so a
step number alone says which pieces come next (exact resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_texts(source: str, text_field: str = "text") -> list[str]:
    """Documents from a source spec (see module docstring)."""
    if source == "austen" or source.startswith("austen:"):
        from seerflex.assets import austen_novels

        novels = austen_novels()
        arg = source.partition(":")[2]
        if arg.startswith("exclude="):
            excluded = set(arg[len("exclude="):].split(","))
            return [t for title, t in sorted(novels.items()) if title not in excluded]
        if arg:
            missing = set(arg.split(",")) - set(novels)
            if missing:
                raise ValueError(f"unknown novel(s) {sorted(missing)}; available: {sorted(novels)}")
            return [novels[title] for title in arg.split(",")]
        return [t for _, t in sorted(novels.items())]
    import datasets  # only file and hub sources need it

    path = Path(source)
    if path.exists():
        files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.suffix in FILE_BUILDERS)
        if not files:
            raise ValueError(f"no {'/'.join(FILE_BUILDERS)} files under {source}")
        if path.is_dir() or path.suffix == ".txt":  # a whole text file is one document
            return [p.read_text(encoding="utf-8") for p in files]
        ds = datasets.load_dataset(FILE_BUILDERS[files[0].suffix], data_files=[str(f) for f in files], split="train")
    else:
        ds = datasets.load_dataset(source, split="train")
    if text_field not in ds.column_names:
        raise ValueError(f"dataset {source} has no '{text_field}' column (columns: {ds.column_names})")
    return list(ds[text_field])


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
