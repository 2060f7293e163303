"""Turning predicted maps into objects: peaks above ξ·max, h-maxima, class by argmax (numpy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree


def _plateau_centroids(cand: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and maximum value of every 8-connected component of ``cand``."""
    lab, n = ndimage.label(cand, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0)
    idx = np.arange(1, n + 1)
    cents = np.asarray(ndimage.center_of_mass(cand, lab, idx), dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(ndimage.maximum(values, lab, idx), dtype=np.float64)
    return cents, scores


def find_peaks(
    prob: np.ndarray, xi: float = 0.5, min_distance: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a map after suppressing values below ξ·max (MicroNet/KiNet decoding).

    A pixel is a peak when it equals the maximum of its (2·min_distance+1)² window and is
    ≥ ξ·max(map) and > 0; a plateau of equal maxima gives one peak at its centroid.

    Returns
    -------
    coords : (N, 2) float64 (row, col)
    scores : (N,) map value at each peak
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"expected a 2-D map, got shape {prob.shape}")
    top = float(prob.max()) if prob.size else 0.0
    if not np.isfinite(top):
        raise ValueError("map contains NaN or infinite values")
    if top <= 0:
        return np.zeros((0, 2)), np.zeros(0)
    size = 2 * int(min_distance) + 1
    mx = ndimage.maximum_filter(prob, size=size, mode="constant", cval=-np.inf)
    cand = (prob == mx) & (prob >= xi * top) & (prob > 0)
    return _plateau_centroids(cand, prob)


def find_peaks_per_class(
    maps: np.ndarray, xi: float = 0.5, min_distance: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """KiNet decoding: peaks on every class map (ξ relative to that map's max), the class of
    a peak is the argmax across class maps at its pixel, and peaks of different maps closer
    than ``min_distance`` are merged, keeping the highest.

    Returns
    -------
    coords (N, 2), scores (N,), class_index (N,)
    """
    maps = np.asarray(maps, dtype=np.float32)
    coords, scores = [], []
    for m in maps:
        c, s = find_peaks(m, xi, min_distance)
        coords.append(c)
        scores.append(s)
    c = np.concatenate(coords) if coords else np.zeros((0, 2))
    s = np.concatenate(scores) if scores else np.zeros(0)
    if len(c) == 0:
        return c, s, np.zeros(0, dtype=np.intp)
    order = np.argsort(-s, kind="stable")
    c, s = c[order], s[order]
    keep = np.ones(len(c), dtype=bool)
    tree = cKDTree(c)
    for i in range(len(c)):
        if keep[i]:
            for j in tree.query_ball_point(c[i], r=min_distance - 1e-9):
                if j > i:
                    keep[j] = False
    c, s = c[keep], s[keep]
    rc = np.clip(np.rint(c).astype(np.intp), 0, np.array(maps.shape[1:]) - 1)
    cls = maps[:, rc[:, 0], rc[:, 1]].argmax(0)
    return c, s, cls


def h_maxima_peaks_reference(image: np.ndarray, h: float) -> np.ndarray:
    """h-maxima transform then regional maxima (DeepDistance §3.3), via scikit-image:
    centroids (row, col) of the plateaus of ``skimage.morphology.h_maxima``."""
    from skimage.morphology import h_maxima

    hm = h_maxima(np.asarray(image, dtype=np.float64), h)
    cents, _ = _plateau_centroids(hm > 0, np.asarray(image, dtype=np.float64))
    return cents
