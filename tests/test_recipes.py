"""Recipes: ``with_overrides`` is the one place command-line flags patch a recipe."""

from __future__ import annotations

import pytest

from cellmaps.errors import CellmapsInputError
from cellmaps.inference.tiles import TiledInferer
from cellmaps.recipes import load_recipe, validate_recipe, with_overrides


def test_overrides_make_a_patched_copy():
    r = load_recipe("deepsplit")
    before = repr(r)
    out = with_overrides(r, iterations=7, seed=None, train_radius=5.0, schedule="cosine",
                         combine="round_robin", per_image_scale=True)  # fmt: skip
    assert repr(r) == before  # the caller's recipe is not changed
    assert out["training"]["iterations"] == 7 and out["training"]["seed"] == r["training"]["seed"]
    assert out["training"]["train_radius"] == 5.0
    assert out["optimizer"]["schedule"] == "cosine" and out["combine"]["kind"] == "round_robin"
    assert out["training"]["object_scale"] == "image" and out["inference"]["object_size"] == "auto"
    validate_recipe(out)


def test_overrides_refuse_what_cannot_work(tmp_path):
    r = load_recipe("deepsplit")
    with pytest.raises(CellmapsInputError, match="--train-radius"):
        with_overrides({**r, "training": {**r["training"], "train_radius": None}},
                       per_image_scale=True)  # fmt: skip
    with pytest.raises(CellmapsInputError, match="ResNet U-Net"):
        with_overrides(r, encoder_weights=str(tmp_path / "w.pth"))
    with pytest.raises(CellmapsInputError, match="does not exist"):
        with_overrides(load_recipe("weakly-points"), encoder_weights=str(tmp_path / "w.pth"))
    with pytest.raises(TypeError, match="lr"):
        with_overrides(r, lr=0.1)


def test_tiling_from_a_recipe_takes_overrides():
    r = validate_recipe(load_recipe("micronet"))
    t = TiledInferer.from_recipe(r, stride=None, batch=1)
    assert (t.tile, t.stride, t.batch) == (r["inference"]["tile"], r["inference"]["stride"], 1)
