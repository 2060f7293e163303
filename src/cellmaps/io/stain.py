"""Brightfield stain space: RGB ↔ haematoxylin / eosin / DAB concentrations (Ruifrok & Johnston
colour deconvolution with scikit-image's stain vectors), and stain shifts in that space.

scikit-image's ``rgb2hed`` clips negative concentrations to 0, so ``hed2rgb(rgb2hed(x))`` is
not ``x`` (errors up to 0.15 on H&E); augmentation and the stain-shift benchmark need an exact
round trip, so the optical-density arithmetic is written here with the same matrices.
"""

from __future__ import annotations

import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

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
