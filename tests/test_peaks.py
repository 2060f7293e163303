"""Compiled peak decoding: the same numbers as the scipy formulation it replaces (labelling
+ centre of mass + maximum over labels; a maximum filter of the whole map), on random maps
with plateaus and ties."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from cellmaps.postprocess import decode as model
from cellmaps.postprocess import find_peaks, peaks
from cellmaps.postprocess.decode import local_contrast
from cellmaps.postprocess.peaks import pixel_of, plateau_centroids

EIGHT = np.ones((3, 3), bool)


def random_map(rng, shape):
    """Smooth map, rounded to few levels (plateaus, ties, zeros) or to many or not at all."""
    f = ndimage.gaussian_filter(rng.random(shape), float(rng.uniform(0.5, 3)))
    f = (f - f.min()) / max(float(np.ptp(f)), 1e-12)
    levels = int(rng.choice([4, 30, 1000, 0]))
    return (np.round(f * levels) / levels if levels else f).astype(np.float32)


@contextlib.contextmanager
def setting(module, name, value):
    """Set a module constant for a block (hypothesis tests cannot take monkeypatch)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


COMPILED, SCIPY = 0, 1 << 40  # SMALL_MAP values: every map compiled / every map scipy


@pytest.mark.parametrize("small_map", [COMPILED, SCIPY])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), density=st.floats(0.01, 0.9))
def test_plateau_centroids_equal_scipy_labelling(small_map, seed, density):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 60)), int(rng.integers(1, 60)))
    mask = rng.random(shape) < density
    values = rng.random(shape).astype(np.float32)
    with setting(peaks, "SMALL_MAP", small_map):
        cents, vmax = plateau_centroids(mask, values)
    lab, n = ndimage.label(mask, structure=EIGHT)
    idx = np.arange(1, n + 1)
    ref_c = np.asarray(ndimage.center_of_mass(mask, lab, idx), np.float64).reshape(-1, 2)
    ref_v = np.asarray(ndimage.maximum(values, lab, idx), np.float64)
    assert np.array_equal(cents, ref_c)  # same order (raster order of first pixels), exact
    assert np.array_equal(vmax, ref_v)


def scipy_peaks(prob, xi, md, floor=0.0):
    """find_peaks as it was written with scipy: maximum filter, threshold, labelling."""
    top = float(prob.max())
    if top <= 0:
        return np.zeros((0, 2)), np.zeros(0)
    mx = ndimage.maximum_filter(prob, size=2 * md + 1, mode="constant", cval=-np.inf)
    cand = (prob == mx) & (prob >= np.float32(max(xi * top, floor))) & (prob > 0)
    lab, n = ndimage.label(cand, structure=EIGHT)
    idx = np.arange(1, n + 1)
    c = np.asarray(ndimage.center_of_mass(cand, lab, idx), np.float64).reshape(-1, 2)
    return c, np.asarray(ndimage.maximum(prob, lab, idx), np.float64).reshape(-1)


@pytest.mark.parametrize("share", [0.0, 1.0])  # maximum-filter path, window-scan path
@pytest.mark.parametrize("small_map", [COMPILED, SCIPY])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    xi=st.sampled_from([0.0, 0.3, 0.5, 0.9]),
    md=st.integers(1, 6),
    floor=st.sampled_from([0.0, 0.2]),
)
def test_find_peaks_equal_maximum_filter_formulation(share, small_map, seed, xi, md, floor):
    rng = np.random.default_rng(seed)
    prob = random_map(rng, (int(rng.integers(2, 70)), int(rng.integers(2, 70))))
    with setting(peaks, "WINDOW_SCAN_SHARE", share), setting(peaks, "SMALL_MAP", small_map):
        c, s = find_peaks(prob, xi, md, floor=floor)
    rc, rs = scipy_peaks(prob, xi, md, floor)
    assert np.array_equal(c, rc)
    assert np.array_equal(s, rs)


def test_window_scan_by_hand():
    """Two equal pixels 3 apart are one peak each at min_distance 2 and neither is beaten
    at min_distance 3 (equal values): a plateau is only what touches."""
    f = np.zeros((9, 9), np.float32)
    f[4, 2] = f[4, 5] = 1.0
    f[0, 8] = 0.5  # beaten by nothing within 2, but below ξ·max at ξ 0.6
    c, s = find_peaks(f, 0.6, 2)
    assert c.tolist() == [[4.0, 2.0], [4.0, 5.0]] and s.tolist() == [1.0, 1.0]
    f[4, 4] = 2.0  # now both are within 2 px of a higher pixel
    c, _ = find_peaks(f, 0.1, 2)
    assert c.tolist() == [[0.0, 8.0], [4.0, 4.0]]


@pytest.mark.parametrize("small_work", [0, 1 << 40])  # compiled, numpy
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), window=st.integers(1, 40))
def test_local_contrast_equals_padded_image(small_work, seed, window):
    rng = np.random.default_rng(seed)
    h, w, ch = int(rng.integers(1, 30)), int(rng.integers(1, 30)), int(rng.integers(1, 4))
    img = rng.random((h, w, ch)).astype(np.float32)
    coords = rng.uniform(-0.4, [h - 0.6, w - 0.6], (9, 2))
    half = window // 2
    padded = np.pad(img, ((half, half), (half, half), (0, 0)), mode="symmetric")
    rc = np.clip(pixel_of(coords).astype(int), 0, [h - 1, w - 1])
    ref = [
        padded[r : r + window, c : c + window].std(axis=(0, 1), dtype=np.float64).max()
        for r, c in rc
    ]
    with setting(model, "SMALL_CONTRAST_WORK", small_work):
        got = local_contrast(img, window, coords)
    assert np.allclose(got, ref, rtol=1e-6, atol=1e-9)
