"""Post-processing (numpy): peak finding, h-maxima, per-class decoding."""

from cellmaps.postprocess.components import argmax_instances, component_centroids
from cellmaps.postprocess.hmaxima import h_maxima_mask, h_maxima_peaks
from cellmaps.postprocess.peaks import (
    channel_peaks,
    find_peaks,
    find_peaks_per_class,
    h_maxima_peaks_reference,
    merge_class_peaks,
)
from cellmaps.postprocess.region_growing import (
    grow_markers,
    majority_filter,
    markers_from_detections,
    region_growing_segmentation,
)

__all__ = [
    "argmax_instances",
    "channel_peaks",
    "component_centroids",
    "grow_markers",
    "majority_filter",
    "markers_from_detections",
    "region_growing_segmentation",
    "find_peaks",
    "find_peaks_per_class",
    "h_maxima_mask",
    "h_maxima_peaks",
    "h_maxima_peaks_reference",
    "merge_class_peaks",
]
