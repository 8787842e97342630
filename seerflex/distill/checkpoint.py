"""Atomic training checkpoints with everything needed to resume bit for bit."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seerflex.files import default_mode

GATES, STATE = "gates.safetensors", "state.pt"


def save(directory: Path, gates: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write into a temporary folder, then swap it in: a crash leaves the previous checkpoint intact."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    os.chmod(tmp, default_mode(0o777))  # mkdtemp makes it 0700
    save_file({k: v.detach().cpu().contiguous() for k, v in gates.items()}, str(tmp / GATES))
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.copy()), pos, has_gauss, gauss),
           "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    torch.save({**state, "rng": rng}, tmp / STATE)
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def latest(directory: Path) -> Path | None:
    """The checkpoint to resume from: ``directory``, or the previous one that a crash between
    ``save``'s two renames left as ``.<name>.old``; None when there is none."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(f".{directory.name}.old")):
        if (candidate / STATE).is_file() and (candidate / GATES).is_file():
            return candidate
    return None


def load(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Gate tensors and the state dict; restores the RNG states as a side effect."""
    directory = Path(directory)
    if not (directory / STATE).is_file():
        raise FileNotFoundError(f"no checkpoint in {directory} (expected {GATES} and {STATE})")
    state = torch.load(directory / STATE, weights_only=True)  # tensors and plain values only
    rng = state.pop("rng")
    random.setstate(rng["python"])
    name, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return load_file(str(directory / GATES)), state
