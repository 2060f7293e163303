"""QuPath-compatible GeoJSON: points and polygons with ``objectType`` and ``classification``.

QuPath puts pixel (0, 0)'s top-left corner at (0, 0), so a pixel centre is at +0.5;
cellmaps puts pixel centres at integers. Writers add 0.5 and readers subtract it, so a
point written here sits on the same pixel when the file is imported into QuPath
(File ▸ Import objects) over the same image.
"""

from __future__ import annotations

import colorsys
import itertools
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage import draw, measure

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path
from cellmaps.io.points import Points
from cellmaps.io.text import read_utf8_text

QUPATH_OFFSET = 0.5


@dataclass
class Polygon:
    """One outlined object: ``coords`` (K, 2) vertices as (row, col), a label and an id."""

    coords: np.ndarray
    label: str = "nucleus"
    object_id: int = 0


#: QuPath's own colours for its Ki67 classes (red positive, blue negative)
FIXED_COLORS = {"positive": [200, 0, 0], "negative": [112, 112, 225]}


def class_color(name: str) -> list[int]:
    """A stable RGB colour per class name (QuPath shows it on import); QuPath's colours
    for 'positive' and 'negative'."""
    if name.lower() in FIXED_COLORS:
        return list(FIXED_COLORS[name.lower()])
    hue = (zlib.crc32(name.encode()) % 360) / 360.0
    return [int(round(255 * v)) for v in colorsys.hsv_to_rgb(hue, 0.8, 0.95)]


def _classification(label: str) -> dict:
    return {"name": label, "color": class_color(label)}


def points_to_features(points: Points, object_type: str = "detection") -> list[dict]:
    """GeoJSON Point features for every point (score goes to ``measurements``)."""
    return list(iter_point_features(points, object_type))


def iter_point_features(
    points: Points,
    object_type: str = "detection",
    measurements: Sequence[dict] | None = None,
) -> Iterator[dict]:
    """:func:`points_to_features` one feature at a time; ``measurements`` (one mapping per
    point, e.g. :func:`cellmaps.postprocess.measure.qupath_measurements`) join the score."""
    for i, (r, c) in enumerate(points.coords):
        props: dict = {
            "objectType": object_type,
            "classification": _classification(str(points.labels[i])),
        }
        meas = dict(measurements[i]) if measurements is not None else {}
        if points.scores is not None:
            meas["score"] = float(points.scores[i])
        if meas:
            props["measurements"] = meas
        yield {
            "type": "Feature",
            "geometry": {
                "type": "Point",
                "coordinates": [float(c) + QUPATH_OFFSET, float(r) + QUPATH_OFFSET],
            },
            "properties": props,
        }


#: vertices closer than this (px) to the simplified outline are dropped
#: (:func:`skimage.measure.approximate_polygon`, Douglas–Peucker): the outline moves by at
#: most half a pixel, and a nucleus keeps about a fifth of its marching-squares vertices
POLYGON_TOLERANCE = 0.5


def mask_to_polygons(
    mask: np.ndarray, labels: dict[int, str] | None = None, tolerance: float = POLYGON_TOLERANCE
) -> list[Polygon]:
    """Outline every instance of a label image as one polygon (outer contour of its largest part).

    Contours follow scikit-image's marching squares at level 0.5 on each object's binary
    mask, so vertices lie on pixel edges, then are simplified within ``tolerance`` px
    (0 keeps every vertex); holes are not kept.
    """
    polys = []
    for region in measure.regionprops(np.asarray(mask)):
        r0, c0, r1, c1 = region.bbox
        sub = np.pad(region.image, 1).astype(np.float32)
        contours = measure.find_contours(sub, 0.5)
        if not contours:
            continue
        contour = max(contours, key=len) + np.array([r0 - 1, c0 - 1])
        if tolerance > 0 and len(contour) > 4:
            simple = measure.approximate_polygon(contour, tolerance)
            contour = simple if len(simple) >= 4 else contour  # a closed ring of 3+ vertices
        label = labels.get(region.label, "nucleus") if labels else "nucleus"
        polys.append(Polygon(contour, label, int(region.label)))
    return polys


def polygons_to_features(
    polygons: list[Polygon],
    object_type: str = "detection",
    measurements: dict[int, dict] | None = None,
) -> list[dict]:
    """GeoJSON Polygon features (closed rings, x = column); ``measurements`` maps an object
    id to its measurements (score included)."""
    feats = []
    for p in polygons:
        ring = [[float(c) + QUPATH_OFFSET, float(r) + QUPATH_OFFSET] for r, c in p.coords]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        feats.append(
            {
                "type": "Feature",
                "id": str(p.object_id),
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {
                    "objectType": object_type,
                    "classification": _classification(p.label),
                    **(
                        {"measurements": dict(measurements[p.object_id])}
                        if measurements and p.object_id in measurements
                        else {}
                    ),
                },
            }
        )
    return feats


def write_geojson(
    path: str | os.PathLike,
    points: Points | None = None,
    polygons: list[Polygon] | None = None,
    object_type: str = "detection",
    measurements: Sequence[dict] | dict[int, dict] | None = None,
) -> None:
    """Write points and/or polygons as a QuPath-compatible FeatureCollection, atomically,
    one feature at a time (a slide's detections are never held as one text).
    ``measurements``: one mapping per point (with ``points``), or object id → mapping (with
    ``polygons`` alone)."""
    feats: Iterator[dict] = iter(())
    if points is not None:
        feats = iter_point_features(points, object_type, measurements if polygons is None else None)
    if polygons is not None:
        per_object = measurements if isinstance(measurements, dict) else None
        feats = itertools.chain(feats, polygons_to_features(polygons, object_type, per_object))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [')
        for i, feat in enumerate(feats):
            fh.write((", " if i else "") + json.dumps(feat))
        fh.write("]}")


def _feature_label(feat: dict) -> str:
    props = feat.get("properties") or {}
    cls = props.get("classification") or {}
    return str(cls.get("name", "nucleus")) if isinstance(cls, dict) else str(cls)


def read_geojson(path: str | os.PathLike) -> tuple[Points, list[Polygon]]:
    """Read a GeoJSON FeatureCollection (or list of features, as QuPath exports).

    Returns
    -------
    points : Points
        All Point (and MultiPoint) features, labels from ``classification.name``,
        scores from ``measurements.score`` when every point has one.
    polygons : list of Polygon
        All Polygon features (outer ring only); MultiPolygons give one Polygon per part.
    """
    path = Path(path)
    try:
        data = json.loads(read_utf8_text(path, "GeoJSON file"))
    except json.JSONDecodeError as exc:
        raise CellmapsInputError(f"cannot read GeoJSON ({exc})", path) from exc
    feats = data.get("features", []) if isinstance(data, dict) else data
    if isinstance(data, dict) and data.get("type") == "Feature":
        feats = [data]
    if not isinstance(feats, list):
        raise CellmapsInputError("no 'features' list in GeoJSON", path)
    coords, labels, scores, polys = [], [], [], []
    for k, feat in enumerate(feats):
        geom = feat.get("geometry") or {}
        gtype, gc = geom.get("type"), geom.get("coordinates")
        label = _feature_label(feat)
        meas = (feat.get("properties") or {}).get("measurements") or {}
        try:
            if gtype in ("Point", "MultiPoint"):
                for x, y in [gc] if gtype == "Point" else gc:
                    coords.append((float(y) - QUPATH_OFFSET, float(x) - QUPATH_OFFSET))
                    labels.append(label)
                    scores.append(meas.get("score") if isinstance(meas, dict) else None)
            elif gtype in ("Polygon", "MultiPolygon"):
                for poly in [gc] if gtype == "Polygon" else gc:
                    ring = np.asarray(poly[0], dtype=np.float64)
                    polys.append(Polygon(ring[:, ::-1] - QUPATH_OFFSET, label, len(polys) + 1))
        except (TypeError, ValueError, IndexError) as exc:
            raise CellmapsInputError(f"feature {k}: malformed {gtype} coordinates", path) from exc
    arr = np.array(coords, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise CellmapsInputError("NaN or infinite point coordinates", path)
    have_scores = len(scores) > 0 and all(s is not None for s in scores)
    return Points(
        arr, np.array(labels, dtype=object), np.array(scores) if have_scores else None
    ), polys


def polygons_to_mask(polygons: list[Polygon], shape: tuple[int, int]) -> np.ndarray:
    """Rasterise polygons into a uint32 label image (pixel centres inside the ring), ids 1..N."""
    mask = np.zeros(shape[:2], dtype=np.uint32)
    for i, p in enumerate(polygons, start=1):
        rr, cc = draw.polygon(p.coords[:, 0], p.coords[:, 1], shape=shape[:2])
        mask[rr, cc] = i
    return mask
