"""--object-size auto: the input → net factor at which the model answers most strongly."""

from __future__ import annotations

import numpy as np
import pytest

import cellmaps.inference.scale as auto_scale
from cellmaps.errors import CellmapsInputError
from cellmaps.inference.scale import AUTO_SCALE_FACTORS, best_log_factor, estimate_input_scale
from cellmaps.model import Model
from cellmaps.postprocess.decode import Maps
from cellmaps.recipes import load_recipe, validate_recipe


def peak_model(**inference) -> Model:
    r = load_recipe("micronet")
    r["net"].update(base=4, depth=2)
    r["inference"].update(inference)
    return Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3, training={"train_radius": 6.0})


def test_best_log_factor_is_the_vertex_of_the_parabola_through_the_best_three():
    """Samples of y = −(x − 0.3)² at x = −1, 0, 1, 2: the vertex 0.3 exactly; a best value at
    the grid's end is kept as it is; two equal best samples give the midpoint between them."""
    x = np.array([-1.0, 0.0, 1.0, 2.0])
    assert best_log_factor(x, -((x - 0.3) ** 2)) == pytest.approx(0.3)
    assert best_log_factor(x, x) == 2.0
    assert best_log_factor(x, np.array([0.0, 1.0, 1.0, 0.0])) == pytest.approx(0.5)


def test_estimate_finds_the_factor_where_the_maps_peak(monkeypatch):
    """A net whose map maximum is highest at factor 0.6 (a Gaussian in log factor): the
    estimate is 0.6 to within 2 % (the grid steps are 30 %), and predict_maps / detect use it
    when the recipe's policy is auto."""
    model = peak_model(object_size="auto")
    seen = []

    def fake_maps(image, progress=False, object_size=None, pixel_size=None, scale=None, **_):
        if scale is None:
            scale = model.input_scale(object_size, pixel_size, image)
            seen.append(scale)
        m = np.zeros((1, 32, 32), np.float32)
        m[0, 16, 16] = np.exp(-(np.log(scale / 0.6) ** 2))
        maps = Maps(proximity=m)
        maps.input_shape = (32, 32)
        return maps

    monkeypatch.setattr(model, "predict_maps", fake_maps)
    monkeypatch.setattr(model, "predict_maps_many", lambda images, scales: [
        fake_maps(i, scale=f) for i, f in zip(images, scales, strict=True)])  # fmt: skip
    monkeypatch.setattr("cellmaps.inference.scale.AUTO_SCALE_PERCENTILE", 100.0)
    img = np.zeros((512, 512, 3), np.uint8)
    assert estimate_input_scale(model, img) == pytest.approx(0.6, rel=0.02)
    model.predict_maps(img)
    assert seen[-1] == pytest.approx(0.6, rel=0.02)
    assert model.input_scale(None, None, img) == pytest.approx(0.6, rel=0.02)
    # explicit sizes win over the policy; without the image the policy cannot apply
    assert model.input_scale(3.0, None, img) == 2.0
    assert model.input_scale() == 1.0


def test_no_evidence_or_best_at_the_grid_end_keeps_the_training_scale(monkeypatch):
    """Responses all below the evidence floor (an empty or noise image), or highest at either
    end of the grid: the estimate is the model's training-image factor (6 / 5 = 1.2)."""
    model = peak_model(object_size="auto")
    model.training["data_object_size"] = 5.0
    model.decode = model.decode.replace(min_score=1.0)
    logs = np.log(AUTO_SCALE_FACTORS)
    curves = {
        "below floor": 0.9 * np.exp(-((logs - np.log(0.6)) ** 2)),
        "top end": np.linspace(1, 3, len(logs)),
        "bottom end": np.linspace(3, 1, len(logs)),
    }
    img = np.zeros((64, 64, 3), np.uint8)
    for name, curve in curves.items():
        monkeypatch.setattr(auto_scale, "scale_response", lambda _m, _img, c=curve: (logs, c))
        assert estimate_input_scale(model, img) == pytest.approx(1.2), name
    monkeypatch.setattr(
        auto_scale, "scale_response", lambda _m, _img: (logs, 1.1 * curves["below floor"] / 0.9)
    )
    assert estimate_input_scale(model, img) == pytest.approx(0.6, rel=0.02)
    # a calibration measured on validation multiplies the estimate, never the fallback
    model.recipe["inference"]["auto_scale_calibration"] = 1.5
    assert estimate_input_scale(model, img) == pytest.approx(0.9, rel=0.02)
    monkeypatch.setattr(auto_scale, "scale_response", lambda _m, _img: (logs, curves["top end"]))
    assert estimate_input_scale(model, img) == pytest.approx(1.2)


def test_auto_refused_where_it_cannot_work():
    model = peak_model()
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(CellmapsInputError, match="needs the image"):
        model.input_scale("auto")
    with pytest.raises(CellmapsInputError, match="'auto'"):
        model.input_scale("big", None, img)
    model.training.pop("train_radius")
    with pytest.raises(CellmapsInputError, match="records the object size"):
        model.input_scale("auto", None, img)
    with pytest.raises(ValueError, match="inference.object_size"):
        peak_model(object_size="guess")


def test_grid_spans_objects_from_a_fifth_to_ten_times_the_model_size_in_16_steps():
    assert AUTO_SCALE_FACTORS[0] == pytest.approx(0.1)
    assert AUTO_SCALE_FACTORS[-1] == pytest.approx(5.0)
    assert np.allclose(np.diff(np.log(AUTO_SCALE_FACTORS)), np.log(50) / 15)


def test_each_factor_sees_at_most_384_net_px_and_factors_leaving_under_128_are_skipped():
    """A 600 × 900 image: factor f is tried on the central min(⌈384 / f⌉, image) crop, and only
    where 600 · f ≥ 128 (f ≥ 0.213); with fewer than three factors left (a 30² image: only
    f = 5) the training-image factor is kept."""
    model = peak_model(object_size="auto")
    model.training["data_object_size"] = 5.0
    seen = []

    def fake_maps(image, scale=None, **_):
        seen.append((image.shape[:2], scale))
        m = np.zeros((1, 8, 8), np.float32)
        m[0, 4, 4] = 2.0 + np.exp(-(np.log(scale / 0.6) ** 2))
        return Maps(proximity=m)

    model.predict_maps = fake_maps
    model.predict_maps_many = lambda images, scales: [
        fake_maps(i, scale=f) for i, f in zip(images, scales, strict=True)
    ]
    img = np.zeros((600, 900, 3), np.uint8)
    logs, response = auto_scale.scale_response(model, img, scan="full")
    kept = AUTO_SCALE_FACTORS[AUTO_SCALE_FACTORS * 600 >= 128]
    assert np.allclose(np.exp(logs), kept) and len(kept) == len(AUTO_SCALE_FACTORS) - 3
    for (shape, f), g in zip(seen, kept, strict=True):
        side = int(np.ceil(384 / g))
        assert f == g and shape == (min(side, 600), min(side, 900))
    assert estimate_input_scale(model, img) == pytest.approx(0.6, rel=0.02)
    assert estimate_input_scale(model, np.zeros((30, 30, 3), np.uint8)) == pytest.approx(1.2)


def test_coarse_to_fine_computes_the_best_and_its_neighbours_with_fewer_calls():
    """Grid of 13: indices 0, 2, …, 12 first; the coarse best is 6 (0.9), its neighbours 5
    and 7 are then computed, 7 (1.0) is better, so 8 (known) and 6 (known) end the climb:
    7 is the answer with 9 calls instead of 13, as the full scan's argmax. Where the global
    maximum hides between two low even points next to a higher coarse peak, the climb stops
    at the local peak (a limit the validation comparison measures)."""
    from cellmaps.inference.scale import coarse_to_fine

    full = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.0, 0.8, 0.6, 0.4, 0.2, 0.1])
    calls = []
    r = coarse_to_fine(len(full), lambda i: calls.append(i) or full[i])
    assert calls == [0, 2, 4, 6, 8, 10, 12, 5, 7]
    assert int(np.nanargmax(r)) == int(np.argmax(full)) == 7
    assert np.array_equal(np.isnan(r), [i not in calls for i in range(13)])
    groups = []
    together = coarse_to_fine(len(full), None, lambda idx: groups.append(idx) or full[idx])
    assert groups == [[0, 2, 4, 6, 8, 10, 12], [5, 7]]  # asked at once: the coarse grid, a step
    assert np.array_equal(together, r, equal_nan=True)
    hidden = np.array([0.1, 0.5, 0.2, 2.0, 0.3, 0.6, 0.9, 0.6, 0.2])  # max at 3, odd
    r = coarse_to_fine(len(hidden), lambda i: hidden[i])
    assert int(np.nanargmax(r)) == 6 and np.isnan(r[3])
    assert coarse_to_fine(0, lambda i: 1.0).shape == (0,)
    two = coarse_to_fine(2, lambda i: float(i))  # both ends are always computed
    assert np.array_equal(two, [0.0, 1.0])


def test_default_model_finds_the_scale_of_an_image_shown_at_twice_the_magnification(crchisto):
    """A CRCHisto test image (20×) and the same image enlarged 2× (as if scanned at 40×),
    given to the bundled default model with no object size: the estimated factors differ by
    2 (±25 %), and the enlarged image's detections match its annotations (×2) about as well
    as the original's (F1 ≥ 0.8 both, within 0.05; the test image with the most nuclei);
    taken at the training scale instead, the enlarged image scores lower."""
    from skimage.transform import rescale

    from cellmaps.io import Dataset
    from cellmaps.metrics import match_points, pool_detection
    from cellmaps.model import bundled_model_path

    def f1(truth, found, radius):
        return pool_detection([match_points(truth, found, radius)])["f1"]

    model = Model.load(bundled_model_path("default"))
    assert model.recipe["inference"]["object_size"] == "auto"
    ds = Dataset(crchisto)
    image_id = max(ds.ids("test"), key=lambda i: len(ds.points(i).coords))  # most nuclei
    img, truth = ds.image(image_id), ds.points(image_id).coords
    big = (rescale(img, 2, order=1, channel_axis=-1, preserve_range=True) + 0.5).astype(np.uint8)
    f_small, f_big = estimate_input_scale(model, img), estimate_input_scale(model, big)
    assert f_small / f_big == pytest.approx(2.0, rel=0.25)
    f1_small = f1(truth, model.detect(img).coords, 6.0)
    f1_big = f1(2 * truth + 0.5, model.detect(big).coords, 12.0)
    assert f1_small >= 0.8 and f1_big >= 0.8
    assert abs(f1_big - f1_small) <= 0.05
    naive = model.detect(big, object_size=model.training["data_object_size"]).coords
    assert f1(2 * truth + 0.5, naive, 12.0) < f1_big - 0.03


def test_spread_sample_and_median_factor_known_answers():
    """8 of 20 items at round(linspace(0, 19, 8)); the median in log factor (0.5× and 2×
    around 1×: 1×; an even count: the geometric mean of the middle two)."""
    from cellmaps.predict import median_factor, spread_sample

    assert spread_sample(list(range(20)), 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert spread_sample([4, 5], 8) == [4, 5]
    assert median_factor([0.5, 2.0, 1.0]) == pytest.approx(1.0)
    assert median_factor([0.25, 1.0, 4.0, 0.5]) == pytest.approx(np.sqrt(0.5))


def shared_folder(tmp_path, n: int):
    """``n`` PNGs of blobs whose first pixel says which factor the fake estimate returns."""
    from PIL import Image

    from tests.test_slides import blob_image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        image = blob_image((96, 96), n=12, seed=i)
        image[0, 0, 0] = 20 + 10 * i
        Image.fromarray(image).save(folder / f"im{i:02d}.png")
    return folder


def test_shared_object_size_is_estimated_once_from_images_spread_over_the_run(
    tmp_path, monkeypatch
):
    """--object-size shared on 10 images: the estimate runs on 8 of them (spread over the
    run), the median factor gives one radius that every image is predicted with — the same
    outputs as that radius given by hand — and the run record names the images."""
    import json

    from cellmaps.predict import predict_paths
    from tests.test_slides import pointwise_model

    model = pointwise_model("micronet")  # maps made from the pixels: a few per blob
    model.training["train_radius"] = 6.0
    calls = []

    def fake_estimate(m, image):
        calls.append(int(image[0, 0, 0]))
        return 0.4 + (int(image[0, 0, 0]) - 20) / 100  # im00 → 0.40 … im09 → 1.30

    monkeypatch.setattr("cellmaps.model.estimate_input_scale", fake_estimate)
    folder = shared_folder(tmp_path, 10)
    predict_paths(model, [folder], tmp_path / "shared", object_size="shared", progress=False)
    picked = [0, 1, 3, 4, 5, 6, 8, 9]  # round(linspace(0, 9, 8))
    assert calls == [20 + 10 * i for i in picked]
    factors = [0.4 + 0.1 * i for i in picked]
    radius = 6.0 / float(np.exp(np.median(np.log(factors))))
    settings = json.loads((tmp_path / "shared" / "cellmaps-run.json").read_text())["settings"]
    assert settings["object_size"] == pytest.approx(radius)
    assert settings["object_size_from"] == [f"im{i:02d}" for i in picked]
    predict_paths(model, [folder], tmp_path / "given", object_size=radius, progress=False)
    predict_paths(model, [folder], tmp_path / "other", object_size=6.0, progress=False)
    points = {run: [(tmp_path / run / "points" / f"im{i:02d}.csv").read_text() for i in range(10)]
              for run in ("shared", "given", "other")}  # fmt: skip
    assert points["shared"] == points["given"] != points["other"]  # the radius matters here
    assert sum(len(p.splitlines()) - 1 for p in points["shared"]) >= 80  # ~12 blobs each
    assert len(calls) == 8  # the given radii estimated nothing


def test_shared_object_size_refused_where_it_cannot_work(tmp_path):
    """Only slides read by region (nothing read whole to estimate from), or a model that
    does not know its training object size: a clear error naming what to give instead."""
    import tifffile

    from cellmaps.predict import predict_paths

    tifffile.imwrite(tmp_path / "s.tif", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(CellmapsInputError, match="slide read by region.*--magnification"):
        predict_paths(peak_model(), [tmp_path / "s.tif"], tmp_path / "o1", object_size="shared",
                      stream_above=1, progress=False)  # fmt: skip
    folder = shared_folder(tmp_path, 2)
    r = load_recipe("micronet")
    r["net"].update(base=4, depth=2)
    plain = Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3)
    with pytest.raises(CellmapsInputError, match="records the object size"):
        predict_paths(plain, [folder], tmp_path / "o2", object_size="shared", progress=False)
    assert not (tmp_path / "o2").exists()  # refused before anything was written


def test_cli_object_size_takes_shared_for_prediction_only():
    """predict / ki67 take 'shared' (any case); tune's --object-size does not; a typo names
    the three kinds of value."""
    import argparse

    from cellmaps.cli import _positive_auto_or_shared, _positive_or_auto

    assert _positive_auto_or_shared(" Shared ") == "shared"
    assert _positive_auto_or_shared("auto") == "auto" and _positive_auto_or_shared("4.5") == 4.5
    with pytest.raises(argparse.ArgumentTypeError, match="'auto' or 'shared'"):
        _positive_auto_or_shared("shard")
    with pytest.raises(argparse.ArgumentTypeError):
        _positive_or_auto("shared")


def test_shared_object_size_with_an_unreadable_image(tmp_path, monkeypatch):
    """A corrupt image among those sampled: the run stops naming it, or with skip_bad the
    estimate is made from the others and the image is listed in skipped.csv."""
    import json

    from cellmaps.predict import predict_paths
    from tests.test_slides import pointwise_model

    model = pointwise_model("micronet")
    model.training["train_radius"] = 6.0
    monkeypatch.setattr("cellmaps.model.estimate_input_scale", lambda m, image: 0.5)
    folder = shared_folder(tmp_path, 3)
    (folder / "im01.png").write_bytes(b"not a png")
    with pytest.raises(CellmapsInputError, match="im01"):
        predict_paths(model, [folder], tmp_path / "o1", object_size="shared", progress=False)
    predict_paths(model, [folder], tmp_path / "o2", object_size="shared", progress=False,
                  skip_bad=True)  # fmt: skip
    settings = json.loads((tmp_path / "o2" / "cellmaps-run.json").read_text())["settings"]
    assert settings["object_size_from"] == ["im00", "im02"]
    assert settings["object_size"] == pytest.approx(12.0)
    assert "im01" in (tmp_path / "o2" / "skipped.csv").read_text()
