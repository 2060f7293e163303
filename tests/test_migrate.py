"""Old names still load (cellmaps.recipes.migrate): ``training.object_size`` in recipes and
``object_size`` / ``object_size_um`` in model files are the training radius, now
``train_radius`` / ``train_radius_um``."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.errors import CellmapsInputError
from cellmaps.model import Model, bundled_model_path
from cellmaps.modelfile import load_model_file, save_model_file
from cellmaps.recipes import load_recipe, validate_recipe
from cellmaps.recipes.migrate import migrate_recipe, migrate_summary


def test_old_recipe_key_becomes_train_radius():
    r = load_recipe("deepdistance")
    old = {**r, "training": {k: v for k, v in r["training"].items() if k != "train_radius"}}
    old["training"]["object_size"] = 5.0
    assert validate_recipe(old)["training"]["train_radius"] == 5.0
    assert "object_size" in old["training"]  # the caller's mapping is not changed
    both = {**old, "training": {**old["training"], "train_radius": 6.0}}
    with pytest.raises(ValueError, match="object_size"):
        migrate_recipe(both)
    # the same value under both names is not a conflict
    assert migrate_recipe({"training": {"object_size": 5.0, "train_radius": 5.0}}) == {
        "training": {"train_radius": 5.0}
    }


def test_decode_elevation_folds_into_segment_in_recipes_and_model_settings():
    r = load_recipe("micronet")
    r["tasks"].append({"name": "cells", "target": "foreground", "activation": "sigmoid",
                       "loss": "weighted_bce"})  # fmt: skip
    for elevation, segment in (("cells", "seeded_cells"), ("detection", "seeded")):
        old = {**r, "decode": {**r["decode"], "segment": "seeded", "elevation": elevation}}
        assert validate_recipe(old)["decode"]["segment"] == segment
        assert "elevation" not in validate_recipe(old)["decode"]
        assert "elevation" in old["decode"]  # the caller's mapping is not changed
        # a model file's tuned decode settings, too
        m = Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3,
                  decode={"segment": "seeded", "elevation": elevation})  # fmt: skip
        assert m.decode.segment == segment and "elevation" not in m.decode.as_dict()


def test_old_summary_keys_become_train_radius():
    s = migrate_summary({"object_size": 6.0, "object_size_um": 3.0, "data_object_size": 5.4})
    assert s == {"train_radius": 6.0, "train_radius_um": 3.0, "data_object_size": 5.4}
    assert migrate_summary(None) == {}


def test_a_model_file_written_with_the_old_names_loads_and_predicts_alike(tmp_path):
    """The bundled default model's file (written before the rename) rewritten with the old
    keys everywhere loads with its training radius, µm radius and object scale policy, and
    detects exactly what the file with the new keys detects."""
    state, meta = load_model_file(bundled_model_path("default"))
    training = dict(meta["training"])
    training["object_size"] = training.pop("train_radius", training.get("object_size"))
    training["object_size_um"] = training.pop("train_radius_um", training.get("object_size_um"))
    recipe = {**meta["recipe"], "training": dict(meta["recipe"]["training"])}
    rt = recipe["training"]
    rt["object_size"] = rt.pop("train_radius", rt.get("object_size"))
    old_path = tmp_path / "old.safetensors"
    save_model_file(old_path, state, {**meta, "recipe": recipe, "training": training})
    old = Model.load(old_path)
    assert old.train_radius == pytest.approx(training["object_size"])
    assert old.training["train_radius_um"] == pytest.approx(training["object_size_um"])
    assert old.recipe["training"]["train_radius"] == recipe["training"]["object_size"]
    new_path = tmp_path / "new.safetensors"
    old.save(new_path)
    _, saved = load_model_file(new_path)
    assert "object_size" not in saved["training"] and "train_radius" in saved["training"]
    new = Model.load(new_path)
    img = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
    img[30:40, 30:40] = (60, 20, 120)  # a dark blob
    a, b = old.detect(img, object_size=6.0), new.detect(img, object_size=6.0)
    assert np.array_equal(a.coords, b.coords) and np.array_equal(a.scores, b.scores)


def test_a_model_file_with_both_names_disagreeing_is_refused(tmp_path):
    state, meta = load_model_file(bundled_model_path("default"))
    training = {**meta["training"], "object_size": 3.0, "train_radius": 6.0}
    path = tmp_path / "both.safetensors"
    save_model_file(path, state, {**meta, "training": training})
    with pytest.raises(CellmapsInputError, match="object_size"):
        Model.load(path)
