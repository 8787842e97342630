"""The offline corpus: local package archives -> domains, a stable held-out split, manifest, mixing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest
import torch

from models import CharTokenizer, small_llama
from seerflex.corpus import CorpusSpec, Source, build, held_out, load_corpus
from seerflex.distill.data import mixed_pieces
from seerflex.texts import load_domains, load_texts


def sdist(path, files: dict[str, bytes], top="pkg-1.0"):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def text(tag: str, n: int = 400) -> bytes:
    return (f"{tag} " * (n // (len(tag) + 1) + 1)).encode()


@pytest.fixture
def archives(tmp_path):
    files = {f"docs/page{i}.rst": text(f"doc{i}") for i in range(12)}
    files |= {f"src/pkg/mod{i}.py": text(f"def f{i}(): pass\n") for i in range(15)}
    files |= {"src/pkg/blob.py": b"\xff\xfe\x00binary" * 100, "src/pkg/tiny.py": b"x = 1\n", "README": text("r")}
    tar = sdist(tmp_path / "pkg-1.0.tar.gz", files)
    zpath = tmp_path / "novels.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(5):
            zf.writestr(f"books-2/book{i}.txt", text(f"chapter{i}", 2000).decode())
    return tar, zpath


def spec_of(tar, zpath, fraction=0.3, order=1) -> CorpusSpec:
    sources = [
        {"name": "pkg-docs", "domain": "docs", "fetch": f"file:{tar}", "include": ["docs/*.rst"], "licence": "MIT"},
        {"name": "pkg-src", "domain": "code", "fetch": f"file:{tar}", "include": ["src/*.py"], "licence": "MIT"},
        {"name": "books", "domain": "prose", "fetch": f"file:{zpath}", "include": ["*.txt"], "licence": "public domain",
         "heldout": ["book0.txt"]},
    ]
    return CorpusSpec(sources[::order], fraction)


def test_build_splits_every_domain_stably_and_writes_a_manifest(tmp_path, archives):
    manifest = build(spec_of(*archives), tmp_path / "a", tmp_path / "cache")
    assert sorted(manifest["domains"]) == ["code", "docs", "prose"]
    by_name = {s["name"]: s for s in manifest["sources"]}
    assert by_name["pkg-src"]["documents"] == 15  # the binary and the too-short file are left out
    assert by_name["books"]["sha256"] == hashlib.sha256(archives[1].read_bytes()).hexdigest()
    assert "book0.txt" in by_name["books"]["heldout"] and by_name["books"]["licence"] == "public domain"
    for name, src in by_name.items():  # the split is the hash rule plus the listed documents, nothing else
        assert all(held_out(name, path, 0.3) or path == "book0.txt" for path in src["heldout"])
    train, heldout = load_corpus(tmp_path / "a"), load_corpus(tmp_path / "a", "heldout")
    for domain in train:
        assert train[domain] and not set(train[domain]) & set(heldout[domain])
        assert len(train[domain]) + len(heldout[domain]) == {"docs": 12, "code": 15, "prose": 5}[domain]
    again = build(spec_of(*archives, order=-1), tmp_path / "b", tmp_path / "cache")  # other source order
    assert {s["name"]: s["heldout"] for s in again["sources"]} == {n: s["heldout"] for n, s in by_name.items()}


def test_a_train_only_source_leaves_the_other_splits_as_they_were(tmp_path, archives):
    before = build(spec_of(*archives), tmp_path / "a", tmp_path / "cache")
    spec = spec_of(*archives)
    spec.sources.append(Source("more-src", "code", f"file:{archives[0]}", ("src/*.py",), "MIT", heldout_fraction=0.0))
    after = build(spec, tmp_path / "b", tmp_path / "cache")
    held = {s["name"]: s["heldout"] for s in after["sources"]}
    assert held.pop("more-src") == [] and held == {s["name"]: s["heldout"] for s in before["sources"]}
    assert load_corpus(tmp_path / "b", "heldout") == load_corpus(tmp_path / "a", "heldout")
    # it ships pkg-src's own files: those pkg-src holds out are dropped from training, the rest train twice
    twins = sorted(f"more-src/{p}" for p in held["pkg-src"])
    assert twins and after["dropped_as_heldout"] == twins and before["dropped_as_heldout"] == []
    assert {e["name"]: e["dropped_as_heldout"] for e in after["sources"]}["more-src"] == len(twins)
    assert len(load_corpus(tmp_path / "b")["code"]) == len(load_corpus(tmp_path / "a")["code"]) + 15 - len(twins)
    held_texts = set(load_corpus(tmp_path / "b", "heldout")["code"])
    assert not held_texts & set(load_corpus(tmp_path / "b")["code"])


def test_the_corpus_command_names_what_it_left_out(tmp_path, archives, capsys):
    from seerflex.cli import main as cli_main

    sources = [{"name": "pkg-src", "domain": "code", "fetch": f"file:{archives[0]}", "include": ["src/*.py"],
                "licence": "MIT"},
               {"name": "again", "domain": "code", "fetch": f"file:{archives[0]}", "include": ["src/*.py"],
                "licence": "MIT", "heldout_fraction": 0}]
    recipe = tmp_path / "corpus.yaml"
    recipe.write_text(json.dumps({"sources": sources, "heldout_fraction": 0.3}))  # JSON is YAML
    assert cli_main(["corpus", str(recipe), f"out={tmp_path / 'c'}", f"cache={tmp_path / 'cache'}"]) == 0
    dropped = json.loads((tmp_path / "c" / "manifest.json").read_text())["dropped_as_heldout"]
    assert dropped and all(d.startswith("again/") for d in dropped)
    assert "left out of training" in capsys.readouterr().out


def test_texts_read_a_corpus_by_split_and_domain(tmp_path, archives):
    build(spec_of(*archives), tmp_path / "c", tmp_path / "cache")
    code = load_texts(f"corpus:{tmp_path / 'c'}:domains=code")
    assert code and all("def f" in t for t in code)
    held = load_domains(f"corpus:{tmp_path / 'c'}:split=heldout:domains=prose")
    assert list(held) == ["prose"] and any("chapter0" in t for t in held["prose"])
    with pytest.raises(ValueError, match="unknown domain"):
        load_texts(f"corpus:{tmp_path / 'c'}:domains=poetry")
    with pytest.raises(ValueError, match="unknown corpus option"):
        load_texts(f"corpus:{tmp_path / 'c'}:part=1")
    with pytest.raises(ValueError, match="not a built corpus"):
        load_texts(f"corpus:{tmp_path}")


def test_mixture_sets_each_domains_share_and_reads_all_of_its_text(capsys):
    tok = CharTokenizer()
    domains = {"prose": ["a" * 95] * 1, "code": ["b" * 95] * 3}  # 96 tokens per doc (EOS) -> 3 and 9 pieces of 32
    pieces, epoch, counts = mixed_pieces(domains, tok, 32, {}, seed=0)
    assert counts == {"all": 12} and len(pieces) == 12 and torch.equal(epoch, torch.arange(12))
    _, epoch, counts = mixed_pieces(domains | {"poems": ["c" * 10]}, tok, 32, {"poems": 1, "code": 1}, seed=0)
    assert counts == {"code": 9} and len(epoch) == 9  # a domain shorter than one sequence is left out (with a warning)
    pieces, epoch, counts = mixed_pieces(domains, tok, 32, {"prose": 1, "code": 1}, seed=0)
    assert counts == {"code": 9, "prose": 9} and len(pieces) == 12  # each piece stored once, repeats are ids
    rows = pieces[epoch]
    assert int((rows == tok("a")["input_ids"][0]).any(-1).sum()) == 9  # the small domain repeats to its share
    assert set(epoch.tolist()) == set(range(12))  # and no piece of the large one is left out
    again = mixed_pieces(domains, tok, 32, {"prose": 1, "code": 1}, seed=0)
    assert torch.equal(again[0], pieces) and torch.equal(again[1], epoch)
    _, epoch, counts = mixed_pieces(domains, tok, 32, {"prose": 1, "code": 3}, seed=0)
    assert counts == {"code": 9, "prose": 3} and len(epoch) == 12  # weights as the text: each piece once
    _, _, counts = mixed_pieces(domains, tok, 32, {"prose": 3, "code": 1}, seed=0)
    assert counts == {"code": 9, "prose": 27}
    _, _, counts = mixed_pieces(domains, tok, 32, {"prose": 0, "code": 1}, seed=0)
    assert counts == {"code": 9}  # a zero weight leaves the domain out
    _, epoch, counts = mixed_pieces(domains, tok, 32, {"prose": 0.892, "code": 6}, seed=0)
    assert counts == {"code": 20, "prose": 3}  # prose has the most text per weight: read once, exactly
    assert sorted(epoch[epoch >= 9].tolist()) == [9, 10, 11]  # (code's pieces come first: ids 0-8)
    _, _, counts = mixed_pieces(domains, tok, 32, {"prose": 1, "code": 0.01}, seed=0)
    assert counts == {"code": 9, "prose": 900}
    assert "reads each piece" in capsys.readouterr().out  # a skewed mixture is named
    with pytest.raises(ValueError, match="unknown domain"):
        mixed_pieces(domains, tok, 32, {"poetry": 1}, seed=0)


@pytest.mark.parametrize(("source", "message"), [
    ({"name": "x", "domain": "code", "fetch": "http://x", "include": ["*"], "licence": "MIT"}, "fetch must start"),
    ({"name": "x", "domain": "code", "fetch": "pypi:x==1", "include": [], "licence": "MIT"}, "include needs"),
    ({"name": "x", "domain": "code", "fetch": "pypi:x==1", "include": ["*"], "licence": "MIT", "reader": "pdf"},
     "reader must be"),
    ({"name": "x", "domain": "code", "fetch": "pypi:x==1", "include": ["*"], "licence": "MIT", "heldout_fraction": 1},
     "heldout_fraction must be"),
    ({"name": "x", "domain": "code", "fetch": "pypi:x==1", "include": ["*"], "licence": "MIT",
      "heldout_fraction": "0.1"}, "heldout_fraction must be a number"),
    ({"name": "x", "domain": "code", "fetch": "pypi:x==1", "include": ["*"], "licence": "MIT", "heldout_fraction": 0,
      "heldout": ["a.py"]}, "train-only source, but it lists"),
])
def test_bad_sources_are_named(source, message):
    with pytest.raises(ValueError, match=message):
        Source(**source)


@pytest.mark.parametrize("share", ["0.1", True, 1.0, -0.1])
def test_a_bad_corpus_heldout_fraction_is_named(share):
    with pytest.raises(ValueError, match="heldout_fraction must be a number"):
        CorpusSpec([], share)


def test_distill_trains_on_a_mixed_corpus(tmp_path, archives):
    from seerflex.recipes.distill import DistillRecipe, train

    build(spec_of(*archives), tmp_path / "corpus", tmp_path / "cache")
    recipe = DistillRecipe(model="unused", data=f"corpus:{tmp_path / 'corpus'}", mixture={"prose": 2, "code": 1},
                           seq_len=128, batch_size=2, steps=2, warmup_steps=1, checkpoint_every=100,
                           output_dir=str(tmp_path / "run"), kl_blocks="all",  # 128 tokens: no free block to learn
                           seerflex={"block_size": 32, "gate_hidden_size": 16, "policy": "topk:0.3"})
    adapter = train(recipe, small_llama(), CharTokenizer())
    assert (adapter / "adapter_model.safetensors").is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["loss"] > 0 for x in lines)
    with pytest.raises(ValueError, match="data must be corpus"):
        DistillRecipe(data="austen", mixture={"prose": 1})
