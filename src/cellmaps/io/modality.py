"""Which kind of microscopy an image looks like, from its pixels (numpy): brightfield (H&E,
IHC: a bright background), fluorescence (a dark background) or phase contrast (grey, a
mid-grey background). Used to warn when an image is far from what a model was trained on.

Written here rather than taken from a library: two image statistics decide it. Measured on
the shared datasets (every image of each, thumbnails of ≤ 256 px a side): the median
intensity (0–1, mean over channels) of fluorescence images (DSB 2018) is 0.00–0.10, of
phase-contrast images (Usiigaci) 0.48–0.50, of H&E / IHC images 0.38–0.95 (MoNuSeg 0.38 at
the lowest, densely packed 40× tissue); phase contrast is grey (one channel, or equal RGB
channels), brightfield stains are coloured (median saturation 0.01–0.60) or, when grey,
bright (median above 0.6).
"""

from __future__ import annotations

import numpy as np

from cellmaps.io.images import normalize_image

BRIGHTFIELD, FLUORESCENCE, PHASE = "brightfield", "fluorescence", "phase contrast"
MODALITIES = (BRIGHTFIELD, FLUORESCENCE, PHASE)
DARK_BACKGROUND = 0.2  # median intensity below this: fluorescence (dark field)
GREY_SATURATION = 0.01  # median saturation below this: a grey image
BRIGHT_BACKGROUND = 0.6  # grey and a median above this: grey brightfield, not phase contrast
THUMBNAIL = 256


def image_modality(image: np.ndarray) -> str:
    """``brightfield``, ``fluorescence`` or ``phase contrast`` for an image as stored
    ((H, W) or (H, W, C), any dtype): a dark median → fluorescence; else a grey image with a
    mid-grey median → phase contrast; else brightfield (see the module docstring for the
    measured ranges)."""
    img = np.asarray(image)
    step = max(1, -(-max(img.shape[:2]) // THUMBNAIL))
    thumb = normalize_image(img[::step, ::step]).astype(np.float32)
    if thumb.ndim == 2:
        thumb = thumb[..., None]
    median = float(np.median(thumb.mean(-1)))
    if median < DARK_BACKGROUND:
        return FLUORESCENCE
    if thumb.shape[-1] >= 3:
        rgb = thumb[..., :3]
        top, low = rgb.max(-1), rgb.min(-1)
        saturation = float(np.median(np.where(top > 0, (top - low) / np.maximum(top, 1e-6), 0)))
    else:
        saturation = 0.0
    if saturation < GREY_SATURATION and median <= BRIGHT_BACKGROUND:
        return PHASE
    return BRIGHTFIELD


def modality_warning(seen: str, trained: str, image_name: str, suggestion: str | None) -> str:
    """One line for an image of modality ``seen`` given to a model trained on ``trained``."""
    advice = f"; use {suggestion}" if suggestion else ""
    return (
        f"{image_name} looks like a {seen} image, but the model was trained on {trained} "
        f"images, so its detections there cannot be trusted{advice}"
    )
