"""napari layer-data tuples ``(data, kwargs, layer_type)`` from a prediction or from a
``cellmaps predict`` output folder; numpy (and pandas for the tables) only, so the reader
and these conversions run and are tested without napari or Qt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io.geojson import class_color
from cellmaps.io.masks import read_mask
from cellmaps.io.points import Points, read_points
from cellmaps.metrics.counts import NEGATIVE, POSITIVE, ki67_index

LayerData = tuple[object, dict, str]

#: point size (px) when no object diameter is measured
DEFAULT_POINT_SIZE = 6.0
#: a point is drawn at this fraction of its object's diameter: the outline stays visible
POINT_FRACTION = 0.35


def class_colours(labels: np.ndarray) -> np.ndarray:
    """(N, 4) RGBA in [0, 1]: each class's colour (the one QuPath shows for the GeoJSON)."""
    table = {name: class_color(str(name)) for name in set(labels.tolist())}
    rgb = np.array([table[v] for v in labels.tolist()], dtype=np.float32).reshape(-1, 3)
    return np.concatenate([rgb / 255.0, np.ones((len(rgb), 1), np.float32)], axis=1)


def point_sizes(features: dict | None, n: int) -> np.ndarray | float:
    """Each point drawn at a fraction of its object's equivalent diameter where that was
    measured (at least 3 px), so the point marks the object without hiding its outline."""
    if features is not None and "equivalent_diameter_px" in features:
        d = np.asarray(features["equivalent_diameter_px"], dtype=np.float64)
        ok = np.isfinite(d) & (d > 0)
        return np.where(ok, np.maximum(3.0, POINT_FRACTION * np.where(ok, d, 0)),
                        DEFAULT_POINT_SIZE)  # fmt: skip
    return DEFAULT_POINT_SIZE


def counts_summary(labels: np.ndarray) -> dict:
    """Objects per class, and the Ki67 index when the classes are positive and negative."""
    names, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    summary: dict = {"counts": {str(k): int(v) for k, v in zip(names, counts, strict=True)}}
    if set(summary["counts"]) & {POSITIVE, NEGATIVE}:
        pos, neg = summary["counts"].get(POSITIVE, 0), summary["counts"].get(NEGATIVE, 0)
        summary["ki67_index"] = ki67_index(pos, neg)
    return summary


def points_layer(pts: Points, name: str, features: dict | None = None,
                 metadata: dict | None = None) -> LayerData:  # fmt: skip
    """A Points layer: (row, col) centres coloured by class; features: class and score, or
    the per-object table (``features``, one row per point) when there is one."""
    if features is None:
        features = {"class": pts.labels.astype(str)}
        if pts.scores is not None:
            features["score"] = pts.scores
    n = len(pts)
    for key, col in features.items():
        if len(col) != n:
            raise CellmapsInputError(f"feature {key!r} has {len(col)} rows for {n} points")
    kwargs = {
        "name": name,
        "features": features,
        "face_color": class_colours(pts.labels),
        "size": point_sizes(features, n),
        "metadata": {"cellmaps": {**counts_summary(pts.labels), **(metadata or {})}},
    }
    return pts.coords.astype(np.float64), kwargs, "points"


def labels_layer(labels: np.ndarray, name: str) -> LayerData:
    """A Labels layer of instance outlines (0 background)."""
    return labels, {"name": name, "opacity": 0.5}, "labels"


def prediction_layers(pred, name: str, metadata: dict | None = None) -> list[LayerData]:
    """The layers of one :class:`~cellmaps.model.Prediction`: its points (layer ``name``)
    with the per-object table as features, and its instance outlines ("<name> outlines")
    when it has them."""
    layers = [points_layer(pred.points, name, dict(pred.columns),
                           {"factor": float(pred.factor), **(metadata or {})})]  # fmt: skip
    if pred.labels is not None:
        layers.append(labels_layer(pred.labels, f"{name} outlines"))
    return layers


def is_output_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder ``cellmaps predict`` wrote (it holds points/*.csv)."""
    p = Path(path)
    return p.is_dir() and (p / "points").is_dir() and any((p / "points").glob("*.csv"))


def _measurements(path: Path, n: int) -> dict | None:
    """measurements/<id>.csv as columns, when it has one row per point."""
    if not path.is_file():
        return None
    import pandas as pd  # napari depends on pandas; the rest of cellmaps does not

    table = pd.read_csv(path)
    if len(table) != n:
        raise CellmapsInputError(f"{len(table)} measurement rows for {n} points", path)
    return {c: table[c].to_numpy() for c in table.columns}


def output_folder_layers(folder: str | os.PathLike) -> list[LayerData]:
    """Every image's layers in a ``cellmaps predict`` output folder: points/<id>.csv as a
    Points layer (measurements/<id>.csv as its features when there), masks/<id>.tif as a
    Labels layer; images in name order."""
    folder = Path(folder)
    if not is_output_folder(folder):
        raise CellmapsInputError("not a cellmaps output folder (no points/*.csv)", folder)
    layers: list[LayerData] = []
    for csv_path in sorted((folder / "points").glob("*.csv")):
        stem = csv_path.stem
        pts = read_points(csv_path)
        features = _measurements(folder / "measurements" / f"{stem}.csv", len(pts))
        layers.append(points_layer(pts, f"{stem} points", features, {"source": str(csv_path)}))
        mask = folder / "masks" / f"{stem}.tif"
        if mask.is_file():
            layers.append(labels_layer(read_mask(mask), f"{stem} masks"))
    return layers
