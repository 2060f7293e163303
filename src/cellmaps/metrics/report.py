"""``cellmaps evaluate --report report.html``: one self-contained HTML file (every image
embedded as a PNG data URI, no script, no external file) with the metrics table, the
evaluation figure (PR curve, per-image F1, counts) and per-image overlays of true positives,
false positives and misses, the worst images first.

Written with the standard library's :mod:`html` escaping and Pillow drawing, not a template
engine: the page is a few tables and images, and a dependency for that would be heavier
than the code.
"""

from __future__ import annotations

import base64
import html
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cellmaps.io._atomic import write_text_atomic
from cellmaps.io.dataset import Dataset
from cellmaps.io.images import to_uint8_rgb
from cellmaps.metrics.matching import match_points

#: overlay colours: matched prediction, unmatched prediction, missed truth
COLOURS = {"tp": (0, 200, 0), "fp": (230, 0, 0), "fn": (255, 200, 0)}
OVERLAY_SIDE = 768  # px: overlays are shrunk to at most this a side
WORST_IMAGES = 12  # overlays of this many images, the lowest F1 first
#: summary entries of the metrics table, in order, with their names
SUMMARY_ROWS = [
    ("n_images", "images"),
    ("tp", "true positives"),
    ("fp", "false positives"),
    ("fn", "missed"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("pr_auc", "area under the PR curve"),
    ("count_mae", "count MAE per image"),
    ("count_ccc", "count CCC"),
    ("aji", "AJI"),
    ("dice", "Dice"),
    ("pq", "PQ"),
    ("sq", "SQ"),
    ("dq", "DQ"),
]


def fmt(value) -> str:
    """A number as the report prints it (4 decimals; integers as such; – for undefined)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.4f}"


def png_data_uri(img: np.ndarray | Image.Image) -> str:
    """A PNG of ``img`` as a ``data:`` URI."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(img)
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_matches(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, radius: float,
                    protocol: str) -> Image.Image:  # fmt: skip
    """The image with matched predictions (green), unmatched predictions (red) and missed
    truth points (yellow) drawn as circles of the matching radius, shrunk to
    :data:`OVERLAY_SIDE`."""
    rgb = Image.fromarray(to_uint8_rgb(image))
    m = match_points(truth, pred, radius, protocol)
    tp = np.zeros(len(pred), bool)
    tp[m.pred_idx] = True
    fn = np.ones(len(truth), bool)
    fn[m.truth_idx] = False
    scale = min(1.0, OVERLAY_SIDE / max(rgb.size))
    if scale < 1.0:
        rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))))
    draw = ImageDraw.Draw(rgb)
    r = max(2.0, radius * scale)
    for coords, kind in ((pred[tp], "tp"), (pred[~tp], "fp"), (truth[fn], "fn")):
        for y, x in coords * scale:
            draw.ellipse((x - r, y - r, x + r, y + r), outline=COLOURS[kind], width=2)
    return rgb


def evaluation_figure_uri(result: dict) -> str:
    """:func:`cellmaps.metrics.evaluate.plot_evaluation`'s figure as a data URI."""
    from cellmaps.metrics.evaluate import plot_evaluation

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "figure.png"
        plot_evaluation(result, path)
        return png_data_uri(Image.open(path).convert("RGB"))


def worst_first(per_image: dict[str, dict]) -> list[str]:
    """Image ids by detection F1, lowest first (undefined F1 last, then by id)."""

    def key(i: str):
        f1 = per_image[i].get("f1")
        ok = f1 is not None and np.isfinite(f1)
        return (not ok, f1 if ok else 0.0, i)

    return sorted(per_image, key=key)


STYLE = (
    "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
    "padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:0.5em;vertical-align:top}"
    "img{max-width:100%}.key span{padding:0 6px}</style>"
)


def report_page(title: str, body: list[str]) -> str:
    """A whole self-contained page: ``title`` and the ``body`` parts (HTML)."""
    head = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>{STYLE}</head><body>\n"
            f"<h1>{html.escape(title)}</h1>")  # fmt: skip
    return "\n".join([head, *body, "</body></html>"]) + "\n"


def table_html(header: list[str], rows: list[list[str]], cls: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def report_html(result: dict, truth, pred, worst: int = WORST_IMAGES) -> str:
    """The report page of an :func:`~cellmaps.metrics.evaluate.evaluate` result on the
    ``truth`` and ``pred`` folders (their images and points are read again for the
    overlays of the ``worst`` images)."""
    truth, pred = Dataset(truth), Dataset(pred)
    s = result["summary"]
    radius = s.get("radius")
    metrics = [[name, fmt(s[k])] for k, name in SUMMARY_ROWS if k in s]
    if "ki67" in s:
        metrics += [["Ki67 index MAE per image", fmt(s["ki67"]["index_mae"])],
                    ["Ki67 index pooled (truth / pred)",
                     f"{fmt(s['ki67']['pooled_truth'])} / {fmt(s['ki67']['pooled_pred'])}"]]  # fmt: skip
    order = worst_first(result["per_image"])
    per = result["per_image"]
    image_rows = [[i, fmt(per[i]["n_truth"]), fmt(per[i]["n_pred"]), fmt(per[i]["tp"]),
                   fmt(per[i]["fp"]), fmt(per[i]["fn"]), fmt(per[i]["f1"])] for i in order]  # fmt: skip
    overlays = []
    if radius is not None:  # point protocols: circles of the matching radius
        for i in order[:worst]:
            t, p = truth.points(i), pred.points(i)
            if t is None or p is None or not truth.has("image", i):
                continue
            img = overlay_matches(truth.image(i), t.coords, p.coords, radius, s["protocol"])
            overlays.append(
                f'<figure><img alt="{html.escape(i)}" src="{png_data_uri(img)}">'
                f"<figcaption>{html.escape(i)}: F1 {fmt(per[i]['f1'])}, "
                f"{per[i]['tp']} found, {per[i]['fp']} extra, {per[i]['fn']} missed"
                "</figcaption></figure>"
            )
    title = f"cellmaps evaluation: {Path(result['pred']).name} against {Path(result['truth']).name}"
    where = f"radius {radius} px" if radius is not None else f"IoU ≥ {s.get('iou_threshold')}"
    parts = [
        f"<p>truth <code>{html.escape(result['truth'])}</code>, predictions "
        f"<code>{html.escape(result['pred'])}</code>, split {html.escape(str(result['split'] or 'all'))}, "
        f"protocol {html.escape(s['protocol'])} ({html.escape(where)}).</p>",
        "<h2>Metrics</h2>",
        table_html(["measure", "value"], metrics, "metrics"),
        f'<img alt="evaluation figure" src="{evaluation_figure_uri(result)}">',
        "<h2>Images, worst first</h2>",
        table_html(
            ["image", "truth", "predicted", "found", "extra", "missed", "F1"], image_rows, "images"
        ),  # fmt: skip
    ]
    if overlays:
        parts += [
            f"<h2>Overlays of the {len(overlays)} worst images</h2>",
            '<p class="key"><span style="color:#00c800">○ found</span>'
            '<span style="color:#e60000">○ extra (not in the truth)</span>'
            '<span style="color:#ffc800">○ missed</span></p>',
            *overlays,
        ]
    return report_page(title, parts)


def write_report(path: str | os.PathLike, result: dict, truth, pred,
                 worst: int = WORST_IMAGES) -> None:  # fmt: skip
    """Write :func:`report_html` to ``path``, atomically."""
    write_text_atomic(path, report_html(result, truth, pred, worst))
