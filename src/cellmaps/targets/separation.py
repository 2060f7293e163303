"""DeepSplit targets and weights (seeds/deepsplit.md §2–3): separation mask, U-Net weight
map, and separation-task weights."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops
from skimage.morphology import disk

from cellmaps.targets._common import as_label_image


def separation(mask: np.ndarray, distance: float = 2.0) -> np.ndarray:
    """Separation mask: pixels between adjacent cells (DeepSplit Fig. 1c).

    A pixel (background or cell) is a separation pixel when two *different* instances
    both lie within ``distance`` px of it (a disc footprint; a pixel of a cell is at
    distance 0 from that cell). Isolated cells produce none.

    Returns
    -------
    (H, W) float32
    """
    mask = as_label_image(mask)
    fp = disk(int(np.floor(distance)))
    big = int(mask.max()) + 1  # (ndimage turns an int64-max cval into int64-min)
    hi = ndimage.maximum_filter(mask, footprint=fp, mode="constant", cval=0)
    lo = ndimage.minimum_filter(
        np.where(mask > 0, mask, big), footprint=fp, mode="constant", cval=big
    )
    return ((hi > 0) & (lo != big) & (hi != lo)).astype(np.float32)


def nearest_two_cells(mask: np.ndarray, max_distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances d1, d2 from each pixel to the nearest and second-nearest cell (inf when
    farther than ``max_distance``). Each cell updates only its bounding box grown by
    ``max_distance``, so the cost grows with the number of cells, not cells × pixels."""
    mask = as_label_image(mask)
    h, w = mask.shape
    d1 = np.full(mask.shape, np.inf)
    d2 = np.full(mask.shape, np.inf)
    m = int(np.ceil(max_distance))
    for region in regionprops(mask):
        r0, c0, r1, c1 = region.bbox
        R0, C0, R1, C1 = max(r0 - m, 0), max(c0 - m, 0), min(r1 + m, h), min(c1 + m, w)
        cell = mask[R0:R1, C0:C1] == region.label
        d = ndimage.distance_transform_edt(~cell)
        a, b = d1[R0:R1, C0:C1], d2[R0:R1, C0:C1]
        b[:] = np.where(d < a, a, np.minimum(b, d))
        np.minimum(a, d, out=a)
    d1[d1 > max_distance] = np.inf
    d2[d2 > max_distance] = np.inf
    return d1, d2


def class_balance_weights(mask: np.ndarray) -> np.ndarray:
    """w_c: one weight for all foreground and one for all background pixels, chosen so both
    classes carry the same total weight and the mean weight is 1 (N/2n_fg and N/2n_bg)."""
    fg = as_label_image(mask) > 0
    n, n_fg = fg.size, int(fg.sum())
    if n_fg in (0, n):
        return np.ones(fg.shape, dtype=np.float32)
    return np.where(fg, n / (2.0 * n_fg), n / (2.0 * (n - n_fg))).astype(np.float32)


def unet_weight_map(
    mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, form: str = "deepsplit"
) -> np.ndarray:
    """Segmentation loss weights, DeepSplit Eq. 1 (after Ronneberger et al. 2015):

    w(x) = w_c(x) + w0 · exp(−(d1(x)² + d2(x)²) / 2σ²)   (``form="deepsplit"``, as printed)
    w(x) = w_c(x) + w0 · exp(−(d1(x) + d2(x))² / 2σ²)    (``form="unet"``, Ronneberger)

    with d1, d2 the distances of a background pixel to the nearest and second-nearest
    cell; the border term is 0 on cell pixels and where only one cell is near. w_c is
    :func:`class_balance_weights`. The term is computed within 4σ of the cells (beyond,
    it is below w0·e⁻⁸).

    Returns
    -------
    (H, W) float32
    """
    if form not in ("deepsplit", "unet"):
        raise ValueError(f"form must be 'deepsplit' or 'unet', got {form!r}")
    mask = as_label_image(mask)
    d1, d2 = nearest_two_cells(mask, 4.0 * sigma)
    near = np.isfinite(d2) & (mask == 0)
    s = d1[near] ** 2 + d2[near] ** 2 if form == "deepsplit" else (d1[near] + d2[near]) ** 2
    border = np.zeros(mask.shape, dtype=np.float64)
    border[near] = w0 * np.exp(-s / (2.0 * sigma**2))
    return (class_balance_weights(mask) + border).astype(np.float32)


def separation_weights(
    mask: np.ndarray,
    sep: np.ndarray | None = None,
    background: float = 1.0,
    cell: float = 5.0,
    gap: float = 22.6,
    distance: float = 2.0,
) -> np.ndarray:
    """Separation-task weights (DeepSplit §3.2): background 1, cell 5, separation pixels 22.6.

    ``sep`` defaults to :func:`separation` of the mask at ``distance`` (give the separation
    target's own); the gap weight wins over the cell weight.

    Returns
    -------
    (H, W) float32
    """
    mask = as_label_image(mask)
    sep = separation(mask, distance) if sep is None else np.asarray(sep)
    w = np.where(mask > 0, cell, background).astype(np.float32)
    w[sep > 0] = gap
    return w
