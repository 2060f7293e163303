"""Turning predicted maps into objects: peaks above ξ·max, h-maxima, class by argmax (numpy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import h_maxima


def pixel_of(coords: np.ndarray) -> np.ndarray:
    """The pixel holding each (row, col): rounded half up, not half to even as ``np.rint``
    does, so the pixel of a point does not depend on the frame it is given in (a block of a
    slide starting at an odd row)."""
    return np.floor(np.asarray(coords, np.float64) + 0.5)


# Maps of up to this many pixels are decoded with scipy: importing numba and loading the
# compiled kernels costs about a second per process, more than scipy takes on them (a
# one-image run of a small image starts faster).
SMALL_MAP = 1 << 20


def edge_floor_factor(
    coords: np.ndarray, shape: tuple[int, int], radius: float, edge: float
) -> np.ndarray:
    """The factor on the evidence floor for detections at ``coords`` (row, col) in a map of
    ``shape``: ``edge`` on the image edge, easing to 1 at ``radius`` px in,
    √(1 + (edge² − 1)·max(0, 1 − d/radius)) at distance d from the nearest edge.

    Tiling mirrors the image at its edges (reflect padding), so a filter of radius R centred
    d < R px from the edge sees R − d of its samples twice: for noise, the variance of its
    output grows by about 1 + (1 − d/R) (a box filter: 1 + 2(R − d)/(2R + 1)), its spread by
    the square root of that, which ``edge`` = √2 matches on the edge. Written here (a line of
    numpy) because it is a rule of this decoder, not a library function."""
    rc = np.asarray(coords, np.float64).reshape(-1, 2)
    h, w = shape
    d = np.minimum.reduce([rc[:, 0], rc[:, 1], h - 1 - rc[:, 0], w - 1 - rc[:, 1]])
    frac = np.clip(1.0 - np.maximum(d, 0.0) / max(float(radius), 1e-9), 0.0, 1.0)
    return np.sqrt(1.0 + (float(edge) ** 2 - 1.0) * frac)


def plateau_centroids(
    cand: np.ndarray, values: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (row, col) of every 8-connected component of ``cand``, in raster order of
    their first pixel, and the maximum of ``values`` over each (zeros without values).

    Same numbers as ``ndimage.label`` + ``center_of_mass`` + ``maximum`` (used as such on
    maps up to :data:`SMALL_MAP` pixels), in time linear in the candidate pixels on larger
    ones (compiled; ``ndimage.maximum`` over labels sorts the whole image)."""
    cand = np.asarray(cand, dtype=bool)
    if cand.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {cand.shape}")
    if cand.size <= SMALL_MAP:
        lab, n = ndimage.label(cand, structure=np.ones((3, 3)))
        if n == 0:
            return np.zeros((0, 2)), np.zeros(0)
        idx = np.arange(1, n + 1)
        cents = np.asarray(ndimage.center_of_mass(cand, lab, idx), np.float64).reshape(-1, 2)
        if values is None:
            return cents, np.zeros(n)
        return cents, np.asarray(ndimage.maximum(values, lab, idx), dtype=np.float64)
    # imported here: loading the compiled numba kernels costs about a second
    from cellmaps.postprocess._compiled import sparse_plateaus

    vals = np.zeros(cand.shape, np.float32) if values is None else np.asarray(values)
    count, sum_r, sum_c, vmax = sparse_plateaus(cand, vals)
    if len(count) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    cents = np.stack([sum_r / count, sum_c / count], axis=1)
    return cents, (np.zeros(len(count)) if values is None else vmax)


# Above this share of pixels over the threshold, a separable maximum filter of the whole
# map is cheaper than reading the window of each pixel over it.
WINDOW_SCAN_SHARE = 0.5


def find_peaks(
    prob: np.ndarray,
    xi: float = 0.5,
    min_distance: int = 3,
    top: float | None = None,
    floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a map after suppressing values below ξ·max (MicroNet/KiNet decoding).

    A pixel is a peak when it equals the maximum of its (2·min_distance+1)² window and is
    ≥ ξ·top, ≥ ``floor`` and > 0, where ``top`` is the map's maximum unless given (a whole
    image's maximum when the map is one strip of it); a plateau of equal maxima gives one
    peak at its centroid.

    Returns
    -------
    coords : (N, 2) float64 (row, col)
    scores : (N,) map value at each peak
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {prob.shape}")
    top = (float(prob.max()) if prob.size else 0.0) if top is None else float(top)
    if not np.isfinite(top):
        raise ValueError("map contains NaN or infinite values")
    if top <= 0:
        return np.zeros((0, 2)), np.zeros(0)
    thr = np.float32(max(xi * top, floor))
    above = prob >= thr
    if prob.size > SMALL_MAP and np.count_nonzero(above) <= WINDOW_SCAN_SHARE * prob.size:
        # few pixels over the threshold: test only their windows (compiled)
        from cellmaps.postprocess._compiled import window_maxima_above

        cand = window_maxima_above(np.ascontiguousarray(prob), thr, int(min_distance))
    else:
        size = 2 * int(min_distance) + 1
        mx = ndimage.maximum_filter(prob, size=size, mode="constant", cval=-np.inf)
        cand = (prob == mx) & above & (prob > 0)
    return plateau_centroids(cand, prob)


def channel_peaks(
    maps: np.ndarray,
    xi: float,
    min_distance: int,
    tops: np.ndarray | None = None,
    floor: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of every class map (ξ relative to that map's maximum, or to ``tops``; at
    least ``floor``), with the values of *all* class maps at each peak's pixel and the map
    each peak came from.

    Returns coords (N, 2), scores (N,), values (N, K), channel (N,).
    """
    maps = np.asarray(maps, dtype=np.float32)
    coords, scores, chans = [], [], []
    for k, m in enumerate(maps):
        c, s = find_peaks(m, xi, min_distance, None if tops is None else tops[k], floor)
        coords.append(c)
        scores.append(s)
        chans.append(np.full(len(c), k, dtype=np.intp))
    c = np.concatenate(coords) if coords else np.zeros((0, 2))
    s = np.concatenate(scores) if scores else np.zeros(0)
    ch = np.concatenate(chans) if chans else np.zeros(0, dtype=np.intp)
    rc = np.clip(pixel_of(c).astype(np.intp), 0, np.array(maps.shape[1:]) - 1)
    values = maps[:, rc[:, 0], rc[:, 1]].T.reshape(len(c), maps.shape[0])
    return c, s, values, ch


def merge_class_peaks(
    coords: np.ndarray,
    scores: np.ndarray,
    values: np.ndarray,
    min_distance: int,
    class_gain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge peaks of different class maps closer than ``min_distance`` (the highest wins)
    and give each survivor the class whose map is largest at its pixel (KiNet), after
    multiplying each class's value by ``class_gain`` (one factor per class, chosen on
    validation: a model biased towards one class; the peaks themselves do not change)."""
    if class_gain is not None:
        values = np.asarray(values) * np.asarray(class_gain, np.float64).reshape(1, -1)
    if len(coords) == 0:
        return coords, scores, np.zeros(0, dtype=np.intp)
    # highest first; equal scores by position, so the result does not depend on the order
    # the peaks come in (blocks of a slide decoded in any order give the same detections)
    order = np.lexsort((coords[:, 1], coords[:, 0], -scores))
    coords, scores, values = coords[order], scores[order], values[order]
    keep = np.ones(len(coords), dtype=bool)
    tree = cKDTree(coords)
    for i in range(len(coords)):
        if keep[i]:
            for j in tree.query_ball_point(coords[i], r=min_distance - 1e-9):
                if j > i:
                    keep[j] = False
    return coords[keep], scores[keep], values[keep].argmax(1)


def find_peaks_per_class(
    maps: np.ndarray,
    xi: float = 0.5,
    min_distance: int = 3,
    tops: np.ndarray | None = None,
    class_gain: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KiNet decoding: peaks on every class map (ξ relative to that map's max), the class of
    a peak is the argmax across class maps at its pixel (each scaled by ``class_gain``), and
    peaks of different maps closer than ``min_distance`` are merged, keeping the highest.

    Returns
    -------
    coords (N, 2), scores (N,), class_index (N,)
    """
    c, s, v, _ = channel_peaks(maps, xi, min_distance, tops)
    return merge_class_peaks(c, s, v, min_distance, class_gain)


def h_maxima_peaks_reference(image: np.ndarray, h: float) -> np.ndarray:
    """h-maxima transform then regional maxima (DeepDistance §3.3), via scikit-image:
    centroids (row, col) of the plateaus of ``skimage.morphology.h_maxima``."""
    hm = h_maxima(np.asarray(image, dtype=np.float64), h)
    cents, _ = plateau_centroids(hm > 0, np.asarray(image, dtype=np.float64))
    return cents


def decoded_channels(m: np.ndarray, decode: dict) -> np.ndarray:
    """The channels of a (C, H, W) map that decoding reads: ``decode.channel`` alone (a
    softmax head's nucleus channel) or all of them."""
    c = decode.get("channel")
    return m if c is None else m[c : c + 1]
