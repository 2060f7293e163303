"""Post-processing (numpy): peak finding, h-maxima, per-class decoding."""

from cellmaps.postprocess.hmaxima import h_maxima_mask, h_maxima_peaks
from cellmaps.postprocess.peaks import (
    channel_peaks,
    find_peaks,
    find_peaks_per_class,
    h_maxima_peaks_reference,
    merge_class_peaks,
)

__all__ = [
    "channel_peaks",
    "find_peaks",
    "find_peaks_per_class",
    "h_maxima_mask",
    "h_maxima_peaks",
    "h_maxima_peaks_reference",
    "merge_class_peaks",
]
