"""Cells as connected components of (cell pixels − boundary pixels) (DeepDistance's
MultiClassificationBoundary comparison, after Chen et al. 2017)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential, watershed


def component_centroids(
    cells: np.ndarray, boundary: np.ndarray, min_area: int, threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of the 8-connected components of {cells > t} minus {boundary > t} with at
    least ``min_area`` pixels (the area threshold removes small noisy components).

    Parameters
    ----------
    cells, boundary : (H, W) float
        Posterior maps of the cell-pixel and boundary classes.
    min_area : int
    threshold : float
        Class decision threshold on both posteriors.

    Returns
    -------
    coords : (N, 2) float64
        (row, col) centroids, sorted by row then column.
    areas : (N,) int64
    """
    cells, boundary = np.asarray(cells), np.asarray(boundary)
    if cells.shape != boundary.shape or cells.ndim != 2:
        raise ValueError(
            f"cell and boundary maps must be equal 2-D shapes, got "
            f"{cells.shape} and {boundary.shape}"
        )
    fg = (cells > threshold) & ~(boundary > threshold)
    labels, n = ndimage.label(fg, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = np.flatnonzero(areas >= min_area) + 1
    if keep.size == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    coords = np.asarray(ndimage.center_of_mass(fg, labels, keep), np.float64).reshape(-1, 2)
    order = np.lexsort((coords[:, 1], coords[:, 0]))
    return coords[order], areas[keep - 1][order].astype(np.int64)


def argmax_instances(probability: np.ndarray, seeds: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Instance mask from a two-class (nucleus / background) softmax: the pixels where the
    nucleus class wins the argmax (probability > 0.5), split into nuclei.

    Chamanzar & Nie (§2.5) stop at the argmax mask; instances need touching nuclei apart.
    Here each detection inside the mask seeds a watershed on the negated probability
    limited to the mask (scikit-image's ``watershed``), so a component holding k detections
    becomes k nuclei split along the probability's valleys; a component holding none stays
    one nucleus (8-connectivity). Objects under ``min_area`` px are removed.

    Parameters
    ----------
    probability : (H, W) float
        Nucleus probability.
    seeds : (N, 2)
        Detections (row, col), in the same pixels.
    min_area : int

    Returns
    -------
    (H, W) int32, labels 1..K (0 background)
    """
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"probability must be 2-D, got shape {prob.shape}")
    fg = prob > 0.5
    return drop_small_labels(seeded_watershed(-prob, seed_markers(seeds, fg), fg), min_area)


def seed_markers(seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Watershed markers: each of the (row, col) ``seeds`` (rounded) that lies inside the
    image and on ``mask`` becomes one pixel labelled 1, 2, … in the seeds' order.

    Returns
    -------
    (H, W) int32
    """
    markers = np.zeros(mask.shape, np.int32)
    rc = np.rint(np.asarray(seeds, dtype=np.float64).reshape(-1, 2)).astype(np.intp)
    rc = rc[(rc >= 0).all(1) & (rc[:, 0] < mask.shape[0]) & (rc[:, 1] < mask.shape[1])]
    rc = rc[mask[rc[:, 0], rc[:, 1]]]
    markers[rc[:, 0], rc[:, 1]] = np.arange(1, len(rc) + 1, dtype=np.int32)
    return markers


def seeded_watershed(elevation: np.ndarray, markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's watershed of ``elevation`` from ``markers`` (labels 1..n) inside
    ``mask`` (8-connectivity); each 8-connected part of the mask without a marker becomes
    one more label (n+1, ...), so no masked pixel is left unlabelled.

    Returns
    -------
    (H, W) int32, labels 1..K
    """
    labels = watershed(elevation, markers, mask=mask, connectivity=2).astype(np.int32)
    rest, _ = ndimage.label(mask & (labels == 0), structure=np.ones((3, 3), bool))
    labels[rest > 0] = rest[rest > 0] + int(markers.max())
    return labels


def drop_small_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` without the objects under ``min_size`` px, renumbered 1..K (int32)."""
    labels = np.asarray(labels).copy()
    sizes = np.bincount(labels.ravel())
    labels[(sizes[labels] < min_size) & (labels > 0)] = 0
    return relabel_sequential(labels)[0].astype(np.int32)
