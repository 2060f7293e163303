"""Tumour-nucleus gate for Ki67 scoring (pure numpy / scikit-image): which detected nuclei a
pathologist would count. Lymphocytes (small, round, dense) and stromal nuclei (thin,
elongated) enter no Ki67 index; a detector trained on crops of tumour finds them anyway.

Each detection is described by scale-free measurements of the optical density around it
(:func:`nucleus_features`, sizes in units of the object radius R the image is read at) and
a logistic regression (:func:`fit_gate`, fitted by ``benchmarks/ki67_tumour_only.py`` on
CRCHisto's classified nuclei re-rendered as IHC and BCData's annotated tumour cells) gives
P(tumour); below the gate's threshold a detection is relabelled ``non_tumour`` (kept in the
points, left out of the index). Written here rather than taken from a library: scikit-learn
is not a dependency, and a ridge logistic regression by Newton's method is a dozen lines.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

from cellmaps.io.points import Points

FEATURES = (
    "od_mean",  # mean optical density (haematoxylin + DAB) within R of the point
    "od_p95",  # its 95th percentile
    "od_std",  # its spread (chromatin texture)
    "ring_contrast",  # od_mean minus the mean over R..2R (how distinct from the surround)
    "core_area",  # area of the dense component under the point / (π R²)
    "core_eccentricity",
    "core_solidity",
    "dab_share",  # DAB / (haematoxylin + DAB) within R: positive nuclei are tumour nuclei
)
NON_TUMOUR = "non_tumour"


def optical_density(image: np.ndarray) -> np.ndarray:
    """(H, W, 2) haematoxylin and DAB optical density (≥ 0) of an RGB brightfield image
    (Ruifrok–Johnston colour deconvolution, :func:`skimage.color.rgb2hed`)."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        raise ValueError(f"the tumour gate needs an RGB image, got shape {img.shape}")
    return np.clip(rgb2hed(img[..., :3])[..., [0, 2]], 0.0, None)


def point_features(
    od: np.ndarray, total: np.ndarray, point: np.ndarray, radius: float
) -> np.ndarray:
    """:data:`FEATURES` of one detection (row, col) in an optical-density image (``total``:
    its two stains summed, computed once per image)."""
    h, w = total.shape
    half = int(np.ceil(2 * radius)) + 1
    r0, c0 = int(round(point[0])), int(round(point[1]))
    r0, c0 = min(max(r0, 0), h - 1), min(max(c0, 0), w - 1)
    i0, i1, j0, j1 = (
        max(r0 - half, 0),
        min(r0 + half + 1, h),
        max(c0 - half, 0),
        min(c0 + half + 1, w),
    )
    win = total[i0:i1, j0:j1]
    yy, xx = np.mgrid[i0:i1, j0:j1]
    d = np.hypot(yy - point[0], xx - point[1])
    disc, ring = d <= radius, (d > radius) & (d <= 2 * radius)
    inner = win[disc] if disc.any() else win.ravel()
    od_mean = float(inner.mean())
    ring_mean = float(win[ring].mean()) if ring.any() else od_mean
    dab = od[i0:i1, j0:j1, 1][disc] if disc.any() else od[i0:i1, j0:j1, 1].ravel()
    core_area, ecc, sol = 0.0, 0.0, 0.0
    if win.max() > win.min():
        comp, _ = ndi.label(win > threshold_otsu(win))
        k = comp[r0 - i0, c0 - j0]
        if k:
            region = regionprops((comp == k).astype(np.uint8))[0]
            core_area = region.area / (np.pi * radius**2)
            ecc, sol = float(region.eccentricity), float(region.solidity)
    return np.array([
        od_mean, float(np.percentile(inner, 95)), float(inner.std()), od_mean - ring_mean,
        core_area, ecc, sol, float(dab.sum() / max(inner.sum(), 1e-9)),
    ])  # fmt: skip


def nucleus_features(image: np.ndarray, coords: np.ndarray, radius: float) -> np.ndarray:
    """(N, len(FEATURES)) measurements of every detection (input px, objects of ``radius``
    px in this image)."""
    od = optical_density(image)
    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if not len(pts):
        return np.zeros((0, len(FEATURES)))
    total = od.sum(-1)
    return np.stack([point_features(od, total, p, radius) for p in pts])


def fit_gate(x: np.ndarray, y: np.ndarray, ridge: float = 1.0, iterations: int = 50) -> dict:
    """Ridge logistic regression of y ∈ {0, 1} (1 = tumour) on standardised features by
    Newton's method; classes weighted to equal total weight. Returns the gate's parameters
    (``mean``, ``std``, ``coef``, ``intercept``; ``threshold`` 0.5 until chosen)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mean, std = x.mean(0), x.std(0) + 1e-9
    z = np.column_stack([np.ones(len(x)), (x - mean) / std])
    weight = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
    beta = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-z @ beta))
        grad = z.T @ (weight * (p - y)) + penalty * beta
        hess = (z * (weight * p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return {"features": list(FEATURES), "mean": mean.tolist(), "std": std.tolist(),
            "coef": beta[1:].tolist(), "intercept": float(beta[0]), "threshold": 0.5}  # fmt: skip


def tumour_probability(gate: Mapping, x: np.ndarray) -> np.ndarray:
    """P(tumour) of feature rows under a fitted gate."""
    z = (np.asarray(x, float) - np.asarray(gate["mean"])) / np.asarray(gate["std"])
    return 1 / (1 + np.exp(-(z @ np.asarray(gate["coef"]) + gate["intercept"])))


def apply_gate(
    gate: Mapping,
    points: Points,
    image: np.ndarray,
    radius: float,
    classes=("positive", "negative"),
) -> Points:
    """The points with every detection of ``classes`` whose P(tumour) is below the gate's
    threshold relabelled :data:`NON_TUMOUR` (scores kept)."""
    labels = np.asarray(points.labels, dtype=object).copy()
    sel = np.flatnonzero(np.isin(labels, classes))
    if len(sel):
        p = tumour_probability(gate, nucleus_features(image, points.coords[sel], radius))
        labels[sel[p < gate["threshold"]]] = NON_TUMOUR
    return Points(points.coords, labels, points.scores)
