"""Object scale and input preparation (pure numpy): how big the objects are, resampling an
image and its annotations to a canonical object size, mapping coordinates back, and the one
input normalisation shared by training, validation and prediction.

Conventions
-----------
A scale factor ``s`` maps input pixels to net pixels: an image of shape (H, W) becomes
(round(H·s), round(W·s)). Pixel centres follow scikit-image's ``resize``: net coordinate
``q`` is input coordinate ``(q + 0.5)·H/H' − 0.5`` (per axis, with the actual size ratio),
so a point maps there and back exactly.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from skimage.exposure import equalize_hist
from skimage.transform import downscale_local_mean, resize

from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import normalize_image


# -- how big are the objects ------------------------------------------------------------------
def mask_object_radii(mask: np.ndarray) -> np.ndarray:
    """Equivalent-disc radius sqrt(area / π) of every instance of a label image (px)."""
    counts = np.bincount(np.asarray(mask).ravel().astype(np.int64))[1:]
    return np.sqrt(counts[counts > 0] / np.pi)


def nearest_neighbour_distances(points: np.ndarray) -> np.ndarray:
    """Distance from every point to its nearest other point (empty with < 2 points)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return np.zeros(0)
    d, _ = cKDTree(pts).query(pts, k=2)
    return d[:, 1]


POINT_SPACING_PERCENTILE = 25.0


def median_object_radius(
    masks: list[np.ndarray] | None = None, points: list[np.ndarray] | None = None
) -> tuple[float, str]:
    """Median object radius (px) and how it was measured.

    From instance masks when any are given: the median equivalent-disc radius over all
    objects. Otherwise from points: half the lower quartile of the nearest-neighbour
    spacing (touching objects are 2r apart; the lower quartile keeps sparse regions out).
    ``benchmarks/object_size_check.py`` compares it with the mask radius on the shared
    datasets with masks (closer than half the median spacing). Give ``--object-size``
    where cells never touch.
    """
    masks = [m for m in (masks or []) if m is not None]
    if masks:
        radii = np.concatenate([mask_object_radii(m) for m in masks])
        if len(radii):
            return float(np.median(radii)), "mask"
    points = [p for p in (points or []) if p is not None]
    if points:
        nn = np.concatenate([nearest_neighbour_distances(p) for p in points])
        if len(nn):
            return float(np.percentile(nn, POINT_SPACING_PERCENTILE) / 2.0), "points"
    raise CellmapsInputError(
        "cannot measure the object size: no instance masks and no image with two or more "
        "points (give the object radius in px with --object-size)"
    )


def scale_factor(net_object_size: float, input_object_size: float) -> float:
    """Factor that brings objects of ``input_object_size`` px to ``net_object_size`` px."""
    for name, v in (("model object size", net_object_size), ("object size", input_object_size)):
        if not (np.isfinite(v) and v > 0):
            raise CellmapsInputError(f"{name} must be a positive number of pixels, got {v}")
    return float(net_object_size) / float(input_object_size)


# -- resampling ---------------------------------------------------------------------------------
def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """(H, W) after scaling by ``factor`` (at least 1 px a side)."""
    return tuple(max(1, int(round(n * factor))) for n in shape[:2])


def rescale_image(image: np.ndarray, factor: float) -> np.ndarray:
    """A float (H, W[, C]) image resampled by ``factor``.

    Integer reductions (1/2, 1/3, ...) average k×k blocks (exact area averaging; a nearest
    2× enlargement followed by ×1/2 gives the original back); other factors use
    scikit-image's ``resize`` (bilinear, with anti-aliasing when shrinking).
    """
    if factor == 1.0:
        return image
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape[:2]
    k = 1.0 / factor
    if factor < 1 and abs(k - round(k)) < 1e-9 and h % round(k) == 0 and w % round(k) == 0:
        k = int(round(k))
        block = (k, k) + (1,) * (img.ndim - 2)
        return downscale_local_mean(img, block).astype(np.float32)
    out = resize(
        img,
        scaled_shape((h, w), factor) + img.shape[2:],
        order=1,
        mode="reflect",
        anti_aliasing=factor < 1,
        preserve_range=True,
    )
    return out.astype(np.float32)


def rescale_labels(labels: np.ndarray | None, factor: float) -> np.ndarray | None:
    """A label image (instances, ROI classes) resampled by nearest neighbour."""
    if labels is None or factor == 1.0:
        return labels

    out = resize(
        labels,
        scaled_shape(labels.shape, factor),
        order=0,
        mode="edge",
        anti_aliasing=False,
        preserve_range=True,
    )
    return out.astype(labels.dtype)


def to_scaled_coords(
    coords: np.ndarray, shape: tuple[int, int], new_shape: tuple[int, int]
) -> np.ndarray:
    """(row, col) points of an image of ``shape`` in the pixels of its resampled copy."""
    ratio = np.array(new_shape[:2], float) / np.array(shape[:2], float)
    return (np.asarray(coords, float).reshape(-1, 2) + 0.5) * ratio - 0.5


def from_scaled_coords(
    coords: np.ndarray, shape: tuple[int, int], new_shape: tuple[int, int]
) -> np.ndarray:
    """Inverse of :func:`to_scaled_coords`: points of the resampled copy (``new_shape``) in
    the pixels of the original image (``shape``)."""
    return to_scaled_coords(coords, new_shape, shape)


# -- the one input normalisation ------------------------------------------------------------------
def equalize(image: np.ndarray) -> np.ndarray:
    """Per-channel histogram equalisation of a float (H, W, C) image (DeepSplit §3.2)."""
    return np.stack([equalize_hist(image[..., c]) for c in range(image.shape[-1])], -1).astype(
        np.float32
    )


# csbdeep / StarDist's default normalisation range (percentiles of each image's own pixels)
PERCENTILE_RANGE = (1.0, 99.8)
INTENSITY_MODES = ("range", "percentile")


def percentile_stretch(
    image: np.ndarray, lo: float = PERCENTILE_RANGE[0], hi: float = PERCENTILE_RANGE[1]
) -> np.ndarray:
    """Per-channel (x − p_lo) / (p_hi − p_lo) of a float (H, W, C) image, with p_lo, p_hi the
    image's own ``lo``-th and ``hi``-th percentiles: every image's intensity range brought
    to about [0, 1], so dim and bright acquisitions of the same kind of cells look alike
    (fluorescence brightness varies tenfold between experiments; DSB 2018's 99.8th
    percentiles span 26–255 of 255). Values are not clipped. A flat channel
    (p_hi = p_lo) becomes 0 everywhere.

    >>> img = np.linspace(0.2, 0.4, 1000, dtype=np.float32).reshape(10, 100, 1)
    >>> out = percentile_stretch(img, 0, 100)
    >>> float(out.min()), float(out.max())
    (0.0, 1.0)
    """
    img = np.asarray(image, np.float32)
    p_lo, p_hi = np.percentile(img, [lo, hi], axis=(0, 1))
    span = (p_hi - p_lo).astype(np.float32)
    # a flat channel: x − p_lo is 0 there, divided by 1 instead of 0
    out = (img - p_lo.astype(np.float32)) / np.where(span <= 1e-6, 1.0, span)
    return out.astype(np.float32)


def match_channels(image: np.ndarray, channels: int, source=None) -> np.ndarray:
    """(H, W, C) image with ``channels`` channels: grey repeated, colour averaged to grey."""
    c = image.shape[-1]
    if c == channels:
        return image
    if c == 1:
        return np.repeat(image, channels, axis=-1)
    if channels == 1:
        return image.mean(-1, keepdims=True)
    example = ",".join(str(i % c) for i in range(channels))  # only channels the image has
    raise CellmapsInputError(
        f"image has {c} channels (numbered 0 to {c - 1}), the model expects {channels}; choose "
        f"them with --channels (for example --channels {example}, or --channels 0 for one "
        "channel repeated as grey)",
        source,
    )


def adjust_intensity(image: np.ndarray, intensity: str, hist_eq: bool = False) -> np.ndarray:
    """A normalised (H, W, C) image under the recipe's ``training.intensity`` ("range" as it
    is, "percentile" by :func:`percentile_stretch`), then histogram-equalised when
    ``hist_eq``: the whole-image steps of :func:`base_image`."""
    if intensity == "percentile":
        image = percentile_stretch(image)
    elif intensity != "range":
        raise ValueError(f"intensity must be one of {INTENSITY_MODES}, got {intensity!r}")
    return equalize(image) if hist_eq else image


def base_image(
    image: np.ndarray,
    hist_eq: bool = False,
    factor: float = 1.0,
    channels: int | None = None,
    source=None,
    intensity: str = "range",
) -> np.ndarray:
    """Image as stored → (C, H, W) float32 before standardisation: :func:`normalize_image`,
    resampling by ``factor``, channel matching, :func:`percentile_stretch` (``intensity``
    "percentile"; "range" keeps the dtype's range) and histogram equalisation (when the
    recipe asks). Training stores this (augmentation works on it); prediction standardises
    it straight away."""
    img = rescale_image(normalize_image(image, source), factor)
    if channels is not None:
        img = match_channels(img, channels, source)
    img = adjust_intensity(img, intensity, hist_eq)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def standardize(image_chw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-channel (x − mean) / std of a (C, H, W) or (B, C, H, W) image, float32."""
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    return ((image_chw - m) / s).astype(np.float32)
