"""Pure-numpy I/O: images, points CSV, label masks, ROI masks, QuPath GeoJSON, dataset folders."""

from cellmaps.io._atomic import atomic_path, write_text_atomic
from cellmaps.io.dataset import Dataset
from cellmaps.io.geojson import (
    Polygon,
    mask_to_polygons,
    polygons_to_mask,
    read_geojson,
    write_geojson,
)
from cellmaps.io.images import image_shape, normalize_image, read_image, to_uint8_rgb, write_image
from cellmaps.io.masks import check_label_image, mask_centroids, read_mask, read_roi, write_mask
from cellmaps.io.points import (
    UNCLASSIFIED_LABELS,
    Points,
    check_points_in_image,
    read_points,
    rowcol_to_xy,
    write_points,
    xy_to_rowcol,
)

__all__ = [
    "UNCLASSIFIED_LABELS",
    "Dataset",
    "Points",
    "Polygon",
    "atomic_path",
    "check_label_image",
    "check_points_in_image",
    "image_shape",
    "mask_centroids",
    "mask_to_polygons",
    "normalize_image",
    "polygons_to_mask",
    "read_geojson",
    "read_image",
    "read_mask",
    "read_points",
    "read_roi",
    "rowcol_to_xy",
    "to_uint8_rgb",
    "write_geojson",
    "write_image",
    "write_mask",
    "write_points",
    "write_text_atomic",
    "xy_to_rowcol",
]
