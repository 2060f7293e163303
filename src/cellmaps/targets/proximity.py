"""Point-centred regression targets: KiNet/MicroNet proximity maps and the repel code."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellmaps.targets._common import as_points, distance_to_nearest_point, nearest_two_points


def proximity(
    points: np.ndarray,
    shape: tuple[int, int],
    alpha: float = 3.0,
    d: float = 15.0,
    scale: float = 1.0,
) -> np.ndarray:
    """Proximity map, KiNet Eq. 1 / MicroNet Eq. 1.

    y(u, v) = scale · (e^{α(1 − D/d)} − 1) / (e^α − 1) for D ≤ d, else 0, where D is the
    Euclidean distance from pixel (u, v) to the nearest point (exact, float coordinates).
    It is ``scale`` at a point that sits on a pixel centre and 0 beyond d.

    Parameters
    ----------
    points : (N, 2)
        (row, col) points.
    shape : (H, W)
    alpha, d : float
        Decay α (paper: 3) and radius d (paper: 15 px).
    scale : float
        Multiplier (MicroNet scales the map by 5).

    Returns
    -------
    (H, W) float32
    """
    pts = as_points(points, shape)
    dist = distance_to_nearest_point(pts, shape, d)
    out = np.zeros(shape[:2], dtype=np.float32)
    near = np.isfinite(dist)
    out[near] = scale * np.expm1(alpha * (1.0 - dist[near] / d)) / np.expm1(alpha)
    return out


def proximity_per_class(
    points: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    shape: tuple[int, int],
    alpha: float = 3.0,
    d: float = 15.0,
    scale: float = 1.0,
) -> np.ndarray:
    """One proximity map per class (KiNet §III-B): channel s uses only the points
    labelled ``classes[s]``; points with any other label (e.g. unclassified 'nucleus')
    are in no channel.

    Returns
    -------
    (len(classes), H, W) float32
    """
    pts = as_points(points, shape)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels")
    return np.stack([proximity(pts[labels == c], shape, alpha, d, scale) for c in classes]).astype(
        np.float32
    )


def known_class_weights(
    points: np.ndarray,
    labels: Sequence[str],
    classes: Sequence[str],
    shape: tuple[int, int],
    d: float = 15.0,
) -> np.ndarray:
    """Pixel weights for per-class proximity regression: 0 within ``d`` of a point whose
    label is not one of ``classes`` (e.g. CRCHisto's unclassified 'nucleus' points), 1
    elsewhere.

    Not in KiNet, whose data label every nucleus: where a nucleus of unknown class sits,
    no class channel should be taught that it is empty, so its neighbourhood is ignored.

    Returns
    -------
    (H, W) float32
    """
    pts = as_points(points, shape)
    labels = np.asarray(labels, dtype=object)
    if len(labels) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(labels)} labels")
    unknown = pts[~np.isin(labels.astype(str), [str(c) for c in classes])]
    out = np.ones(shape[:2], dtype=np.float32)
    out[np.isfinite(distance_to_nearest_point(unknown, shape, d))] = 0.0
    return out


def repel_code(
    points: np.ndarray, shape: tuple[int, int], alpha: float = 0.05, r: float = 70.0
) -> np.ndarray:
    """Repel code (Liang et al. 2019, arXiv 1904.08864), as used by Chamanzar & Nie 2020.

    What is implemented — our reading of Liang et al.'s Eq. 4:

        R(q) = 1 / (1 + α · d1 · (1 + d1 / d2))   for d1 ≤ r,   0 beyond,

    with d1 and d2 the distances from q to the nearest and the second-nearest point
    (d2 = ∞ with a single point, so the code is 1/(1 + α·d1)). Why this form: it is 1 at
    a point, decays with d1 like a proximity code, and the factor (1 + d1/d2) makes it
    decay up to twice as fast where another point is near (d2 small), which is the
    "repel" property both papers describe — on the midline between two points d1 = d2 and
    the code is 1/(1 + 2α·d1). α = 0.05 and r = 70 px are the weakly supervised paper's values.

    Returns
    -------
    (H, W) float32
    """
    pts = as_points(points, shape)
    _, d1, d2 = nearest_two_points(pts, shape)
    out = np.zeros(shape[:2], dtype=np.float32)
    near = d1 <= r
    ratio = np.divide(d1[near], d2[near], out=np.zeros(int(near.sum())), where=d2[near] > 0)
    out[near] = 1.0 / (1.0 + alpha * d1[near] * (1.0 + ratio))
    return out
