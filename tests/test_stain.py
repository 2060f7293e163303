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
