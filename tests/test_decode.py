"""Decoders as free functions over a frozen DecodeParams (cellmaps.postprocess.decode): a
setting is changed only by making a new object, and predicting never changes a model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from cellmaps.model import Model
from cellmaps.postprocess.decode import DECODERS, DecodeParams, decode_maps
from cellmaps.recipes import SCHEMA, load_recipe, registry_choices, validate_recipe


def small_model(**decode) -> Model:
    r = load_recipe("micronet")
    r["net"].update(base=4, depth=2)
    return Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3, decode,
                 training={"train_radius": 4.0})  # fmt: skip


def test_params_are_frozen_and_replace_makes_a_new_object():
    p = DecodeParams(xi=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.xi = 0.3  # type: ignore[misc]
    q = p.replace(xi=0.3, max_border=None)
    assert (p.xi, q.xi, q.max_border) == (0.5, 0.3, None)
    assert p.overridden(xi=None, min_score=0.2).xi == 0.5  # None: not overridden
    with pytest.raises(KeyError, match="nonsense"):
        p.replace(nonsense=1)
    gain = {"positive": 2.0}
    g = p.replace(class_gain=gain)
    gain["positive"] = 3.0  # the caller's dict changing later does not reach the params
    assert g["class_gain"] == {"positive": 2.0}


def test_params_read_like_the_recipe_decode_section():
    """Every key of the schema's decode section reads back by its recipe name; model fields
    are not part of the mapping; settings of older files this version does not know are
    kept and round-trip."""
    defaults = validate_recipe(load_recipe("micronet"))["decode"]
    p = DecodeParams.from_settings({**defaults, "old_setting": 7}, classes=("a", "b"))
    assert set(SCHEMA["decode"]) <= set(p)
    assert {k: p[k] for k in defaults} == defaults
    assert p["old_setting"] == 7 and p.as_dict()["old_setting"] == 7
    assert "classes" not in p and p.classes == ("a", "b")
    for not_a_setting in ("classes", "replace", "extra"):
        with pytest.raises(KeyError):
            p[not_a_setting]


def test_decoder_registry_is_the_recipe_choice():
    choices = registry_choices()
    assert set(choices["decode.kind"]) == set(DECODERS)
    assert set(choices["tasks.decode"]) == {None, *DECODERS}


def test_decode_maps_with_overrides_equals_decoding_with_the_new_params():
    """Model.decode_maps(ξ=…) is decode_maps over a DecodeParams with that ξ, and the
    model's own ξ is unchanged afterwards."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    ramp = np.linspace(0.05, 1.0, 64)[None, :]  # peaks from 5 % to 100 % of the maximum
    m = (ndimage.gaussian_filter(rng.random((64, 64)), 2) * ramp).astype(np.float32)[None]
    model = small_model()
    maps = {model.decode.task: m}
    before = dict(model.decode)
    for xi in (0.2, 0.6):
        a = model.decode_maps(maps, xi=xi)
        b = decode_maps(maps, model.decode.replace(xi=xi))
        assert np.array_equal(a.coords, b.coords) and len(a) > 0
    assert len(model.decode_maps(maps, xi=0.2)) > len(model.decode_maps(maps, xi=0.6))
    assert dict(model.decode) == before


def test_predict_with_an_override_leaves_the_callers_model_unchanged(tmp_path):
    """`predict_paths(model, …, min_score=…)` (cellmaps predict --min-score) decodes with
    the override and leaves a notebook user's Model as it was (it used to write the override
    into model.decode)."""
    from cellmaps.predict import predict_paths

    img = (np.random.default_rng(1).random((48, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    model = small_model(min_score=0.0)
    before = dict(model.decode)
    rows = predict_paths(model, [tmp_path / "a.png"], tmp_path / "out", min_score=1e9,
                         progress=False)  # fmt: skip
    assert rows[0]["count"] == 0  # the floor was applied...
    assert dict(model.decode) == before  # ...to a copy
    assert model.decode.min_score == 0.0
    with_floor = model.with_decode(min_score=1e9)
    assert with_floor.net is model.net and with_floor.decode.min_score == 1e9


def test_params_and_models_survive_pickling():
    """Dask sends a model to its workers by pickling it: the params (read-only mappings
    inside) and a model holding them come back equal."""
    import pickle

    p = DecodeParams(class_gain={"positive": 2.0}, task_decoders={"a": None}, classes=("x",))
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.class_gain == {"positive": 2.0} and q.classes == ("x",)
    with pytest.raises(TypeError):
        q.class_gain["positive"] = 3.0  # still read-only
    model = small_model(xi=0.3)
    again = pickle.loads(pickle.dumps(model))
    assert dict(again.decode) == dict(model.decode) and again.decode.train_radius == 4.0
