"""Point annotations and detections: the ``x,y,label[,score]`` CSV format.

Files say ``x,y`` with x = column and y = row (0-based pixel units, pixel centres at
integers). Inside cellmaps points are (N, 2) float arrays in (row, col) order, as in
scikit-image; :func:`xy_to_rowcol` and :func:`rowcol_to_xy` are the one conversion place.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path
from cellmaps.io.text import read_utf8_text

REQUIRED_COLUMNS = ("x", "y", "label")
OPTIONAL_COLUMNS = ("score",)
#: Labels that mean "a nucleus/cell whose class is unknown" (not a class of their own).
UNCLASSIFIED_LABELS = frozenset({"nucleus", "cell", "unclassified", ""})


def xy_to_rowcol(xy: np.ndarray) -> np.ndarray:
    """Convert (N, 2) file coordinates (x = column, y = row) to (row, col)."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return xy[:, ::-1].copy()


def rowcol_to_xy(rc: np.ndarray) -> np.ndarray:
    """Convert (N, 2) (row, col) coordinates to file coordinates (x = column, y = row)."""
    rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2)
    return rc[:, ::-1].copy()


@dataclass
class Points:
    """A set of points: ``coords`` (N, 2) as (row, col), a label per point, optional scores."""

    coords: np.ndarray
    labels: np.ndarray = field(default=None)  # type: ignore[assignment]
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64).reshape(-1, 2)
        n = len(self.coords)
        if self.labels is None:
            self.labels = np.full(n, "nucleus", dtype=object)
        self.labels = np.asarray(self.labels, dtype=object).reshape(-1)
        if len(self.labels) != n:
            raise ValueError(f"{n} points but {len(self.labels)} labels")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
            if len(self.scores) != n:
                raise ValueError(f"{n} points but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.coords)

    def subset(self, keep: np.ndarray) -> Points:
        """Return the points selected by a boolean mask or index array."""
        return Points(
            self.coords[keep],
            self.labels[keep],
            None if self.scores is None else self.scores[keep],
        )


def check_points_in_image(
    coords: np.ndarray, shape: tuple[int, int], path: str | os.PathLike | None = None
) -> None:
    """Raise if any (row, col) point lies outside an image of ``shape`` = (H, W).

    A point is inside when it falls on a pixel: -0.5 <= row < H - 0.5 and the same for col.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    h, w = shape[:2]
    bad = (
        (coords[:, 0] < -0.5)
        | (coords[:, 0] >= h - 0.5)
        | (coords[:, 1] < -0.5)
        | (coords[:, 1] >= w - 0.5)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        r, c = coords[i]
        raise CellmapsInputError(
            f"{int(bad.sum())} point(s) outside the {h}x{w} image, first at x={c:g}, y={r:g} "
            f"(line {i + 2})",
            path,
        )


def _parse_float(text: str, column: str, line: int, path: Path) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CellmapsInputError(f"line {line}: {column}={text!r} is not a number", path) from None
    if not math.isfinite(value):
        raise CellmapsInputError(f"line {line}: {column}={text!r} is not finite", path)
    return value


def read_points(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> Points:
    """Read a points CSV with header ``x,y,label`` and optional ``score``.

    Parameters
    ----------
    path : path-like
        The CSV file. A header-only file means "no objects" and is valid.
    shape : (H, W), optional
        When given, every point must lie inside an image of this shape.

    Raises
    ------
    CellmapsInputError
        Missing file, missing/unknown header columns, non-numeric, NaN or infinite
        coordinates, or points outside the image.
    """
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("points file does not exist", path)
    text = read_utf8_text(path, "points file")
    reader = csv.reader(_io.StringIO(text, newline=""))  # csv handles \r, \n and \r\n itself
    header = next(reader, None)
    if header is None:
        raise CellmapsInputError("empty file: expected a header line 'x,y,label'", path)
    header = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        raise CellmapsInputError(
            f"bad header {','.join(header)!r}: expected 'x,y,label' with optional 'score'"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else ""),
            path,
        )
    ix, iy, il = (header.index(c) for c in REQUIRED_COLUMNS)
    isc = header.index("score") if "score" in header else None
    xy, labels, scores = [], [], []
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise CellmapsInputError(
                f"line {line}: {len(row)} fields, header has {len(header)}", path
            )
        xy.append((_parse_float(row[ix], "x", line, path), _parse_float(row[iy], "y", line, path)))
        labels.append(row[il].strip())
        if isc is not None:
            scores.append(_parse_float(row[isc], "score", line, path))
    coords = xy_to_rowcol(np.array(xy, dtype=np.float64).reshape(-1, 2))
    if shape is not None:
        check_points_in_image(coords, shape, path)
    return Points(
        coords, np.array(labels, dtype=object), np.array(scores) if isc is not None else None
    )


def points_csv_lines(points: Points) -> Iterator[str]:
    """CSV lines (with newline) of points: ``x,y,label`` plus ``score`` when present."""
    xy = rowcol_to_xy(points.coords)
    has_score = points.scores is not None
    yield "x,y,label,score\n" if has_score else "x,y,label\n"
    for i, (x, y) in enumerate(xy):
        label = str(points.labels[i])
        if "," in label or '"' in label:
            raise ValueError(f"label {label!r} may not contain commas or quotes")
        row = f"{x:.2f},{y:.2f},{label}"
        if has_score:
            row += f",{points.scores[i]:.6g}"
        yield row + "\n"


def format_points_csv(points: Points) -> str:
    """Render points as CSV text (``x,y,label`` plus ``score`` when present)."""
    return "".join(points_csv_lines(points))


def write_points(path: str | os.PathLike, points: Points) -> None:
    """Write points to a CSV atomically (see :func:`format_points_csv`), line by line, so a
    slide's million detections need no second copy as text."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(points_csv_lines(points))


def write_points_parquet(path: str | os.PathLike, points: Points) -> None:
    """Write points as a Parquet table (columns x, y, label, score; pyarrow), atomically."""
    try:
        # imported here: pyarrow is optional (cellmaps[slides])
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise CellmapsInputError(
            "Parquet output needs pyarrow: pip install 'cellmaps[slides]' (or pyarrow)"
        ) from exc
    xy = rowcol_to_xy(points.coords)
    columns = {
        "x": pa.array(xy[:, 0], pa.float64()),
        "y": pa.array(xy[:, 1], pa.float64()),
        "label": pa.array([str(v) for v in points.labels], pa.string()),
    }
    if points.scores is not None:
        columns["score"] = pa.array(np.asarray(points.scores, np.float64))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)
