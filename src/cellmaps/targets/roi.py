"""KiNet's weak ROI labels (seeds/kinet.md §III-A, Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cellmaps.io.points import UNCLASSIFIED_LABELS
from cellmaps.targets._common import IGNORE_INDEX


def roi_labels(roi_mask: np.ndarray) -> np.ndarray:
    """Partially annotated ROI classes for a cross-entropy loss.

    The ROI mask stores 0 for unlabelled pixels and 1..K for the K region classes (e.g.
    1 = tumour, 2 = non-tumour). The result holds class indices 0..K−1 and
    ``IGNORE_INDEX`` (255) where nothing is annotated, so only annotated pixels train.

    Returns
    -------
    (H, W) uint8
    """
    roi = np.asarray(roi_mask)
    if roi.ndim != 2 or not np.issubdtype(roi.dtype, np.integer):
        raise ValueError(f"ROI mask must be a 2-D integer image, got {roi.dtype} {roi.shape}")
    if roi.size and (roi.min() < 0 or roi.max() > 254):
        raise ValueError("ROI classes must be integers in 0..254")
    out = np.full(roi.shape, IGNORE_INDEX, dtype=np.uint8)
    labelled = roi != 0
    out[labelled] = (roi[labelled] - 1).astype(np.uint8)
    return out


#: Values of a weak ROI mask (0 = not annotated).
ROI_TUMOUR, ROI_NON_TUMOUR = 1, 2


def _point_density(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Σ_i exp(−|x − p_i|² / 2σ²): a Gaussian of peak 1 per point, summed (0 without points)."""
    impulses = np.zeros(shape, np.float64)
    if len(points):
        rc = np.clip(np.rint(points).astype(int), 0, np.array(shape) - 1)
        np.add.at(impulses, (rc[:, 0], rc[:, 1]), 1.0)
    return ndimage.gaussian_filter(impulses, sigma, mode="constant") * (2 * np.pi * sigma**2)


def tumour_regions_from_points(
    points: np.ndarray,
    labels: Sequence[str],
    shape: tuple[int, int],
    tumour_classes: Sequence[str],
    sigma: float = 20.0,
    min_density: float = 0.5,
) -> np.ndarray:
    """Tumour vs non-tumour regions derived from classified nucleus points.

    KiNet (§III-A, Fig. 3) has pathologists outline tumour and non-tumour regions; the
    shared datasets have no such outlines, so this derives them: a pixel is tumour where
    the Gaussian density (σ px) of tumour-class points is at least ``min_density`` (in
    units of one isolated point's peak) and exceeds the density of the other classified
    points. Points with unclassified labels ('nucleus') count for neither.

    Returns
    -------
    (H, W) bool
        True for tumour.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=object).astype(str)
    tumour = np.isin(labels, [str(c) for c in tumour_classes])
    other = ~tumour & ~np.isin(labels, sorted(UNCLASSIFIED_LABELS))
    t = _point_density(pts[tumour], shape, sigma)
    o = _point_density(pts[other], shape, sigma)
    return (t >= min_density) & (t > o)


def weak_roi_annotation(
    tumour: np.ndarray,
    rng: np.random.Generator,
    keep: float = 0.5,
    block: int = 64,
    margin: int = 8,
) -> np.ndarray:
    """Partial ROI annotation like KiNet's Fig. 3c: only a random subset of the image is
    labelled, and the ambiguous band along the tumour border is left out.

    The image is cut into ``block``-px squares and each is annotated with probability
    ``keep`` (at least one block is kept); pixels within ``margin`` px of the tumour border
    stay unannotated.

    Returns
    -------
    (H, W) uint8
        0 = not annotated, ``ROI_TUMOUR`` (1), ``ROI_NON_TUMOUR`` (2).
    """
    tumour = np.asarray(tumour, bool)
    h, w = tumour.shape
    nb = (-(-h // block), -(-w // block))
    chosen = rng.random(nb) < keep
    if not chosen.any():
        chosen[tuple(rng.integers(nb))] = True
    annotated = np.kron(chosen, np.ones((block, block), bool))[:h, :w]
    if margin > 0:
        border = tumour ^ ndimage.binary_erosion(tumour, border_value=1)
        near_border = ndimage.distance_transform_edt(~border) <= margin if border.any() else None
        if near_border is not None:
            annotated &= ~near_border
    out = np.zeros(tumour.shape, np.uint8)
    out[annotated & tumour] = ROI_TUMOUR
    out[annotated & ~tumour] = ROI_NON_TUMOUR
    return out
