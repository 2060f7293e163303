"""Augmentation applied identically to an image crop and every target map (numpy/scipy)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def geometric_margin(crop: int, aug: dict) -> int:
    """Extra context (px, each side) a crop needs so rotations/scales/shifts/elastic
    deformations sample real pixels instead of padding."""
    if not (aug["rotate"] or aug["scale"] or aug["shift"] or aug["elastic"]):
        return 0
    return int(np.ceil(crop * (0.21 + aug["scale"] / 2) + aug["shift"] + 3 * aug["elastic"]))


def sample_coords(rng: np.random.Generator, crop: int, margin: int, aug: dict) -> np.ndarray | None:
    """Source coordinates (2, crop, crop) in a window of crop + 2·margin for a random
    rotation (± ``rotate`` degrees), scale (1 ± ``scale``), shift (± ``shift`` px) and
    elastic deformation (Simard et al.: Gaussian-smoothed random displacements of
    amplitude ``elastic`` px, σ = crop/10). None when no geometric augmentation is on."""
    if margin == 0:
        return None
    yy, xx = np.mgrid[:crop, :crop].astype(np.float32)
    c = (crop - 1) / 2
    y, x = yy - c, xx - c
    theta = np.deg2rad(rng.uniform(-aug["rotate"], aug["rotate"])) if aug["rotate"] else 0.0
    s = 1.0 + (rng.uniform(-aug["scale"], aug["scale"]) if aug["scale"] else 0.0)
    cos, sin = np.cos(theta) / s, np.sin(theta) / s
    sy = cos * y - sin * x
    sx = sin * y + cos * x
    if aug["shift"]:
        sy += rng.uniform(-aug["shift"], aug["shift"])
        sx += rng.uniform(-aug["shift"], aug["shift"])
    if aug["elastic"]:
        for arr in (sy, sx):
            field = ndimage.gaussian_filter(
                rng.uniform(-1, 1, (crop, crop)), crop / 10, mode="reflect"
            )
            arr += aug["elastic"] * field / max(np.abs(field).max(), 1e-8)
    return np.stack([sy + c + margin, sx + c + margin]).astype(np.float32)


def warp(arr: np.ndarray, coords: np.ndarray | None, order: int) -> np.ndarray:
    """Resample a (C, h, w) window at ``coords`` (order 1 for images and regression maps,
    0 for label maps)."""
    if coords is None:
        return arr
    return np.stack([ndimage.map_coordinates(a, coords, order=order, mode="reflect") for a in arr])


def flip_rot(arrs: list[np.ndarray], rng: np.random.Generator, aug: dict) -> list[np.ndarray]:
    """Random horizontal/vertical flips and 90° rotations, the same for every array (C, h, w)."""
    k = int(rng.integers(4)) if aug["rot90"] else 0
    fh = aug["flip"] and rng.random() < 0.5
    fv = aug["flip"] and rng.random() < 0.5
    out = []
    for a in arrs:
        if k:
            a = np.rot90(a, k, axes=(1, 2))
        if fh:
            a = a[:, :, ::-1]
        if fv:
            a = a[:, ::-1, :]
        out.append(np.ascontiguousarray(a))
    return out


def color_jitter(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-channel gain and offset jitter (± ``amount`` of the normalised scale): a simple
    stain/brightness variation applied to the normalised image."""
    if not amount:
        return img
    c = img.shape[0]
    gain = 1.0 + rng.uniform(-amount, amount, (c, 1, 1)) * 4
    offset = rng.uniform(-amount, amount, (c, 1, 1)) * 4
    return (img * gain + offset).astype(np.float32)
