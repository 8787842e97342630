"""Every shipped recipe parses into its recipe's settings and their checks, so a stale key or a bad source in
recipes/*.yaml fails here, not seconds into a GPU run."""

from __future__ import annotations

from pathlib import Path

import pytest

from seerflex.corpus import CorpusSpec
from seerflex.recipes.config import parse_recipe
from seerflex.recipes.corpus import CorpusArgs
from seerflex.recipes.distill import DistillRecipe
from seerflex.recipes.finetune import FinetuneRecipe

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


def test_every_recipe_is_covered():
    assert {p.name.split("_")[0].removesuffix(".yaml") for p in RECIPES} == {"corpus", "distill", "finetune"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_a_shipped_recipe_parses_and_passes_its_checks(path):
    kind = path.name.split("_")[0].removesuffix(".yaml")
    cls = {"corpus": CorpusArgs, "distill": DistillRecipe, "finetune": FinetuneRecipe}[kind]
    recipe = parse_recipe(cls, [str(path)], prog=f"seerflex {kind}")
    if kind == "corpus":
        spec = CorpusSpec(recipe.sources, recipe.heldout_fraction)
        assert spec.domains == ["code", "docs", "prose"]
        assert any(s.heldout_fraction == 0 for s in spec.sources)  # train-only sources keep the held-out set fixed
        assert all(s.heldout_fraction is None for s in spec.sources if s.name in ("austen", "flask-src", "click-docs"))
    elif kind == "distill":
        config, _ = recipe.configs()
        assert config.block_size == 64 and recipe.kl_blocks == "free"
