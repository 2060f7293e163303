"""Matching and every metric of the five seed papers (pure numpy/scipy)."""

from cellmaps.metrics.counts import (
    concordance_correlation,
    ki67_index,
    mean_absolute_error,
    pooled_ki67_index,
)
from cellmaps.metrics.detection import (
    classification_counts,
    classification_scores,
    detection_counts,
    pool_detection,
    pr_auc,
    precision_recall_curve,
    prf,
    sum_class_counts,
)
from cellmaps.metrics.evaluate import evaluate, format_table, plot_evaluation
from cellmaps.metrics.matching import (
    PROTOCOLS,
    Matching,
    match_hungarian,
    match_iou,
    match_one_to_one,
    match_points,
)
from cellmaps.metrics.segmentation import (
    aji,
    cell_detection_score,
    dice,
    instance_errors,
    instance_scores,
    mean_average_precision,
    object_dice,
    pixel_accuracy,
    pixel_f1,
    segmentation_scores,
)

__all__ = [
    "PROTOCOLS",
    "Matching",
    "aji",
    "cell_detection_score",
    "classification_counts",
    "classification_scores",
    "concordance_correlation",
    "detection_counts",
    "dice",
    "evaluate",
    "format_table",
    "instance_errors",
    "instance_scores",
    "ki67_index",
    "match_hungarian",
    "match_iou",
    "match_one_to_one",
    "match_points",
    "mean_absolute_error",
    "mean_average_precision",
    "object_dice",
    "pixel_accuracy",
    "pixel_f1",
    "plot_evaluation",
    "pool_detection",
    "pooled_ki67_index",
    "pr_auc",
    "precision_recall_curve",
    "prf",
    "segmentation_scores",
    "sum_class_counts",
]
