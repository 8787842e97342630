"""Find gates in a folder or hub repo and read them: a seerflex adapter or original SeerAttention gates."""

from __future__ import annotations

import os
import re
from pathlib import Path

from seerflex.hf.adapter_io import ADAPTER_CONFIG, ADAPTER_WEIGHTS, GateCheckpoint, read_adapter
from seerflex.hf.original import ORIGINAL_CONFIG, ORIGINAL_WEIGHTS, read_original

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_checkpoint(path_or_id: str | os.PathLike, *, revision: str | None = None,
                    token: str | bool | None = None) -> GateCheckpoint:
    """Read seerflex adapter files, or original SeerAttention gates, from a folder or a hub repo."""
    files = _resolve(str(path_or_id), revision, token)
    if ADAPTER_CONFIG in files:
        return read_adapter(str(path_or_id), files[ADAPTER_CONFIG], files[ADAPTER_WEIGHTS])
    return read_original(str(path_or_id), files[ORIGINAL_CONFIG], files[ORIGINAL_WEIGHTS])


def _resolve(path_or_id: str, revision: str | None, token: str | bool | None) -> dict[str, Path]:
    """Name -> local path of whichever complete file pair the folder or hub repo holds."""
    pairs = ((ADAPTER_CONFIG, ADAPTER_WEIGHTS), (ORIGINAL_CONFIG, ORIGINAL_WEIGHTS))
    local = Path(path_or_id)
    if local.is_dir():
        for pair in pairs:
            if all((local / name).is_file() for name in pair):
                return {name: local / name for name in pair}
        raise ValueError(f"{local} holds neither a seerflex adapter ({' + '.join(pairs[0])}) nor original "
                         f"SeerAttention gates ({' + '.join(pairs[1])})")
    if local.exists():
        raise ValueError(f"{local} is a file; pass the folder that holds {ADAPTER_CONFIG}")
    if not HUB_ID.match(path_or_id):  # not "owner/name": a local path that does not exist, no hub retries
        raise FileNotFoundError(f"no folder {path_or_id!r} (and it is not a Hugging Face Hub id 'owner/name')")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        for pair in pairs:
            try:
                first = Path(hf_hub_download(path_or_id, pair[0], revision=revision, token=token))
            except EntryNotFoundError:
                continue
            return {pair[0]: first, pair[1]: Path(hf_hub_download(path_or_id, pair[1], revision=revision, token=token))}
    except (OSError, ValueError, EntryNotFoundError) as err:  # offline, unknown repo or revision, missing file
        raise OSError(f"'{path_or_id}' is not a local folder and could not be fetched from the Hugging Face Hub: "
                      f"{err}") from None
    raise ValueError(f"hub repo '{path_or_id}' holds neither {ADAPTER_CONFIG} nor "
                     f"{ORIGINAL_CONFIG} + {ORIGINAL_WEIGHTS}")
