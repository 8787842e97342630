"""Text sources by name: the bundled novels, local files or folders, or a hub dataset.

``austen`` / ``austen:exclude=Emma`` / ``austen:Emma`` (the bundled novels, ``seerflex.assets``),
``corpus:FOLDER[:split=heldout][:domains=code,docs]`` (a corpus built by ``seerflex corpus``; the
train split by default), local ``.txt``/``.json``/``.jsonl``/``.parquet`` files or folders of them
(through ``datasets``), or a hub dataset name. Distillation trains on them and evaluation reads them.
"""

from __future__ import annotations

from pathlib import Path

FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def load_domains(source: str, text_field: str = "text") -> dict[str, list[str]]:
    """Documents by domain: a corpus's domains, or everything under the one name ``all``."""
    if source.startswith("corpus:"):
        from seerflex.corpus import load_corpus

        folder, *options = source[len("corpus:"):].split(":")
        opts = dict(o.partition("=")[::2] for o in options)
        unknown = set(opts) - {"split", "domains"}
        if unknown:
            raise ValueError(f"unknown corpus option(s) {sorted(unknown)} in {source!r}; use split= and domains=")
        domains = opts["domains"].split(",") if opts.get("domains") else None
        return load_corpus(folder, opts.get("split", "train"), domains)
    return {"all": load_texts(source, text_field)}


def load_texts(source: str, text_field: str = "text") -> list[str]:
    """Documents from a source spec (see module docstring)."""
    if source.startswith("corpus:"):
        return [text for texts in load_domains(source).values() for text in texts]
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
