"""Target maps the five systems learn from, computed from points, masks or ROIs (numpy only).

Regression maps are float32 (H, W) (per-class maps (C, H, W)); class-label maps are uint8
with ``IGNORE_INDEX`` (255) where a pixel carries no label.
"""

from cellmaps.targets._common import IGNORE_INDEX
from cellmaps.targets.build import TARGETS, Annotations, available_targets, make_targets
from cellmaps.targets.distance import (
    boundary,
    centroid_pixels,
    foreground,
    inner_distance,
    outer_distance,
)
from cellmaps.targets.proximity import (
    known_class_weights,
    proximity,
    proximity_per_class,
    repel_code,
)
from cellmaps.targets.roi import roi_labels
from cellmaps.targets.separation import (
    class_balance_weights,
    separation,
    separation_weights,
    unet_weight_map,
)
from cellmaps.targets.weak import cluster_labels, filtered_repel, voronoi_edges, voronoi_labels

__all__ = [
    "IGNORE_INDEX",
    "TARGETS",
    "Annotations",
    "available_targets",
    "boundary",
    "centroid_pixels",
    "class_balance_weights",
    "cluster_labels",
    "filtered_repel",
    "foreground",
    "inner_distance",
    "known_class_weights",
    "make_targets",
    "outer_distance",
    "proximity",
    "proximity_per_class",
    "repel_code",
    "roi_labels",
    "separation",
    "separation_weights",
    "unet_weight_map",
    "voronoi_edges",
    "voronoi_labels",
]
