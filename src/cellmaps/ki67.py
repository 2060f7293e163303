"""``cellmaps ki67``: Ki67 labelling index from detected positive / negative tumour nuclei."""

from __future__ import annotations

import os
from pathlib import Path

from cellmaps.bundled import is_bundled_name, load_bundled
from cellmaps.io._atomic import write_csv_atomic
from cellmaps.metrics.counts import (
    NEGATIVE,
    POSITIVE,
    format_index,
    ki67_table,
    require_ki67_classes,
)
from cellmaps.model import Model
from cellmaps.predict import predict_paths

__all__ = ["NEGATIVE", "POSITIVE", "check_ki67_classes", "ki67_table", "load_ki67_model",
           "score_ki67"]  # fmt: skip


def load_ki67_model(path: str | os.PathLike | None = None) -> Model:
    """A model whose classes include 'positive' and 'negative' (default: the bundled Ki67
    model; a bundled model's name, or a file); anything else is refused with the classes it
    does have."""
    if path is None or (isinstance(path, str) and is_bundled_name(path)):
        return check_ki67_classes(load_bundled(path or "ki67"), path or "ki67")
    return check_ki67_classes(Model.load(path), path)


def check_ki67_classes(model: Model, path: str | os.PathLike) -> Model:
    """``model`` if its classes include 'positive' and 'negative'; otherwise refused, naming
    the file and the classes it does have."""
    require_ki67_classes(model.training.get("classes") or [], path)
    return model


def write_ki67_csv(out: Path, rows: list[dict]) -> None:
    """``ki67.csv``: id, positive, negative, index per image and the pooled row."""
    write_csv_atomic(
        out / "ki67.csv",
        ["id", "positive", "negative", "index"],
        [[r["id"], r[POSITIVE], r[NEGATIVE], format_index(r["index"])] for r in ki67_table(rows)],
    )


def score_ki67(
    model: str | os.PathLike | None,
    paths: list[str | os.PathLike],
    out: str | os.PathLike,
    xi: float | None = None,
    progress: bool = True,
    split: str | None = None,
    min_score: float | None = None,
    **inference,
) -> list[dict]:
    """Detect and classify tumour nuclei in every image, write the prediction layout
    (points/, geojson/, overlays/, counts.csv) and ``ki67.csv`` (id,positive,negative,index;
    one row per image and a ``pooled`` row), rewritten after every image. Keywords
    ``overwrite``, ``resume``, ``skip_bad`` as in :func:`~cellmaps.predict.predict_paths`.
    Returns the ki67.csv rows."""
    m = load_ki67_model(model)
    rows = predict_paths(
        m,
        paths,
        out,
        xi=xi,
        progress=progress,
        split=split,
        min_score=min_score,
        reserved_ids=("pooled",),
        write_tables=write_ki67_csv,
        need_colour=True,
        **inference,
    )
    return ki67_table(rows)
