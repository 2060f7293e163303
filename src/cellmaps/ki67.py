"""``cellmaps ki67``: Ki67 labelling index from detected positive / negative tumour nuclei."""

from __future__ import annotations

import os
from pathlib import Path

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import write_csv_atomic
from cellmaps.metrics.counts import ki67_index

POSITIVE, NEGATIVE = "positive", "negative"


def load_ki67_model(path: str | os.PathLike | None = None):
    """A model whose classes include 'positive' and 'negative' (default: the bundled Ki67
    model); anything else is refused with the classes it does have."""
    from cellmaps.model import Model, bundled_model_path

    path = bundled_model_path("ki67") if path is None else Path(path)
    return check_ki67_classes(Model.load(path), path)


def check_ki67_classes(model, path: str | os.PathLike):
    """``model`` if its classes include 'positive' and 'negative'; otherwise refused, naming
    the file and the classes it does have."""
    classes = model.training.get("classes") or []
    if POSITIVE not in classes or NEGATIVE not in classes:
        raise CellmapsInputError(
            f"not a Ki67 model: it must classify nuclei as {POSITIVE!r} and {NEGATIVE!r}, "
            f"but its classes are {classes or 'none (a detector without classes)'}",
            path,
        )
    return model


def format_index(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


def ki67_table(rows: list[dict]) -> list[dict]:
    """Per-image rows (id, positive, negative, index) plus a ``pooled`` row whose index is
    Σ positive / (Σ positive + Σ negative) (NaN where no tumour nucleus was found)."""
    out = []
    for r in rows:
        pos, neg = int(r.get(POSITIVE, 0)), int(r.get(NEGATIVE, 0))
        out.append({"id": r["id"], POSITIVE: pos, NEGATIVE: neg, "index": ki67_index(pos, neg)})
    pos = sum(r[POSITIVE] for r in out)
    neg = sum(r[NEGATIVE] for r in out)
    out.append({"id": "pooled", POSITIVE: pos, NEGATIVE: neg, "index": ki67_index(pos, neg)})
    return out


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
    from cellmaps.predict import predict_paths

    def write_ki67_csv(out: Path, rows: list[dict]) -> None:
        write_csv_atomic(
            out / "ki67.csv",
            ["id", "positive", "negative", "index"],
            [
                [r["id"], r[POSITIVE], r[NEGATIVE], format_index(r["index"])]
                for r in ki67_table(rows)
            ],
        )

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
