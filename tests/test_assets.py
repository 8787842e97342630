"""Asset lookup is offline-first: cached or installed files are used without any download."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from seerflex import assets


def test_cached_novels_are_read_without_fetching(tmp_path, monkeypatch):
    monkeypatch.setenv("SEERFLEX_CACHE", str(tmp_path))
    folder = tmp_path / "austen"
    folder.mkdir()
    for title in assets.AUSTEN_TITLES.values():
        (folder / f"{title}.txt").write_text(f"{title} text\n", encoding="utf-8")
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    novels = assets.austen_novels()
    assert novels["Emma"] == "Emma text\n" and len(novels) == 6


def test_missing_novels_without_apt_name_the_manual_route(tmp_path, monkeypatch):
    monkeypatch.setenv("SEERFLEX_CACHE", str(tmp_path))
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Emma"):
        assets.austen_dir()


def test_gguf_found_in_an_installed_package_folder_without_importing_it(tmp_path, monkeypatch):
    (tmp_path / assets.SMOLLM2_GGUF).write_bytes(b"GGUF")
    monkeypatch.setattr(assets, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    assert assets.smollm2_gguf_path() == tmp_path / assets.SMOLLM2_GGUF
