"""Stain space and the robustness augmentations: exact round trips, shifts that change the
stain they name, and negatives whose targets say 'nothing here'."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed

from cellmaps.io.stain import rgb_to_stains, shift_stains, stains_to_rgb
from cellmaps.training.augment import (
    acquisition_jitter,
    empty_image,
    jpeg_round_trip,
    stain_jitter,
)
from tests.test_engine import tiny_dataset  # noqa: F401, F811  (a fixture)

RNG = np.random.default_rng(0)


def he_like(shape=(32, 32)) -> np.ndarray:
    """Pink background with purple (haematoxylin) discs, RGB in [0, 1]."""
    img = np.ones((*shape, 3)) * np.array([0.93, 0.75, 0.85])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    disc = (yy - 10) ** 2 + (xx - 12) ** 2 <= 25
    img[disc] = [0.35, 0.2, 0.55]
    return img, disc


def test_stain_round_trip_is_exact_and_agrees_with_scikit_image():
    img, _ = he_like()
    c = rgb_to_stains(img)
    assert np.allclose(stains_to_rgb(c), img, atol=1e-9)
    # same matrices as skimage.color.rgb2hed: proportional concentrations where both are
    # positive (scikit-image divides OD by log(1e-6) and clips negatives)
    ref = rgb2hed(img)
    h_ours, h_ref = c[..., 0].ravel(), ref[..., 0].ravel()
    keep = h_ref > 1e-4
    assert np.corrcoef(h_ours[keep], h_ref[keep])[0, 1] > 0.999


def test_shift_stains_changes_the_named_stain_only():
    img, disc = he_like()
    assert np.allclose(shift_stains(img), img, atol=1e-6)  # identity
    weaker_h = shift_stains(img, scale=(0.5, 1.0, 1.0))
    c0, c1 = rgb_to_stains(img), rgb_to_stains(weaker_h)
    assert np.allclose(c1[..., 0], 0.5 * c0[..., 0], atol=1e-4)
    assert np.allclose(c1[..., 1:], c0[..., 1:], atol=1e-4)
    assert weaker_h[disc].mean() > img[disc].mean()  # less haematoxylin: lighter nuclei
    dab = shift_stains(img, shift=(0.0, 0.0, 0.5))
    c2 = rgb_to_stains(dab)
    top = np.percentile(c0[..., 2], 99)
    assert np.allclose(c2[..., 2], c0[..., 2] + 0.5 * top, atol=1e-4)
    with pytest.raises(ValueError, match="RGB"):
        shift_stains(np.zeros((4, 4, 2)))


def test_stain_jitter_stays_in_range_and_leaves_other_channel_counts_alone():
    img, _ = he_like()
    chw = img.transpose(2, 0, 1).astype(np.float32)
    out = stain_jitter(chw, np.random.default_rng(1), 0.3)
    assert out.shape == chw.shape and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, chw)
    grey = chw[:1]
    assert stain_jitter(grey, np.random.default_rng(1), 0.3) is grey
    assert stain_jitter(chw, np.random.default_rng(1), 0.0) is chw


def test_stain_jitter_without_offset_adds_no_dab_where_there_was_none():
    """A Ki67-like crop: haematoxylin everywhere, DAB (0.6) on the left half only. Scaling
    alone keeps the right half free of DAB for every draw; the additive part (``offset``
    0.25, the default: a share of the crop's own DAB 99th percentile) tints it for some."""
    conc = np.zeros((16, 16, 3))
    conc[..., 0] = np.linspace(0.0, 0.8, 256).reshape(16, 16)
    conc[:, :8, 2] = 0.6
    chw = stains_to_rgb(conc).astype(np.float32).transpose(2, 0, 1)
    dab = []
    for offset in (0.0, 0.25):
        outs = [stain_jitter(chw, np.random.default_rng(k), 0.5, offset) for k in range(8)]
        right = [rgb_to_stains(o.transpose(1, 2, 0))[:, 8:, 2] for o in outs]
        dab.append(max(np.abs(r).max() for r in right))
    assert dab[0] < 1e-3 and dab[1] > 0.03


def test_acquisition_jitter_keeps_shape_and_zero_amounts_are_identity():
    img = RNG.uniform(0, 1, (3, 24, 24)).astype(np.float32)
    off = {"gamma": 0, "blur": 0, "noise": 0, "jpeg": 0}
    assert np.array_equal(acquisition_jitter(img, np.random.default_rng(0), off), img)
    on = {"gamma": 0.3, "blur": 1.5, "noise": 0.05, "jpeg": 1.0}
    changed = [
        not np.allclose(acquisition_jitter(img, np.random.default_rng(s), on), img)
        for s in range(5)
    ]
    assert all(changed)
    smooth = np.tile(np.linspace(0, 1, 24, dtype=np.float32), (3, 24, 1))
    jp = jpeg_round_trip(smooth, 90)
    assert jp.shape == smooth.shape and np.abs(jp - smooth).mean() < 0.02


def test_empty_images_have_no_structure_beyond_noise():
    rng = np.random.default_rng(3)
    for _ in range(12):
        e = empty_image(rng, 3, 32)
        assert e.shape == (3, 32, 32) and e.min() >= 0 and e.max() <= 1
        # no object: neighbouring pixels are uncorrelated (noise) or equal (flat)
        for ch in e:
            left, right = ch[:, :-1].ravel().astype(float), ch[:, 1:].ravel().astype(float)
            if min(left.std(), right.std()) > 1e-6:  # flat (or clipped flat): nothing to see
                assert abs(np.corrcoef(left, right)[0, 1]) < 0.2


def test_empty_crops_in_a_batch_have_zero_regression_targets(tiny_dataset):  # noqa: F811
    from cellmaps.training.data import load_training_data, make_batch
    from tests.test_engine import tiny_recipe

    r = tiny_recipe()
    r["augment"].update(empty=1.0, color=0.0)
    data = load_training_data([(str(tiny_dataset), "train", 1.0)], r, progress=False)
    x, t, _, present = make_batch(data, np.random.default_rng(0), 4, 32, r["augment"])
    assert float(t["proximity"].abs().max()) == 0.0
    assert present["proximity"].tolist() == [1.0] * 4
    r["augment"].update(empty=0.0)
    _, t, _, _ = make_batch(data, np.random.default_rng(0), 4, 48, r["augment"])
    assert float(t["proximity"].max()) > 0  # real crops keep their nuclei


def _two_stain_tissue(stain_matrix: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 96² uint8 H&E-like image from fixed concentrations: eosin stroma everywhere, discs of
    haematoxylin (nuclei), a glass corner; mixed by ``stain_matrix`` (3 RGB × 2 stains, optical
    density per unit concentration) as transmitted light of intensity 240."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    h = np.zeros((96, 96))
    e = 0.4 + 0.15 * rng.random((96, 96))
    for r, c in rng.uniform(10, 86, size=(14, 2)):
        disc = (yy - r) ** 2 + (xx - c) ** 2 <= 25
        h[disc] = 1.2 + 0.3 * rng.random()
        e[disc] *= 0.2
    e[:20, :20] = h[:20, :20] = 0.0  # glass
    od = np.stack([h, e], -1) @ np.asarray(stain_matrix, float).T
    return np.clip(np.round(240 * np.exp(-od) - 1), 0, 255).astype(np.uint8)


def test_macenko_removes_a_change_of_stain_colours():
    """The same tissue stained with two different haematoxylin / eosin colours comes out of
    the Macenko normalisation nearly identical, though the inputs differ far more."""
    from cellmaps.io.stain import normalise_stain

    ref = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])  # Macenko's H&E
    other = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])  # scikit-image's H and E
    a, b = _two_stain_tissue(ref), _two_stain_tissue(other)
    before = np.abs(a.astype(float) - b).mean()
    na, nb = normalise_stain(a, "macenko"), normalise_stain(b, "macenko")
    after = np.abs(na.astype(float) - nb).mean()
    assert before > 15 and after < 3, (before, after)
    assert na.dtype == np.uint8 and na.shape == a.shape


def test_reinhard_matches_the_reference_lab_statistics():
    from cellmaps.io.stain import normalise_stain, reinhard_stats

    ref = _two_stain_tissue(np.array([[0.56, 0.22], [0.72, 0.80], [0.41, 0.56]]), seed=1)
    img = _two_stain_tissue(np.array([[0.30, 0.05], [0.50, 0.60], [0.20, 0.30]]), seed=2)
    out = normalise_stain(img, "reinhard", ref)
    np.testing.assert_allclose(reinhard_stats(out), reinhard_stats(ref), atol=1.5)
    assert np.abs(reinhard_stats(img) - reinhard_stats(ref)).max() > 5
    with pytest.raises(ValueError, match="reference"):
        normalise_stain(img, "reinhard")


@pytest.mark.parametrize("value", [0, 128, 255])
def test_stain_normalisation_leaves_blank_images_alone(value):
    from cellmaps.io.stain import normalise_stain

    blank = np.full((64, 64, 3), value, np.uint8)
    for method, ref in (("macenko", None), ("reinhard", _two_stain_tissue(np.eye(3)[:, :2] + 0.2))):
        assert np.array_equal(normalise_stain(blank, method, ref), blank)


def test_predict_stain_norm_from_the_command_line(tmp_path, capsys):
    """`predict --stain-norm`: refused without the reference Reinhard needs (nothing
    written) and on a greyscale image (named); Macenko runs, is recorded in the run file and
    finds the same nuclei in two stainings of one tissue as in each other."""
    import json

    from PIL import Image

    from cellmaps.cli import main
    from cellmaps.io.points import read_points

    ref = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
    other = np.array([[0.65, 0.07], [0.70, 0.99], [0.29, 0.11]])
    (tmp_path / "he").mkdir()
    Image.fromarray(_two_stain_tissue(ref)).save(tmp_path / "he" / "a.png")
    Image.fromarray(_two_stain_tissue(other)).save(tmp_path / "he" / "b.png")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "he"), "--out", str(out), "--quiet"]
    assert main([*argv, "--stain-norm", "reinhard"]) == 2
    assert "--stain-reference" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--stain-norm", "macenko"]) == 0
    assert (
        json.loads((out / "cellmaps-run.json").read_text())["settings"]["stain_norm"] == "macenko"
    )
    a, b = (read_points(out / "points" / f"{k}.csv").coords for k in "ab")
    near = np.linalg.norm(a[:, None] - b[None], axis=-1).min(1) <= 3
    assert len(a) >= 8 and near.sum() >= 0.85 * max(len(a), len(b)), (a, b)
    (tmp_path / "grey").mkdir()
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tmp_path / "grey" / "g.png")
    argv = ["predict", str(tmp_path / "grey"), "--out", str(tmp_path / "o2"), "--quiet"]
    assert main([*argv, "--stain-norm", "macenko"]) == 2
    err = capsys.readouterr().err
    assert "g.png" in err and "RGB" in err


def test_empty_crops_keep_every_pixel_weighted():
    """A pixel-weight map (KiNet's known-class weights, the U-Net weight map) is 1 on an empty
    crop, so the proximity loss charges a peak predicted there; it used to be filled with 0,
    which let the Ki67 model ignore its empty crops."""
    import torch

    from cellmaps.losses import weighted_mse
    from cellmaps.targets import IGNORE_INDEX
    from cellmaps.training.data import Sample, empty_crop

    targets = {
        "proximity_per_class": np.zeros((2, 40, 40), np.float32),
        "known_class_weights": np.zeros((1, 40, 40), np.float32),  # all unknown here
        "roi_labels": np.zeros((1, 40, 40), np.uint8),
    }
    s = Sample("a", np.zeros((3, 40, 40), np.float32), targets, 1.0, frozenset())
    img, maps = empty_crop(s, np.random.default_rng(0), 16)
    assert img.shape == (3, 16, 16)
    assert np.all(maps["known_class_weights"] == 1.0)
    assert np.all(maps["proximity_per_class"] == 0.0)
    assert np.all(maps["roi_labels"] == IGNORE_INDEX)
    # a batch of one crop with a nucleus (ȳ = 0.1 in both channels) and the empty crop: a
    # prediction of 1 everywhere on the empty crop costs ½ · λ · 0.1 · 1² per pixel and channel
    real = torch.zeros(1, 2, 16, 16)
    real[0, :, :4, :4] = 1.6  # mean 0.1
    y = torch.cat([real, torch.from_numpy(maps["proximity_per_class"])[None]])
    pred = torch.cat([real, torch.ones(1, 2, 16, 16)])
    w = torch.cat([torch.ones(1, 1, 16, 16), torch.from_numpy(maps["known_class_weights"])[None]])
    loss = weighted_mse(pred, y, lam=5.0, weights=w)
    assert float(loss[0]) == 0.0
    assert float(loss[1]) == pytest.approx(2 * 0.5 * 5.0 * 0.1, rel=1e-5)
