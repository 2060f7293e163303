"""DeepDistance targets (seeds/deepdistance.md §3.1–3.2): inner and normalised outer
distance, cell-pixel classification with widened boundaries subtracted, and boundaries."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops

from cellmaps.targets._common import as_label_image, own_cell_distance


def centroid_pixels(mask: np.ndarray) -> np.ndarray:
    """(N, 2) integer (row, col) centroid pixel C(a_i) of every instance, sorted by id:
    the centroid rounded to the nearest pixel."""
    mask = as_label_image(mask)
    cents = [np.rint(r.centroid) for r in regionprops(mask)]
    return np.asarray(cents, dtype=np.intp).reshape(-1, 2)


def inner_distance(mask: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """Inner distance, DeepDistance Eq. 1.

    d_inner(q) = 1 / (1 + α · min_i ‖q − C(a_i)‖²) for q inside an annotated cell, 0 on
    background; C(a_i) is the centroid pixel of cell a_i and the minimum runs over all
    cells (as in the paper). It is exactly 1 at every centroid pixel inside its cell.

    Parameters
    ----------
    mask : (H, W) int
        Instance labels, 0 = background.
    alpha : float
        Decay ratio α (paper: 0.1).

    Returns
    -------
    (H, W) float32
    """
    mask = as_label_image(mask)
    out = np.zeros(mask.shape, dtype=np.float32)
    cents = centroid_pixels(mask)
    if len(cents) == 0:
        return out
    seeds = np.ones(mask.shape, dtype=bool)
    seeds[cents[:, 0], cents[:, 1]] = False
    d2 = ndimage.distance_transform_edt(seeds) ** 2
    inside = mask > 0
    out[inside] = 1.0 / (1.0 + alpha * d2[inside])
    return out


def outer_distance(mask: np.ndarray) -> np.ndarray:
    """Normalised outer distance, DeepDistance Eq. 2.

    For q in cell a_i: min_k ‖q − b_ik‖² / max_{r ∈ a_i} min_k ‖r − b_ik‖², where b_ik are
    the cell's boundary pixels (its pixels with a 4-neighbour outside the cell, the image
    edge included); 0 on background. Boundary pixels are 0 and every cell's maximum is
    exactly 1. A cell with no interior pixel (at most 2 px thick) is set to 1 throughout,
    since its denominator is 0.

    Returns
    -------
    (H, W) float32
    """
    mask = as_label_image(mask)
    out = np.zeros(mask.shape, dtype=np.float32)
    for region in regionprops(mask):
        r0, c0, r1, c1 = region.bbox
        cell = region.image
        own = ndimage.distance_transform_edt(np.pad(cell, 1))[1:-1, 1:-1]
        boundary = cell & (own <= 1.0)
        if np.array_equal(boundary, cell):  # no interior pixel (cell ≤ 2 px thick)
            out[r0:r1, c0:c1][cell] = 1.0
            continue
        d2 = ndimage.distance_transform_edt(~boundary) ** 2
        out[r0:r1, c0:c1][cell] = (d2[cell] / d2[cell].max()).astype(np.float32)
    return out


def boundary(mask: np.ndarray, width: float = 2.0) -> np.ndarray:
    """Boundary classification map (MultiClassificationBoundary, after Chen et al. 2017):
    1 on cell pixels within ``width`` px of the outside of their own cell, else 0.

    Returns
    -------
    (H, W) float32
    """
    d = own_cell_distance(as_label_image(mask))
    return ((d > 0) & (d <= width)).astype(np.float32)


def foreground(mask: np.ndarray, widen: float = 1.0) -> np.ndarray:
    """Cell-pixel classification map with cell boundaries widened and subtracted
    (DeepDistance footnote 1), so touching cells are apart by at least 2·widen px.

    1 on cell pixels farther than ``widen`` px from the outside of their own cell, else 0.

    Returns
    -------
    (H, W) float32
    """
    d = own_cell_distance(as_label_image(mask))
    return (d > widen).astype(np.float32)
