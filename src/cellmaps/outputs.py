"""The prediction layout's files: points (CSV, Parquet), QuPath GeoJSON, overlays,
counts.csv, regions.csv and slides.json, each written atomically (numpy and Pillow)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
from matplotlib.path import Path as Outline
from PIL import Image, ImageDraw

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path, write_csv_atomic, write_text_atomic
from cellmaps.io.geojson import class_color, mask_to_polygons, read_geojson, write_geojson
from cellmaps.io.images import to_uint8_rgb
from cellmaps.io.points import Points, write_points, write_points_parquet
from cellmaps.metrics.counts import NEGATIVE, POSITIVE, format_index, ki67_index
from cellmaps.postprocess.measure import qupath_measurements


def draw_overlay(image: np.ndarray, points: Points, radius: int = 4) -> np.ndarray:
    """The image (display-stretched) with a coloured ring per detection (colour per class)."""
    im = Image.fromarray(to_uint8_rgb(image))
    d = ImageDraw.Draw(im)
    for (r, c), lab in zip(points.coords, points.labels, strict=True):
        d.ellipse(
            [c - radius, r - radius, c + radius, r + radius],
            outline=tuple(class_color(str(lab))),
            width=2,
        )
    return np.asarray(im)


def write_overlay(path: Path, image: np.ndarray, points: Points) -> None:
    """The overlay PNG; images larger than :data:`PREVIEW_SIDE` a side get a preview taken
    every k-th pixel (its uint8 copy would otherwise set the peak memory of a large run)."""
    step = -(-max(image.shape[:2]) // PREVIEW_SIDE)
    if step > 1:
        image = image[::step, ::step]
        points = Points((points.coords + 0.5) / step - 0.5, points.labels, points.scores)
    with atomic_path(path) as tmp:
        Image.fromarray(draw_overlay(image, points, radius=4 if step == 1 else 2)).save(
            tmp, format="PNG"
        )


def label_counts(pts: Points) -> dict[str, int]:
    return {
        str(k): int(v)
        for k, v in zip(*np.unique(pts.labels.astype(str), return_counts=True), strict=True)
    }


def instance_outlines(mask: np.ndarray, label: str) -> list:
    """One QuPath polygon per instance of a label image, all classified ``label``."""

    ids = np.unique(mask)
    return mask_to_polygons(mask, {int(k): label for k in ids[ids > 0]})


def write_measurements(path: Path, table: dict[str, np.ndarray]) -> None:
    """A per-object table (:func:`cellmaps.postprocess.measure.object_table`) as CSV,
    atomically: one row per object, its columns in the table's order, NaN as an empty field
    (pandas reads it back as NaN), numbers with 7 significant digits."""

    def cell(v) -> str:
        if isinstance(v, str):
            return v
        return "" if not np.isfinite(v) else f"{float(v):.7g}"

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(table))
        columns = list(table.values())
        for i in range(len(table["x"])):
            writer.writerow([cell(col[i]) for col in columns])


def write_measurements_parquet(path: Path, table: dict[str, np.ndarray]) -> None:
    """The per-object table as Parquet (pyarrow), atomically."""
    import pyarrow as pa  # optional, as for the points' Parquet (checked there first)
    import pyarrow.parquet as pq

    arrays = {k: pa.array(list(v) if v.dtype == object else v) for k, v in table.items()}
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(arrays), tmp)


def write_points_outputs(
    out: Path,
    stem: str,
    pts: Points,
    parquet: bool,
    outlines: list | None = None,
    table: dict[str, np.ndarray] | None = None,
) -> None:
    """points/<stem>.csv (and .parquet) and geojson/<stem>.geojson: the points, or with
    ``outlines`` (``--masks``) one polygon per instance in their place, so QuPath imports
    each cell once, with its outline. With ``table`` (per-object measurements, one row per
    point), also measurements/<stem>.csv (and .parquet), written first, and the
    measurements in every GeoJSON feature."""
    meas = None
    if parquet:  # first: it says clearly when pyarrow is missing
        write_points_parquet(out / "points" / f"{stem}.parquet", pts)
    if table is not None:
        if parquet:
            write_measurements_parquet(out / "measurements" / f"{stem}.parquet", table)
        write_measurements(out / "measurements" / f"{stem}.csv", table)
        meas = qupath_measurements(table)
    write_points(out / "points" / f"{stem}.csv", pts)
    if outlines is None:
        write_geojson(out / "geojson" / f"{stem}.geojson", points=pts, measurements=meas)
    else:
        per_object = None
        if meas is not None:
            per_object = {int(o): m for o, m in zip(table["object"], meas, strict=True) if o > 0}
        write_geojson(out / "geojson" / f"{stem}.geojson", polygons=outlines,
                      measurements=per_object)  # fmt: skip


SLIDES_FILE = "slides.json"  # per slide read by region: level, net shape, tiles skipped
PREVIEW_SIDE = 2048  # overlays of larger images are previews of at most this many px a side


def record_slide(out: Path, stem: str, info: dict) -> None:
    """Add one slide's summary to ``slides.json`` (rewritten atomically)."""

    path = out / SLIDES_FILE
    table = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    table[stem] = info
    write_text_atomic(path, json.dumps(table, indent=1, sort_keys=True) + "\n")


REGIONS_FILE = "regions.csv"


def region_counts(pts: Points, regions: list) -> list[dict]:
    """Detections per region polygon (:class:`~cellmaps.io.geojson.Polygon`, e.g. QuPath
    annotations exported as GeoJSON): region name (its classification, numbered when
    several share one), count and count per label; a Ki67 index where the labels are
    positive/negative. A point on a region's outline counts as inside."""

    rows, seen = [], {}
    for poly in regions:
        seen[poly.label] = seen.get(poly.label, 0) + 1
        inside = Outline(poly.coords).contains_points(pts.coords, radius=1e-9) if len(pts) else []
        counts = label_counts(pts.subset(np.asarray(inside, bool))) if len(pts) else {}
        row = {"region": f"{poly.label} {seen[poly.label]}", "count": sum(counts.values())}
        row.update(counts)
        if POSITIVE in counts or NEGATIVE in counts:
            row["index"] = ki67_index(counts.get(POSITIVE, 0), counts.get(NEGATIVE, 0))
        rows.append(row)
    return rows


def read_regions(regions: str | os.PathLike | None, image_id: str) -> list:
    """The region polygons of one image: ``regions/<id>.geojson`` when ``regions`` is a
    folder (none when that file is missing), or every polygon of one GeoJSON file."""

    if regions is None:
        return []
    path = Path(regions)
    if path.is_dir():
        path = path / f"{image_id}.geojson"
        if not path.is_file():
            return []
    polygons = read_geojson(path)[1]
    if not polygons:
        raise CellmapsInputError("no polygon (region) in the GeoJSON file", path)
    return polygons


def write_regions(out: Path, rows: list[dict]) -> None:
    labels: list[str] = []
    for r in rows:
        labels += [k for k in r if k not in ("id", "region", "count", "index") and k not in labels]
    index = ["index"] if any("index" in r for r in rows) else []
    header = ["id", "region", "count", *labels, *index]

    def cell(r: dict, k: str):
        if k == "index":
            return format_index(r["index"]) if "index" in r else ""
        return r.get(k, 0)

    body = [[cell(r, k) for k in header] for r in rows]
    write_csv_atomic(out / REGIONS_FILE, header, body)


def model_labels(m) -> list[str]:
    """The labels a model gives its detections: its classes, or its one label."""
    classes = m.training.get("classes")
    return [str(c) for c in classes] if classes else [str(m.training.get("label", "nucleus"))]


def write_counts(out: Path, rows: list[dict], labels: list[str] = ()) -> None:
    """counts.csv: id, count and one column per label — the model's ``labels`` always (so
    the columns do not change with what was found), then any other label found."""
    labels = list(labels)
    for r in rows:
        labels += [k for k in r if k not in ("id", "count") and k not in labels]
    header = ["id", "count", *labels]
    write_csv_atomic(out / "counts.csv", header, [[r.get(k, 0) for k in header] for r in rows])


REPORT_FILE = "report.html"
THUMBNAIL_SIDE = 256  # px: overlay thumbnails in the prediction report


def _read_table(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def prediction_report_html(out: Path) -> str:
    """The page of a prediction folder: counts per image (counts.csv), the Ki67 index per
    image and pooled when ki67.csv is there, and a thumbnail of each image's overlay, every
    image embedded (self-contained, no script)."""
    import html

    from cellmaps.metrics.report import png_data_uri, report_page, table_html

    counts = _read_table(out / "counts.csv")
    ki67 = {r["id"]: r for r in _read_table(out / "ki67.csv")}
    columns = list(counts[0]) if counts else ["id", "count"]
    parts = [f"<p>{len(counts)} image(s) in <code>{html.escape(str(out))}</code>.</p>"]
    if "pooled" in ki67:
        p = ki67["pooled"]
        parts.append(f"<p>Pooled Ki67 index {html.escape(p['index'])} ({p['positive']} positive, "
                     f"{p['negative']} negative tumour nuclei).</p>")  # fmt: skip
    header = columns + (["Ki67 index"] if ki67 else [])
    rows = [[r[c] for c in columns] + ([ki67[r["id"]]["index"]] if r["id"] in ki67 else [])
            for r in counts]  # fmt: skip
    parts += ["<h2>Counts</h2>", table_html(header, rows, "counts"), "<h2>Overlays</h2>"]
    for r in counts:
        path = out / "overlays" / f"{r['id']}.png"
        if not path.is_file():
            continue
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            uri = png_data_uri(im)
        parts.append(f'<figure><img alt="{html.escape(r["id"])}" src="{uri}"><figcaption>'
                     f"{html.escape(r['id'])}: {html.escape(r['count'])}</figcaption></figure>")  # fmt: skip
    return report_page(f"cellmaps predictions: {out.name}", parts)


def write_prediction_report(out: Path) -> Path:
    """Write :func:`prediction_report_html` to OUT/report.html, atomically."""
    path = out / REPORT_FILE
    write_text_atomic(path, prediction_report_html(out))
    return path
