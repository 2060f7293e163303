"""Fast h-maxima: the same maxima as scikit-image's h_maxima + 8-connected labelling, on random
fields with plateaus and ties, smooth maps with noise everywhere, and on a real predicted
map — by the floods (the fallback to scikit-image switched off, ``floods_only``), and the
rules that hand noisy maps to scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.morphology import h_maxima

from cellmaps.postprocess import h_maxima_mask, h_maxima_peaks, h_maxima_peaks_reference, hmaxima
from cellmaps.postprocess._compiled import reconstruction_at


@pytest.fixture(autouse=True)
def floods_only(request, monkeypatch):
    """Every test here checks the floods themselves, unless marked ``with_fallback``."""
    if "with_fallback" not in request.keywords:
        monkeypatch.setattr(hmaxima, "MAX_CANDIDATE_SHARE", 1.0)
        monkeypatch.setattr(hmaxima, "FLOOD_BUDGET_PER_PIXEL", 1e9)


def reference_mask(f, h):
    return np.zeros(f.shape, bool) if h > np.ptp(f) else h_maxima(f, h) > 0


def reference_peaks(f, h):
    m = reference_mask(f, h)
    return np.array([r.centroid for r in regionprops(label(m, connectivity=2))]).reshape(-1, 2)


FIELDS = {
    "uniform": lambda rng, s: rng.random(s),
    "plateaus": lambda rng, s: np.round(ndimage.gaussian_filter(rng.random(s), 1.5) * 20) / 20,
    "integer ties": lambda rng, s: rng.integers(0, 5, s).astype(np.float32),
    "blobs on zero": lambda rng, s: np.maximum(
        ndimage.gaussian_filter(rng.random(s), 2) - 0.5, 0
    ).astype(np.float32),
    # no flat background: smooth hills with noise everywhere (the case the old region-wise
    # shortcut degenerated on)
    "smooth with noise": lambda rng, s: (
        ndimage.gaussian_filter(rng.normal(size=s), 3) + rng.normal(0, 1e-3, s)
    ).astype(np.float32),
    # wide plateaus at several levels, some touching higher pixels
    "terraces": lambda rng, s: (
        np.floor(ndimage.gaussian_filter(rng.random(s), 4) * 30).clip(10, 20).astype(np.float32)
    ),
}


@pytest.mark.parametrize("kind", list(FIELDS))
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), h=st.sampled_from([0.02, 0.1, 0.2, 0.3, 0.5, 1.0]))
def test_same_maxima_as_scikit_image_on_random_fields(kind, seed, h):
    rng = np.random.default_rng(seed)
    f = FIELDS[kind](rng, (int(rng.integers(3, 48)), int(rng.integers(3, 48))))
    assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))
    assert np.allclose(h_maxima_peaks(f, h), reference_peaks(f, h))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_other_dtypes(dtype):
    f = np.random.default_rng(2).integers(0, 6, (40, 40)).astype(dtype)
    for h in (1, 2, 3):
        assert np.array_equal(h_maxima_mask(f, h), h_maxima(f, h) > 0)


def test_edge_cases():
    assert h_maxima_peaks(np.zeros((5, 5)), 0.1).shape == (0, 2)  # h > ptp
    with pytest.raises(ValueError, match="h = 0"):
        h_maxima_mask(np.arange(9.0).reshape(3, 3), 0)
    with pytest.raises(ValueError, match="NaN"):
        h_maxima_mask(np.array([[0, np.nan]]), 0.1)
    f = np.zeros((9, 9))
    f[2:4, 2:5] = 1.0  # one plateau
    f[7, 7] = 0.5
    assert h_maxima_peaks(f, 0.3).tolist() == [[2.5, 3.0], [7.0, 7.0]]
    assert h_maxima_peaks(f, 0.6).tolist() == [[2.5, 3.0]]
    assert np.allclose(h_maxima_peaks_reference(f, 0.3), h_maxima_peaks(f, 0.3))


def test_same_maxima_on_a_real_predicted_map(crchisto):
    """The proximity map the bundled default model predicts for a CRCHisto test image."""
    from cellmaps.io import Dataset
    from cellmaps.model import load_model

    ds = Dataset(crchisto)
    f = load_model().predict_maps(ds.image("crc_img2"))["proximity"][0]
    for h in (0.1, 0.2, 0.3, 0.4, 0.5, 1.0):
        assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))
        assert np.allclose(h_maxima_peaks(f, h), reference_peaks(f, h))


def test_plateau_next_to_a_higher_pixel_and_float_tolerance():
    """A 30×30 plateau touching one higher pixel is not a maximum, the higher pixel is; a
    float32 pixel a hair above its plateau (within the marker's resolution term) gives the
    same answer as scikit-image."""
    f = np.zeros((40, 40), np.float32)
    f[5:35, 5:35] = 1.0
    f[20, 34] = 1.5
    for h in (0.2, 0.5, 1.0):
        assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))
    assert h_maxima_peaks(f, 0.4).tolist() == [[20.0, 34.0]]
    f[20, 34] = np.nextafter(np.float32(1.0), np.float32(2))
    for h in (0.2, 0.5, 1.0):
        assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))


def noisy_blobs(seed: int, size: int = 96) -> np.ndarray:
    """Blobs plus noise on every pixel, rounded: a 3×3 maximum every few pixels."""
    rng = np.random.default_rng(seed)
    f = np.zeros((size, size))
    f[tuple(rng.integers(0, size, (2, 40)))] = rng.uniform(0.2, 1.0, 40) * 2 * np.pi * 9
    f = ndimage.gaussian_filter(f, 3) + rng.normal(0, 0.01, f.shape)  # σ 3 blobs 0.2–1 high
    return np.round(f, 2).astype(np.float32)


@pytest.mark.with_fallback
def test_noisy_maps_go_to_scikit_image_without_flooding(monkeypatch):
    f = noisy_blobs(0)
    cand = f >= ndimage.maximum_filter(f, size=3)
    assert cand.mean() > hmaxima.MAX_CANDIDATE_SHARE  # the rule applies to this map

    def no_flood(*args, **kwargs):
        raise AssertionError("flooded a map with candidates everywhere")

    monkeypatch.setattr("cellmaps.postprocess._compiled.reconstruction_at", no_flood)
    for h in (0.05, 0.2):
        assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))


@pytest.mark.with_fallback
def test_floods_over_budget_stop_and_scikit_image_finishes(monkeypatch):
    f = FIELDS["smooth with noise"](np.random.default_rng(4), (64, 64))
    res = np.finfo(f.dtype).resolution
    h = 0.3
    g = f - h - 2 * res * np.abs(f)
    at = np.flatnonzero(f >= ndimage.maximum_filter(f, size=3))
    full = reconstruction_at(f, g, at, h)
    assert full is not None and np.array_equal(reconstruction_at(f, g, at, h, budget=10**9), full)
    assert reconstruction_at(f, g, at, h, budget=len(at) - 1) is None  # each flood pops ≥ 1
    monkeypatch.setattr(hmaxima, "FLOOD_BUDGET_PER_PIXEL", 1e-4)  # < 1 pop in all
    monkeypatch.setattr(hmaxima, "PROOF_BLOCKS", ())  # every start to the floods
    calls = []
    real = hmaxima.scikit_image_h_maxima_mask
    monkeypatch.setattr(hmaxima, "scikit_image_h_maxima_mask",
                        lambda f, h: calls.append(h) or real(f, h))  # fmt: skip
    assert np.array_equal(h_maxima_mask(f, h), reference_mask(f, h))
    assert calls == [h]


@pytest.mark.parametrize("kind", ["uniform", "plateaus", "smooth with noise", "terraces"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), h=st.sampled_from([0.05, 0.2, 0.5]),
       block=st.sampled_from([2, 4, 8]))  # fmt: skip
def test_block_proofs_agree_with_the_exact_reconstruction(kind, seed, h, block):
    """What the coarse grids prove (passes from an upper bound of rec, fails from a lower
    bound) is what scikit-image's reconstruction gives at those pixels."""
    from skimage.morphology import reconstruction

    from cellmaps.postprocess._compiled import decided_on_blocks

    rng = np.random.default_rng(seed)
    f = FIELDS[kind](rng, (int(rng.integers(8, 64)), int(rng.integers(8, 64))))
    res = np.finfo(f.dtype).resolution
    g = f - f.dtype.type(h) - 2 * res * np.abs(f)
    at = np.flatnonzero(f >= ndimage.maximum_filter(f, size=3))
    passes, fails = decided_on_blocks(f, g, at, f.dtype.type(h), block)
    exact = (f.ravel()[at] - reconstruction(g, f, method="dilation").ravel()[at]) >= h
    assert not (passes & fails).any()
    assert exact[passes].all() and not exact[fails].any()


def test_blocks_decide_most_maxima_of_a_smooth_map():
    """On a smooth map with noise everywhere the 4 × 4 grid decides most candidates, so
    few floods run on the pixels (the speed of benchmarks/hmaxima_speed.py)."""
    from cellmaps.postprocess._compiled import decided_on_blocks

    f = FIELDS["smooth with noise"](np.random.default_rng(1), (256, 256))
    at = hmaxima.flood_starts(f)
    for share in (0.2, 0.5):
        h = f.dtype.type(share * np.ptp(f))
        g = f - h - 2 * np.finfo(f.dtype).resolution * np.abs(f)
        passes, fails = decided_on_blocks(f, g, at, h, 4)
        assert (passes | fails).mean() > 0.75
        assert passes.sum() >= 1  # the highest maximum passes at any h below the range
