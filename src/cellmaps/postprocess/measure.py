"""Per-object measurements (pure numpy / scikit-image): one row per detected object with its
position, class, score and the shape and intensity of its outline — what QuPath,
CellProfiler and HoVer-Net users expect beside the points.

Shape and intensity come from :func:`skimage.measure.regionprops_table`. Models that give
points only are measured on a disc of the object radius around each point (grown without
overlap by :func:`skimage.segmentation.expand_labels`), and every row says so in
``measured_on``. Brightfield RGB images add the haematoxylin and DAB optical density of the
Ruifrok–Johnston colour deconvolution (:func:`skimage.color.rgb2hed`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from skimage.color import rgb2hed
from skimage.measure import regionprops_table
from skimage.segmentation import expand_labels

from cellmaps.errors import CellmapsInputError
from cellmaps.io.points import Points

#: regionprops_table property → column (px units; area_um2 added with a pixel size)
SHAPE_COLUMNS = {
    "area": "area_px",
    "perimeter": "perimeter_px",
    "equivalent_diameter_area": "equivalent_diameter_px",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
}
STAIN_COLUMNS = ("hematoxylin_od_mean", "hematoxylin_od_max", "dab_od_mean", "dab_od_max")


def disc_labels(coords: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Instance image of a disc of ``radius`` px around each (row, col) point, object k + 1
    for point k; where discs would overlap each pixel goes to the nearest point."""
    seeds = np.zeros(shape, np.int32)
    rc = np.clip(np.rint(np.asarray(coords).reshape(-1, 2)).astype(np.int64), 0,
                 np.array(shape) - 1)  # fmt: skip
    # a later point on an already seeded pixel keeps the first one's disc (counted in rows)
    order = np.arange(len(rc))[::-1]
    seeds[rc[order, 0], rc[order, 1]] = order + 1
    return expand_labels(seeds, distance=float(radius))


def channel_names(image: np.ndarray) -> list[str]:
    """Column suffixes of the image's channels: red/green/blue for RGB, else ch0, ch1…"""
    if image.ndim == 2:
        return [""]
    if image.shape[2] in (3, 4):
        return ["red", "green", "blue", "alpha"][: image.shape[2]]
    return [f"ch{k}" for k in range(image.shape[2])]


def stain_density(image: np.ndarray) -> np.ndarray | None:
    """(H, W, 2) haematoxylin and DAB optical density of an RGB brightfield image (None for
    anything else)."""
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        return None
    return rgb2hed(image[..., :3])[..., [0, 2]]


def object_table(
    points: Points,
    image: np.ndarray,
    labels: np.ndarray | None = None,
    disc_radius: float | None = None,
    pixel_size: float | None = None,
    brightfield: bool = True,
) -> dict[str, np.ndarray]:
    """Columns of a per-object table, one row per point.

    Parameters
    ----------
    points : the detections (row, col), with labels and scores.
    image : (H, W) or (H, W, C) image the points were found in (intensities as stored).
    labels : (H, W) instance image of the objects' outlines; each point is measured on the
        instance under it (NaN measurements for a point on background).
    disc_radius : without ``labels``: measure a disc of this radius (px) around each point.
    pixel_size : µm per pixel: adds ``area_um2`` and ``equivalent_diameter_um``.
    brightfield : add haematoxylin / DAB optical density (RGB images only).

    Returns
    -------
    dict of equal-length arrays: x, y (px, x = column), class, score, object (the instance
    id, 0 for none), the shape columns of :data:`SHAPE_COLUMNS`, ``mean_<channel>``, the
    optical densities, and ``measured_on`` ("outline" or "disc r=… px").
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise CellmapsInputError(f"image must be (H, W) or (H, W, C), got shape {img.shape}")
    shape = img.shape[:2]
    if labels is None:
        if disc_radius is None or not disc_radius > 0:
            raise CellmapsInputError("measuring points needs outlines or a positive disc radius")
        labels = disc_labels(points.coords, shape, disc_radius)
        measured_on = f"disc r={disc_radius:.1f} px"
    else:
        measured_on = "outline"
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise CellmapsInputError(f"outlines are {labels.shape}, the image {shape}")
    rc = np.clip(np.rint(points.coords).astype(np.int64), 0, np.array(shape) - 1)
    obj = labels[rc[:, 0], rc[:, 1]].astype(np.int64)
    n = len(points)
    cols: dict[str, np.ndarray] = {
        "x": points.coords[:, 1].copy(),
        "y": points.coords[:, 0].copy(),
        "class": np.asarray(points.labels, dtype=object),
        "score": points.scores.copy() if points.scores is not None else np.full(n, np.nan),
        "object": obj,
    }
    intensity = img.astype(np.float64)
    names = channel_names(img)
    density = stain_density(img) if brightfield else None
    if density is not None:
        intensity = np.dstack([intensity, density])
    props = regionprops_table(labels.astype(np.int64), intensity_image=intensity,
                              properties=("label", *SHAPE_COLUMNS, "intensity_mean",
                                          "intensity_max"))  # fmt: skip
    row_of = {int(lab): k for k, lab in enumerate(props["label"])}
    take = np.array([row_of.get(int(o), -1) for o in obj], dtype=np.int64)

    def per_point(values: np.ndarray) -> np.ndarray:
        out = np.full(n, np.nan)
        ok = take >= 0
        out[ok] = np.asarray(values, dtype=np.float64)[take[ok]]
        return out

    for prop, col in SHAPE_COLUMNS.items():
        cols[col] = per_point(props[prop])
    if pixel_size is not None:
        cols["area_um2"] = cols["area_px"] * pixel_size**2
        cols["equivalent_diameter_um"] = cols["equivalent_diameter_px"] * pixel_size
    mean = "intensity_mean" if intensity.ndim == 2 else "intensity_mean-{}"
    for k, name in enumerate(names):
        cols["mean_intensity" if name == "" else f"mean_{name}"] = per_point(props[mean.format(k)])
    if density is not None:
        base = len(names)
        for k, stain in enumerate(("hematoxylin", "dab")):
            cols[f"{stain}_od_mean"] = per_point(props[f"intensity_mean-{base + k}"])
            cols[f"{stain}_od_max"] = per_point(props[f"intensity_max-{base + k}"])
    cols["measured_on"] = np.full(n, measured_on, dtype=object)
    return cols


#: table column → measurement name in GeoJSON (QuPath's style: words, units after a space)
QUPATH_NAMES = {
    "score": "score",
    "area_px": "Area px^2",
    "area_um2": "Area µm^2",
    "perimeter_px": "Perimeter px",
    "equivalent_diameter_px": "Equivalent diameter px",
    "equivalent_diameter_um": "Equivalent diameter µm",
    "eccentricity": "Eccentricity",
    "solidity": "Solidity",
    "hematoxylin_od_mean": "Hematoxylin OD mean",
    "hematoxylin_od_max": "Hematoxylin OD max",
    "dab_od_mean": "DAB OD mean",
    "dab_od_max": "DAB OD max",
    "mean_intensity": "Mean intensity",
}
#: columns that say where or what an object is, not how it measures
NOT_MEASUREMENTS = ("x", "y", "class", "object", "measured_on")


def qupath_name(column: str) -> str:
    """The GeoJSON measurement name of a table column (``mean_red`` → ``Red: Mean``)."""
    if column in QUPATH_NAMES:
        return QUPATH_NAMES[column]
    if column.startswith("mean_"):
        return f"{column[5:].replace('_', ' ').capitalize()}: Mean"
    return column


class QupathRows(Sequence):
    """The rows of an :func:`object_table` as ``{name: value}`` mappings with QuPath-style
    names, each made when asked and not kept: a list of such dicts holds about 1 KB of Python
    objects per row, which for a slide's hundreds of thousands of detections grew the peak
    memory with the tissue area (the slide itself is streamed in bounded memory)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        names = [c for c in table if c not in NOT_MEASUREMENTS]
        self._keys = [qupath_name(c) for c in names]
        self._values = [np.asarray(table[c], dtype=np.float64) for c in names]
        self._n = len(table["x"])

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        i = operator.index(i)
        if not -self._n <= i < self._n:
            raise IndexError(f"row {i} of {self._n}")
        row = [float(v[i]) for v in self._values]
        return {k: x for k, x in zip(self._keys, row, strict=True) if np.isfinite(x)}


def qupath_measurements(table: dict[str, np.ndarray]) -> QupathRows:
    """One ``{name: value}`` mapping per row of an :func:`object_table`, with QuPath-style
    names (:func:`qupath_name`); NaN values (a point on background) are left out, as JSON
    has no NaN. The mappings are made one at a time when read (:class:`QupathRows`)."""
    return QupathRows(table)
