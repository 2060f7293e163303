"""h-maxima peak detection (DeepDistance §3.3), equal to scikit-image's result.

scikit-image computes ``h_maxima`` by a grey-level reconstruction by dilation of the
marker ``f − h`` under ``f``, which sorts every pixel and walks them in heaps (~4 s on a
2048² map). The mask only needs the reconstruction where the residue test can pass —
pixels that are maxima of their 3×3 window — so it is computed there alone, by a priority
flood from each such pixel (highest first, stopping once the test is decided), compiled
with numba (:func:`cellmaps.postprocess._compiled.reconstruction_at`). The arithmetic that
decides the result (marker, residue test) is scikit-image's own, in numpy, so the set of
maxima is the same — the tests check equality on predicted maps, on smooth maps with noise
everywhere and on random fields with plateaus and ties.

Before any flood, each candidate is decided where it can be on a grid of 4 × 4 blocks
(:func:`cellmaps.postprocess._compiled.decided_on_blocks`): the reconstruction on the blocks'
largest f and g bounds the pixels' from above (a pass is proven), on their smallest f from
below (a fail is proven), for 1/16 of the pixels. On a smooth map with noise everywhere that
decides most candidates, among them the ones whose floods cost most: maxima that pass visit
their whole h-band, and hills that fail visit all of their slope above the saddle.

The floods are fast when maxima are few (a net's maps: well under 1 % of the pixels) and
slow when noise makes a maximum of every few pixels, each flooding its h-band (an
independent case, 2048² with 20 % of the pixels candidates at h 0.05: 6× slower than
scikit-image). There scikit-image's reconstruction is the cheaper exact method, so it is
used instead: when more than :data:`MAX_CANDIDATE_SHARE` of the pixels are candidates, or
when the floods pop more than :data:`FLOOD_BUDGET_PER_PIXEL` pixels per image pixel in all
(``benchmarks/hmaxima_speed.py`` measures both rules on its maps).
"""

from __future__ import annotations

import numpy as np

from cellmaps.postprocess.peaks import plateau_centroids

EIGHT = np.ones((3, 3), dtype=bool)
#: above this share of candidate pixels (3×3 maxima), scikit-image's reconstruction
MAX_CANDIDATE_SHARE = 0.02
#: floods that pop more pixels than this many per image pixel stop; scikit-image finishes
FLOOD_BUDGET_PER_PIXEL = 1.0
#: block sides of the grids on which maxima are proven to pass or fail before the floods
#: on the pixels run (:func:`cellmaps.postprocess._compiled.decided_on_blocks`)
PROOF_BLOCKS = (4,)


def _as_float(image: np.ndarray) -> np.ndarray:
    f = np.asarray(image)
    if f.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.floating) or f.dtype == np.float16:
        f = f.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError("map contains NaN or infinite values")
    return f


def h_maxima_mask(image: np.ndarray, h: float) -> np.ndarray:
    """Boolean mask equal to ``skimage.morphology.h_maxima(image, h) > 0`` (8-connectivity).

    The same arithmetic as scikit-image: marker ``g = f − h − 2·resolution·|f|`` in the
    image's dtype, reconstruction by dilation of g under f, residue test ``f − rec ≥ h``.
    The reconstruction is computed only where the test can pass — pixels that are maxima
    of their 3×3 window up to the tolerance the marker's resolution term allows (a pixel
    with a higher neighbour q has rec ≥ min(g(q), f) > f − h) — by a priority flood from
    each (:func:`cellmaps.postprocess._compiled._reconstruction_at`), which takes only
    values of f and g, so the mask is the same bit for bit. Integer images are computed in
    float64 (scikit-image does the same for non-integer h).
    """
    # imported here: loading the compiled numba kernels costs about a second
    from cellmaps.postprocess._compiled import decided_on_blocks, reconstruction_at

    f = np.ascontiguousarray(_as_float(image))
    out = np.zeros(f.shape, dtype=bool)
    if h > np.ptp(f):
        return out
    if h == 0:
        raise ValueError("h = 0 is ambiguous, use local maxima instead")
    res = np.finfo(f.dtype).resolution
    marker = f - h - 2 * res * np.abs(f)  # scikit-image's expression, in f's dtype
    # every pixel at the image's minimum is joined to every other pixel at that level, so
    # they share rec = max over q of min(g(q), f_min) = min(max g, f_min): no flood needed
    # for what is often most of the image (a flat background)
    f_min = f.min()
    on_min = f == f_min
    rec_min = np.minimum(marker.max(), f_min)
    out[on_min] = (f[on_min] - rec_min) >= h
    starts = flood_starts(f)
    if starts.size > MAX_CANDIDATE_SHARE * f.size:
        # noise everywhere: floods would cost more than one reconstruction
        return scikit_image_h_maxima_mask(f, h)
    flat, ff = out.ravel(), f.ravel()
    for block in PROOF_BLOCKS:  # maxima decided on a coarser grid skip the floods
        passes, fails = decided_on_blocks(f, marker, starts, h, block)
        flat[starts[passes]] = True
        starts = starts[~(passes | fails)]
    rec = reconstruction_at(f, marker, starts, h, budget=FLOOD_BUDGET_PER_PIXEL * f.size)
    if rec is None:
        return scikit_image_h_maxima_mask(f, h)
    flat[starts] = (ff[starts] - rec) >= h
    return out


def flood_starts(f: np.ndarray) -> np.ndarray:
    """Flat indices of the pixels whose reconstruction the floods compute: maxima of their
    3×3 window up to the tolerance the marker's resolution term allows, except pixels at
    the image's minimum (decided together, without a flood). Their share of the pixels
    decides between the floods and scikit-image (:data:`MAX_CANDIDATE_SHARE`)."""
    from cellmaps.postprocess._compiled import near_window_maxima

    res = np.finfo(f.dtype).resolution
    lo, hi = f.min(), f.max()
    fabs_max = max(abs(lo), abs(hi))
    tol = f.dtype.type(8 * (2 * res * fabs_max) + 8 * np.spacing(fabs_max))
    return np.flatnonzero(near_window_maxima(np.ascontiguousarray(f), tol, lo))


def scikit_image_h_maxima_mask(f: np.ndarray, h: float) -> np.ndarray:
    """``skimage.morphology.h_maxima(f, h) > 0`` on the float map (8-connectivity): the
    exact fallback of :func:`h_maxima_mask` where floods would be slower."""
    from skimage.morphology import h_maxima

    return h_maxima(f, h, footprint=EIGHT) > 0


def h_maxima_peaks(image: np.ndarray, h: float) -> np.ndarray:
    """h-maxima transform then regional maxima (DeepDistance §3.3): (N, 2) float (row, col)
    centroids of the plateaus of :func:`h_maxima_mask`, in raster order of their first
    pixel — the same set as ``skimage.morphology.h_maxima`` followed by 8-connected labelling."""
    return plateau_centroids(h_maxima_mask(image, h))[0]
