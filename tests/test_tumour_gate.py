"""The Ki67 tumour gate: scale-free nucleus measurements, the logistic fit, and the gate
applied by Model.detect (non-tumour detections relabelled, left out of the index)."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.io.points import Points
from cellmaps.postprocess.tumour_gate import (
    FEATURES,
    NON_TUMOUR,
    apply_gate,
    fit_gate,
    nucleus_features,
    tumour_probability,
)


def blue_blob(shape, centre, axes, angle=0.0) -> np.ndarray:
    """A haematoxylin-blue ellipse (semi-axes in px) on a white RGB field."""
    img = np.full((*shape, 3), 245, np.uint8)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    img[(u / axes[1]) ** 2 + (v / axes[0]) ** 2 <= 1] = (70, 60, 150)
    return img


def features(img, centre, radius) -> dict[str, float]:
    return dict(zip(FEATURES, nucleus_features(img, np.array([centre]), radius)[0], strict=True))


def test_measurements_are_in_units_of_the_object_radius():
    """A round nucleus of the object radius fills its disc (core area ≈ 1, eccentricity ≈ 0,
    solidity ≈ 1); one of half the radius ≈ ¼; an ellipse of axes 2R × R/2 is eccentric
    (√(1 − 1/16) = 0.968); the same nucleus imaged 2× larger and read at 2R measures alike."""
    r = 8.0
    round_ = features(blue_blob((64, 64), (32, 32), (r, r)), (32, 32), r)
    assert round_["core_area"] == pytest.approx(1.0, abs=0.08)
    assert round_["core_eccentricity"] < 0.2 and round_["core_solidity"] > 0.9
    assert round_["ring_contrast"] > 0.1 and round_["dab_share"] < 0.2
    small = features(blue_blob((64, 64), (32, 32), (r / 2, r / 2)), (32, 32), r)
    assert small["core_area"] == pytest.approx(0.25, abs=0.05)
    long = features(blue_blob((64, 64), (32, 32), (r / 2, 2 * r)), (32, 32), r)
    assert long["core_eccentricity"] == pytest.approx(np.sqrt(1 - 1 / 16), abs=0.02)
    big = features(blue_blob((128, 128), (64, 64), (2 * r, 2 * r)), (64, 64), 2 * r)
    for k in ("core_area", "core_eccentricity", "core_solidity"):
        assert big[k] == pytest.approx(round_[k], abs=0.05), k
    brown = blue_blob((64, 64), (32, 32), (r, r))
    brown[brown[..., 2] == 150] = (150, 90, 40)
    assert features(brown, (32, 32), r)["dab_share"] > 0.5


def test_fit_recovers_a_known_logistic_model():
    """20,000 samples of y ~ Bernoulli(σ(x·b + 0.3)) with standard normal x: the fitted
    coefficients are b within 0.1 (classes reweighted to equal total weight moves only the
    intercept of a logistic model)."""
    rng = np.random.default_rng(0)
    b = np.array([1.5, -1.0, 0.0, 0.5, 0.0, 0.0, -2.0, 0.8])
    x = rng.standard_normal((20_000, len(b)))
    y = (rng.random(20_000) < 1 / (1 + np.exp(-(x @ b + 0.3)))).astype(float)
    gate = fit_gate(x, y, ridge=1e-3)
    assert np.allclose(np.asarray(gate["coef"]) / np.asarray(gate["std"]), b, atol=0.1)
    p = tumour_probability(gate, x)
    assert ((p >= 0.5) == (y == 1)).mean() > 0.75


def test_gate_relabels_only_tumour_classes_below_the_threshold():
    """Three nuclei (two round, one thin) under a gate that scores by eccentricity alone: the
    thin positive one becomes non_tumour, a lymphocyte-class point is left as it is."""
    img = blue_blob((64, 160), (32, 30), (8, 8))
    img = np.minimum(img, blue_blob((64, 160), (32, 80), (3, 16)))
    img = np.minimum(img, blue_blob((64, 160), (32, 130), (8, 8)))
    pts = Points(np.array([[32.0, 30], [32, 80], [32, 130]]), ["positive", "positive", "other"],
                 np.array([1.0, 2.0, 3.0]))  # fmt: skip
    k = FEATURES.index("core_eccentricity")
    coef = np.zeros(len(FEATURES))
    coef[k] = -10.0
    gate = {"mean": [0.0] * len(FEATURES), "std": [1.0] * len(FEATURES), "coef": coef.tolist(),
            "intercept": 5.0, "threshold": 0.5}  # fmt: skip
    out = apply_gate(gate, pts, img, 8.0)
    assert list(out.labels) == ["positive", NON_TUMOUR, "other"]
    assert np.array_equal(out.scores, pts.scores) and np.array_equal(out.coords, pts.coords)


def test_model_detect_applies_the_models_gate(bcdata):
    """The bundled Ki67 scorer (its own gate taken out) with a gate that refuses everything
    (threshold above 1) and one that keeps everything (below 0): every positive/negative
    detection becomes non_tumour, or none does; coordinates unchanged."""
    from cellmaps.io import Dataset
    from cellmaps.model import Model, bundled_model_path

    ds = Dataset(bcdata)
    img = ds.image(ds.ids("val")[0])
    model = Model.load(bundled_model_path("ki67"))
    assert model.training["tumour_gate"]["threshold"] == 0.45  # bundled, chosen on val
    model.training.pop("tumour_gate")
    plain = model.detect(img)
    gate = fit_gate(np.random.default_rng(0).standard_normal((50, len(FEATURES))),
                    np.r_[np.ones(25), np.zeros(25)])  # fmt: skip
    model.training["tumour_gate"] = gate | {"threshold": 1.01}
    refused = model.detect(img)
    assert np.array_equal(refused.coords, plain.coords)
    tumour = np.isin(plain.labels, ("positive", "negative"))
    assert tumour.sum() > 20 and (refused.labels[tumour] == NON_TUMOUR).all()
    model.training["tumour_gate"] = gate | {"threshold": -0.01}
    assert list(model.detect(img).labels) == list(plain.labels)


def test_a_slide_gets_the_same_gate_as_the_whole_image(bcdata, tmp_path, monkeypatch):
    """A BCData image written as a tiled TIFF and read block by block (gate blocks of 256 net
    px, so several): the gate relabels the same detections as on the whole image in memory
    (a gate on eccentricity and optical density, threshold in the middle of its range)."""
    import tifffile

    import cellmaps.inference.slides as slides
    from cellmaps.inference.slides import detect_slide
    from cellmaps.io import Dataset
    from cellmaps.model import Model, bundled_model_path

    ds = Dataset(bcdata)
    img = ds.image(ds.ids("val")[0])
    tifffile.imwrite(tmp_path / "s.tif", img, photometric="rgb", tile=(128, 128))
    model = Model.load(bundled_model_path("ki67"))
    coef = np.zeros(len(FEATURES))
    coef[FEATURES.index("core_eccentricity")] = -2.0
    coef[FEATURES.index("od_mean")] = 2.0
    gate = {"mean": [0.5] * len(FEATURES), "std": [0.25] * len(FEATURES), "coef": coef.tolist(),
            "intercept": 0.0, "threshold": 0.5}  # fmt: skip
    model.training["tumour_gate"] = gate
    whole = model.detect(img)
    monkeypatch.setattr(slides, "GATE_BLOCK", 256)
    got, _ = detect_slide(model, tmp_path / "s.tif", tissue=False)
    assert np.allclose(got.coords, whole.coords, atol=1e-6)
    gated = whole.labels == NON_TUMOUR
    assert 0 < gated.sum() < len(whole)  # the gate splits them
    assert list(got.labels) == list(whole.labels)
