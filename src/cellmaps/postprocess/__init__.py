"""Post-processing (numpy): peak finding, h-maxima, per-class decoding."""

from cellmaps.postprocess.peaks import find_peaks, find_peaks_per_class, h_maxima_peaks_reference

__all__ = ["find_peaks", "find_peaks_per_class", "h_maxima_peaks_reference"]
