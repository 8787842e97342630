import os
import sys
import zlib

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from models import CharTokenizer, small_llama  # noqa: E402


@pytest.fixture(autouse=True)
def _fixed_seed(request):
    """A fixed seed per test, derived from its name: reruns see the same inputs, tests differ."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
    yield


@pytest.fixture
def tiny_text(tmp_path):
    """A small text file for the recipes."""
    text = tmp_path / "book.txt"
    text.write_text("".join(f"Sentence {i} of a small test book. " for i in range(80)))
    return text


@pytest.fixture
def recipe_model(monkeypatch):
    """Recipes that load a model by name get the small random Llama and the character tokenizer."""
    def load_model(name, dtype=torch.float32):
        return small_llama().to(dtype), CharTokenizer()

    for where in ("seerflex.recipes.eval.load_model", "seerflex.recipes.common.load_model"):
        monkeypatch.setattr(where, load_model)
    monkeypatch.setattr("seerflex.assets.load_smollm2", lambda: load_model("smollm2"))


@pytest.fixture
def killed_after_checkpoint(monkeypatch):
    """``run(train_call)``: runs it with ``checkpoint.save`` raising KeyboardInterrupt right after its first write
    (a kill just after a checkpoint), then puts ``save`` back for the resumed run."""
    from seerflex.distill import checkpoint

    save = checkpoint.save

    def run(train_call) -> None:
        def save_then_die(directory, tensors, state):
            save(directory, tensors, state)
            raise KeyboardInterrupt

        monkeypatch.setattr(checkpoint, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_call()
        monkeypatch.setattr(checkpoint, "save", save)

    return run
