"""Augmentation applied identically to an image crop and every target map (numpy/scipy)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from cellmaps.io.stain import shift_stains


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


def stain_jitter(
    img: np.ndarray, rng: np.random.Generator, amount: float, offset: float = 0.25
) -> np.ndarray:
    """Random haematoxylin / eosin / DAB amounts for an RGB crop (C=3, values in [0, 1]):
    each stain scaled by U(1 − a, 1 + a) and shifted by U(−a, a)·``offset`` of its 99th
    percentile (:func:`cellmaps.io.stain.shift_stains`). Other channel counts pass
    unchanged."""
    if not amount or img.shape[0] != 3:
        return img

    scale = rng.uniform(1 - amount, 1 + amount, 3)
    shift = rng.uniform(-amount, amount, 3) * offset
    return shift_stains(img.transpose(1, 2, 0), scale, shift).transpose(2, 0, 1)


def acquisition_jitter(img: np.ndarray, rng: np.random.Generator, aug: dict) -> np.ndarray:
    """Scanner and camera variation on a (C, h, w) crop in [0, 1], each with probability ½:
    gamma exp(U(−g, g)); Gaussian blur of σ ~ U(0, blur) px; JPEG compression at quality
    U(30, 90) (RGB or grey crops; with probability ``jpeg``); Gaussian noise of σ ~ U(0, noise)."""
    out = img
    if aug.get("gamma") and rng.random() < 0.5:
        out = np.clip(out, 0, None) ** np.exp(rng.uniform(-aug["gamma"], aug["gamma"]))
    if aug.get("blur") and rng.random() < 0.5:
        sigma = rng.uniform(0, aug["blur"])
        out = np.stack([ndimage.gaussian_filter(ch, sigma) for ch in out])
    if aug.get("jpeg") and rng.random() < aug["jpeg"] and out.shape[0] in (1, 3):
        out = jpeg_round_trip(out, int(rng.integers(30, 91)))
    if aug.get("noise") and rng.random() < 0.5:
        out = out + rng.normal(0, rng.uniform(0, aug["noise"]), out.shape)
    return np.asarray(out, np.float32)


def jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    """The (C, h, w) crop in [0, 1] after saving as JPEG at ``quality`` (8-bit, Pillow)."""
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(u8[0] if u8.shape[0] == 1 else u8.transpose(1, 2, 0))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255
    return back[None] if back.ndim == 2 else back.transpose(2, 0, 1)


EMPTY_KINDS = ("flat", "uniform noise", "gaussian noise")


def empty_image(rng: np.random.Generator, channels: int, crop: int) -> np.ndarray:
    """A (C, crop, crop) image in [0, 1] with no object in it, for training negatives: a
    flat level (black, white, grey or a tint), uniform noise, or Gaussian noise about a
    level — what background tiles, empty wells and broken frames look like to a model."""
    kind = EMPTY_KINDS[int(rng.integers(len(EMPTY_KINDS)))]
    level = rng.uniform(0, 1, (channels, 1, 1))
    if kind == "flat":
        img = np.broadcast_to(level, (channels, crop, crop))
    elif kind == "uniform noise":
        img = rng.uniform(0, 1, (channels, crop, crop))
    else:
        img = level + rng.normal(0, rng.uniform(0.02, 0.3), (channels, crop, crop))
    return np.clip(img, 0, 1).astype(np.float32)
