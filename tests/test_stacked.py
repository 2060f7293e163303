"""Small images stacked into one batch of the net: the same detections as one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import cellmaps.predict as predict_module
from cellmaps.errors import CellmapsInputError
from cellmaps.inference.stacked import ForwardRecorder, ForwardReplay, stacked_outputs
from cellmaps.io.points import read_points
from cellmaps.predict import predict_paths, stacked_groups
from tests.test_evidence_floor import peak_model

torch.set_num_threads(2)


def scaled_peak_model():
    torch.manual_seed(0)
    m = peak_model()
    m.training["train_radius"] = 6.0
    return m


def test_stacked_outputs_are_each_calls_own_outputs():
    """A forward whose answer for a tile depends on that tile only: the stacked outputs of
    every call equal the call run alone; tiles of one shape share passes of ≤ batch."""
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return {"a": x.sum(1, keepdim=True) * 2, "b": x[:, :1] - 1}

    rng = np.random.default_rng(0)
    calls = [
        [torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))],
        [
            torch.from_numpy(rng.random((2, 3, 8, 8), dtype=np.float32)),
            torch.from_numpy(rng.random((1, 3, 16, 8), dtype=np.float32)),
        ],  # fmt: skip
        [torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))],
    ]
    outputs = stacked_outputs(forward, calls, batch=3)
    assert sorted(seen) == [1, 1, 3]  # four 8×8 tiles in passes of 3 and 1; the 16×8 alone
    for image_calls, image_outs in zip(calls, outputs, strict=True):
        for x, out in zip(image_calls, image_outs, strict=True):
            alone = forward(x)
            for name in ("a", "b"):
                torch.testing.assert_close(out[name], alone[name])


def test_replay_answers_the_recorded_calls_and_refuses_another():
    rec = ForwardRecorder({"p": 2})
    x = torch.ones(1, 3, 4, 4)
    assert rec(x)["p"].shape == (1, 2, 4, 4) and rec.calls == [x]
    replay = ForwardReplay(rec.calls, [{"p": torch.full((1, 2, 4, 4), 7.0)}])
    with pytest.raises(RuntimeError, match="differs"):
        replay(x + 1)
    assert float(replay(x)["p"].max()) == 7.0
    with pytest.raises(RuntimeError, match="differs"):
        replay(x)  # no second call was recorded


def test_detect_many_is_detect_on_each_image_with_fewer_net_passes():
    """Small images of mixed sizes and object sizes and one that runs as several tiles:
    detect_many gives detect's detections; the small ones share forward passes."""
    m = scaled_peak_model()
    rng = np.random.default_rng(1)
    shapes = [(40, 40), (60, 52), (40, 40), (70, 90), (700, 650)]
    images = [rng.integers(0, 255, (*s, 3), dtype=np.uint8) for s in shapes]
    sizes = [6.0, 6.0, 9.0, 4.5, 6.0]
    alone = [m.detect(img, object_size=size) for img, size in zip(images, sizes, strict=True)]
    assert sum(len(p) for p in alone) > 0
    batches = []
    forward = m.forward
    m.forward = lambda x: batches.append(x.shape[0]) or forward(x)
    together = m.detect_many(images, object_size=sizes, stack=4)
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.coords, b.coords, atol=1e-4)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert max(batches) > 1  # the small images' tiles were stacked
    batches_alone = []
    m.forward = lambda x: batches_alone.append(x.shape[0]) or forward(x)
    for img, size in zip(images, sizes, strict=True):
        m.detect(img, object_size=size)
    assert len(batches) < len(batches_alone)
    with pytest.raises(CellmapsInputError, match="2 object sizes for 5 images"):
        m.detect_many(images, object_size=[6.0, 6.0])


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in [("a", (40, 40)), ("b", (56, 48)), ("c", (40, 40)), ("d", (48, 60)),
                        ("e", (40, 40))]:  # fmt: skip
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(d / f"{name}.png")
    (d / "bad.png").write_bytes(b"not a png")
    return d


def test_predict_folder_stacked_writes_what_one_by_one_writes(folder, tmp_path, monkeypatch):
    """The same points files with images stacked in groups and one by one; an unreadable
    image among them is reported (skip_bad) and the others are written."""
    monkeypatch.setattr(predict_module, "STACK_IMAGES", 4)  # off by default (slower here)
    stacked = predict_paths(scaled_peak_model(), [folder], tmp_path / "s", progress=False,
                            skip_bad=True, object_size=6.0)  # fmt: skip
    monkeypatch.setattr(predict_module, "STACK_IMAGES", 1)
    calls = []
    real = predict_module._predict_one
    monkeypatch.setattr(
        predict_module, "_predict_one", lambda m, f, *a: calls.append(f.stem) or real(m, f, *a)
    )
    single = predict_paths(scaled_peak_model(), [folder], tmp_path / "o", progress=False,
                           skip_bad=True, object_size=6.0)  # fmt: skip
    assert calls == ["a", "b", "bad", "c", "d", "e"]  # one by one here
    assert stacked == single and [r["id"] for r in stacked] == ["a", "b", "c", "d", "e"]
    assert sum(r["count"] for r in stacked) > 0
    for name in "abcde":  # the same points; scores to the rounding of a larger batch
        a = read_points(tmp_path / "s" / "points" / f"{name}.csv")
        b = read_points(tmp_path / "o" / "points" / f"{name}.csv")
        np.testing.assert_allclose(a.coords, b.coords, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert "bad" in (tmp_path / "s" / "skipped.csv").read_text()


def test_stacked_groups_keep_order_and_run_large_or_unreadable_files_alone(folder, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((2100, 2100), np.uint8)).save(big)
    files = sorted(folder.iterdir())  # a, b, bad, c, d, e
    items = list(enumerate(files[:1] + [big] + files[1:]))  # a, big, b, bad, c, d, e
    groups = stacked_groups(items, 2, None)
    names = [[f.stem for _, f in g] for g in groups]
    assert names == [["a"], ["big"], ["b"], ["bad"], ["c", "d"], ["e"]]
    assert [i for g in groups for i, _ in g] == list(range(len(items)))
    assert all(len(g) == 1 for g in stacked_groups(items, 1, None))


def test_predict_maps_many_is_predict_maps_of_each_with_stacked_passes():
    """Crops at several factors (the automatic scale estimate's): the same maps as one by
    one, to float rounding, in fewer forward passes; and the estimate's responses with the
    crops stacked equal those predicted one by one."""
    from cellmaps.inference import scale as auto_scale

    m = scaled_peak_model()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (1200, 1100, 3), dtype=np.uint8)
    factors = [0.5, 0.7, 1.0, 1.4]  # crops of about 384² net px each
    crops = [auto_scale.auto_scale_crop(img, f) for f in factors]
    batches = []
    forward = m.forward
    m.forward = lambda x: batches.append(x.shape[0]) or forward(x)
    together = m.predict_maps_many(crops, factors, stack=4)
    stacked_passes = len(batches)
    alone = [m.predict_maps(c, scale=f) for c, f in zip(crops, factors, strict=True)]
    assert stacked_passes < len(batches) - stacked_passes
    for a, b in zip(alone, together, strict=True):
        assert a.keys() == b.keys() and a.input_shape == b.input_shape
        for name in a:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5)
    many = m.predict_maps_many
    m.predict_maps_many = lambda images, scales: many(images, scales, stack=4)
    logs, stacked = auto_scale.scale_response(m, img, scan="full")
    m.predict_maps_many = lambda images, scales: [
        m.predict_maps(i, scale=f) for i, f in zip(images, scales, strict=True)
    ]
    logs_alone, one_by_one = auto_scale.scale_response(m, img, scan="full")
    np.testing.assert_array_equal(logs, logs_alone)
    np.testing.assert_allclose(stacked, one_by_one, atol=1e-5)


def test_predict_folder_stacked_masks_are_the_one_by_one_masks(tmp_path, monkeypatch):
    """``--masks`` on a folder of small images: the maps are predicted stacked
    (predict_maps_many) and each image segmented on its own maps; the instance masks equal
    the one-by-one run's (a per-pixel net: no batch rounding)."""
    import tifffile

    from tests.test_slides import blob_image, pointwise_model

    folder = tmp_path / "images"
    folder.mkdir()
    for k, shape in enumerate([(120, 130), (96, 96), (120, 130)]):
        Image.fromarray(blob_image(shape, n=25, seed=k)).save(folder / f"i{k}.png")
    calls = []
    real = predict_module._predict_one
    monkeypatch.setattr(
        predict_module, "_predict_one", lambda m, f, *a: calls.append(f.stem) or real(m, f, *a)
    )
    model = pointwise_model("micronet-outlines")
    monkeypatch.setattr(predict_module, "STACK_IMAGES", 4)  # off by default (slower here)
    stacked = predict_paths(model, [folder], tmp_path / "s", masks=True, progress=False)
    assert calls == []  # all three in one stacked group
    monkeypatch.setattr(predict_module, "STACK_IMAGES", 1)
    single = predict_paths(model, [folder], tmp_path / "o", masks=True, progress=False)
    assert calls == ["i0", "i1", "i2"]
    assert stacked == single and sum(r["count"] for r in stacked) > 20
    for k in range(3):
        a = tifffile.imread(tmp_path / "s" / "masks" / f"i{k}.tif")
        b = tifffile.imread(tmp_path / "o" / "masks" / f"i{k}.tif")
        assert a.max() > 5
        np.testing.assert_array_equal(a, b)
