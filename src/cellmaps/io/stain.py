"""Brightfield stain space: RGB ↔ haematoxylin / eosin / DAB concentrations (Ruifrok & Johnston
colour deconvolution with scikit-image's stain vectors), and stain shifts in that space.

scikit-image's ``rgb2hed`` clips negative concentrations to 0, so ``hed2rgb(rgb2hed(x))`` is
not ``x`` (errors up to 0.15 on H&E); augmentation and the stain-shift benchmark need an exact
round trip, so the optical-density arithmetic is written here with the same matrices.
"""

from __future__ import annotations

import numpy as np
from skimage.color import hed_from_rgb, lab2rgb, rgb2lab, rgb_from_hed

STAINS = ("haematoxylin", "eosin", "DAB")
_MIN_INTENSITY = 1.0 / 255.0  # darkest transmitted light: OD stays finite


def rgb_to_stains(rgb: np.ndarray) -> np.ndarray:
    """(…, 3) RGB in [0, 1] → (…, 3) stain concentrations (optical density units) per
    :data:`STAINS`; not clipped, so :func:`stains_to_rgb` inverts it exactly."""
    od = -np.log(np.clip(rgb, _MIN_INTENSITY, 1.0))
    return od @ hed_from_rgb


def stains_to_rgb(stains: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_stains`, clipped to [0, 1]."""
    return np.clip(np.exp(-(stains @ rgb_from_hed)), 0.0, 1.0)


def shift_stains(
    rgb: np.ndarray,
    scale: tuple[float, float, float] | np.ndarray = (1.0, 1.0, 1.0),
    shift: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Change each stain's amount: concentration c → scale · c + shift · p99(c) (shift in units
    of the image's own 99th percentile of that stain, so it means the same on faint and dark
    slides). Tellez et al. 2018's HED augmentation with a scale-free shift; a shift tints
    the background too, as a stained glass would. Float32 RGB in [0, 1] out."""
    rgb = np.asarray(rgb, np.float32)
    if rgb.shape[-1] != 3:
        raise ValueError(f"stain shifts need RGB images, got {rgb.shape[-1]} channels")
    c = rgb_to_stains(rgb.astype(np.float64))
    top = np.percentile(c.reshape(-1, 3), 99, axis=0)
    c = c * np.asarray(scale, np.float64) + np.asarray(shift, np.float64) * np.maximum(top, 1e-6)
    return stains_to_rgb(c).astype(np.float32)


# -- stain normalisation at prediction ------------------------------------------------------
STAIN_NORM_METHODS = ("macenko", "reinhard")
#: pixels with optical density under this in every channel are glass (Macenko's β)
_GLASS_OD = 0.15
#: fewer stained pixels than this share of the image: nothing to normalise (blank tiles)
_MIN_STAINED_SHARE = 0.01


#: stained pixels whose optical density varies less than this (std, all channels) are one
#: flat colour — a black or grey frame, not tissue
_MIN_OD_SPREAD = 0.02


def has_stain(rgb_uint8: np.ndarray) -> bool:
    """Whether an RGB image shows stained tissue to estimate a stain from: at least 1 % of
    pixels with optical density above Macenko's β in some channel, and those pixels not all
    one flat colour."""
    od = -np.log((rgb_uint8.reshape(-1, 3).astype(np.float64) + 1.0) / 256.0)
    stained = od[np.any(od >= _GLASS_OD, axis=1)]
    if len(stained) < _MIN_STAINED_SHARE * len(od) or len(stained) < 2:
        return False
    return bool(np.max(stained.std(axis=0)) >= _MIN_OD_SPREAD)


def reinhard_stats(rgb_uint8: np.ndarray) -> np.ndarray:
    """(2, 3) mean and std of the L*a*b* channels of an RGB image (Reinhard et al. 2001)."""
    lab = rgb2lab(rgb_uint8[..., :3]).reshape(-1, 3)
    return np.stack([lab.mean(0), lab.std(0)])


def normalise_stain(
    rgb_uint8: np.ndarray, method: str, reference: np.ndarray | None = None
) -> np.ndarray:
    """An H&E (or other brightfield) RGB image brought to a reference stain appearance.

    ``macenko`` (Macenko et al., ISBI 2009; torchstain's numpy implementation): the image's
    two stain vectors are found from the angles of its optical densities and its stain
    concentrations are re-mixed with the reference's vectors and 99th-percentile
    concentrations; ``reference`` is an RGB image to fit them on, or None for Macenko's own
    H&E reference. ``reinhard`` (Reinhard et al. 2001): each L*a*b* channel standardised to
    the reference image's mean and std (``reference`` required: an RGB image, or the (2, 3)
    stats of :func:`reinhard_stats`).

    Images without stained tissue (:func:`has_stain`: blank glass, black or flat frames,
    background tiles) are returned unchanged: there is no stain to estimate. uint8 RGB in
    and out."""
    if method not in STAIN_NORM_METHODS:
        raise ValueError(f"unknown stain normalisation {method!r}; known: {STAIN_NORM_METHODS}")
    rgb = np.asarray(rgb_uint8)
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise ValueError(f"stain normalisation needs an RGB image, got shape {rgb.shape}")
    rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
    if not has_stain(rgb):
        return rgb
    if method == "reinhard":
        return _reinhard(rgb, reference)
    # imported here: torchstain is needed only for --stain-norm macenko
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    norm = NumpyMacenkoNormalizer()
    if reference is not None:
        norm.fit(np.asarray(reference)[..., :3].astype(np.uint8))
    out, _, _ = norm.normalize(rgb, stains=False)
    return out


def _reinhard(rgb: np.ndarray, reference: np.ndarray | None) -> np.ndarray:

    if reference is None:
        raise ValueError("Reinhard normalisation needs a reference image (--stain-reference)")
    ref = np.asarray(reference)
    target = ref if ref.shape == (2, 3) else reinhard_stats(ref.astype(np.uint8))
    lab = rgb2lab(rgb)
    own = np.stack([lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)])
    lab = (lab - own[0]) / np.maximum(own[1], 1e-6) * target[1] + target[0]
    return np.clip(np.round(lab2rgb(lab) * 255.0), 0, 255).astype(np.uint8)
