"""KiNet's weak ROI labels (seeds/kinet.md §III-A, Fig. 3)."""

from __future__ import annotations

import numpy as np

from cellmaps.targets._common import IGNORE_INDEX


def roi_labels(roi_mask: np.ndarray) -> np.ndarray:
    """Partially annotated ROI classes for a cross-entropy loss.

    The ROI mask stores 0 for unlabelled pixels and 1..K for the K region classes (e.g.
    1 = tumour, 2 = non-tumour). The result holds class indices 0..K−1 and
    ``IGNORE_INDEX`` (255) where nothing is annotated, so only annotated pixels train.

    Returns
    -------
    (H, W) uint8
    """
    roi = np.asarray(roi_mask)
    if roi.ndim != 2 or not np.issubdtype(roi.dtype, np.integer):
        raise ValueError(f"ROI mask must be a 2-D integer image, got {roi.dtype} {roi.shape}")
    if roi.size and (roi.min() < 0 or roi.max() > 254):
        raise ValueError("ROI classes must be integers in 0..254")
    out = np.full(roi.shape, IGNORE_INDEX, dtype=np.uint8)
    labelled = roi != 0
    out[labelled] = (roi[labelled] - 1).astype(np.uint8)
    return out
