"""Helpers shared by the target encoders (pure numpy/scipy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.measure import regionprops

from cellmaps.io.points import check_points_in_image

#: Value marking "no label here" in integer label maps; losses skip these pixels.
IGNORE_INDEX = 255


def as_points(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, 2) float64 (row, col) points; raises if any is not finite or lies outside ``shape``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all():
        raise ValueError("point coordinates must be finite")
    check_points_in_image(pts, shape)
    return pts


def as_label_image(mask: np.ndarray) -> np.ndarray:
    """A 2-D non-negative integer label image (0 = background)."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise ValueError(f"expected a 2-D integer label image, got {mask.dtype} {mask.shape}")
    return mask.astype(np.int64, copy=False)


def pixel_grid(shape: tuple[int, int]) -> np.ndarray:
    """(H*W, 2) float64 (row, col) coordinates of every pixel centre, row-major."""
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.float64)


def nearest_two_points(
    points: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel: index of the nearest point, distance to it (d1) and to the
    second-nearest point (d2, inf when there is only one point). k-d tree, exact."""
    h, w = shape[:2]
    if len(points) == 0:
        inf = np.full((h, w), np.inf)
        return np.full((h, w), -1, dtype=np.intp), inf, inf.copy()
    k = 2 if len(points) > 1 else 1
    d, idx = cKDTree(points).query(pixel_grid(shape), k=k, workers=-1)
    if k == 1:
        d = np.stack([d, np.full_like(d, np.inf)], axis=1)
        idx = idx[:, None]
    return idx[:, 0].reshape(h, w), d[:, 0].reshape(h, w), d[:, 1].reshape(h, w)


def distance_to_nearest_point(
    points: np.ndarray, shape: tuple[int, int], radius: float
) -> np.ndarray:
    """Exact Euclidean distance from every pixel to the nearest point, inf beyond ``radius``.

    Each point updates only its (2·radius+1)² window, which is faster than a k-d tree query
    of every pixel when the radius is small (proximity maps, d = 15).
    """
    h, w = shape[:2]
    out = np.full((h, w), np.inf)
    r = int(np.ceil(radius))
    for pr, pc in points:
        r0, r1 = max(int(np.floor(pr)) - r, 0), min(int(np.ceil(pr)) + r + 1, h)
        c0, c1 = max(int(np.floor(pc)) - r, 0), min(int(np.ceil(pc)) + r + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue
        dr = (np.arange(r0, r1) - pr)[:, None]
        dc = (np.arange(c0, c1) - pc)[None, :]
        np.minimum(out[r0:r1, c0:c1], np.sqrt(dr * dr + dc * dc), out=out[r0:r1, c0:c1])
    out[out > radius] = np.inf
    return out


def own_cell_distance(mask: np.ndarray) -> np.ndarray:
    """For every cell pixel, the Euclidean distance to the nearest pixel *not* in its own
    cell (background, another cell or outside the image); 0 on background.

    Computed per cell on its bounding box so that touching cells do not interact.
    """
    out = np.zeros(mask.shape, dtype=np.float64)
    for region in regionprops(mask):
        r0, c0, r1, c1 = region.bbox
        sub = np.pad(region.image, 1)
        d = ndimage.distance_transform_edt(sub)[1:-1, 1:-1]
        view = out[r0:r1, c0:c1]
        view[region.image] = d[region.image]
    return out
