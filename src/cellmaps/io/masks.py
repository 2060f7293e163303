"""Instance label masks (uint16 TIFF/PNG, 0 = background) and ROI masks."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from skimage.measure import label

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path
from cellmaps.io.images import read_image


def check_label_image(
    mask: np.ndarray, shape: tuple[int, int] | None = None, path: str | os.PathLike | None = None
) -> np.ndarray:
    """Validate an instance label image and return it as a non-negative integer array.

    Raises
    ------
    CellmapsInputError
        If the mask is not 2-D, holds non-integer or negative values, or its shape
        differs from ``shape``.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise CellmapsInputError(f"label mask must be 2-D, got shape {mask.shape}", path)
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or not np.array_equal(mask, np.round(mask)):
            raise CellmapsInputError(
                f"label mask must hold integer labels, got non-integer {mask.dtype} values", path
            )
        mask = mask.astype(np.int64)
    elif not np.issubdtype(mask.dtype, np.integer):
        raise CellmapsInputError(f"label mask has unsupported dtype {mask.dtype}", path)
    if mask.size and mask.min() < 0:
        raise CellmapsInputError("label mask holds negative labels", path)
    if shape is not None and tuple(mask.shape) != tuple(shape[:2]):
        raise CellmapsInputError(
            f"mask shape {mask.shape[0]}x{mask.shape[1]} does not match image shape "
            f"{shape[0]}x{shape[1]}",
            path,
        )
    return mask


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an instance label image (TIFF or PNG); 0 is background, each object one id.
    A binary mask (one foreground value, e.g. 0/255 or a boolean) is split into its
    connected components, with a warning (see :func:`instances_from_binary`)."""
    return instances_from_binary(check_label_image(read_image(path), shape, path), path)


def instances_from_binary(mask: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """An instance mask from a binary one: when ``mask`` holds a single foreground value
    in more than one connected region, each 8-connected region becomes an instance (a
    semantic 0/255 mask read as labels would be one object). Warns, because touching
    objects stay merged; true instance masks are returned as they are."""
    values = np.unique(mask)
    if values.size != 2 or values[0] != 0:
        return mask
    labelled = label(mask > 0, connectivity=2)
    if labelled.max() <= 1:
        return mask
    warnings.warn(
        f"{path}: binary mask (one foreground value, {values[1]}) read as {labelled.max()} "
        "instances by connected components; touching objects stay merged, so give an "
        "instance label image (one id per object) where you can",
        stacklevel=2,
    )
    return labelled.astype(np.int32)


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write an instance label image as a zlib-compressed uint16 (or uint32) TIFF, atomically."""
    mask = check_label_image(mask)
    dtype = np.uint16 if mask.size == 0 or mask.max() <= np.iinfo(np.uint16).max else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, mask.astype(dtype), compression="zlib")


def read_roi(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an ROI class mask (PNG/TIFF of small integers; meaning given by the dataset)."""
    return check_label_image(read_image(Path(path)), shape, path)


def mask_centroids(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (row, col) of every instance and the instance ids, sorted by id."""
    mask = np.asarray(mask)
    ids = np.unique(mask)
    ids = ids[ids != 0]
    if ids.size == 0:
        return np.zeros((0, 2)), ids
    com = ndimage.center_of_mass(np.ones(mask.shape), mask, ids)
    return np.asarray(com, dtype=np.float64).reshape(-1, 2), ids
