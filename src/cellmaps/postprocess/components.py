"""Cells as connected components of (cell pixels − boundary pixels) (DeepDistance's
MultiClassificationBoundary comparison, after Chen et al. 2017)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


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
