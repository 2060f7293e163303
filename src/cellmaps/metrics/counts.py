"""Counting scores: Lin's concordance correlation coefficient, MAE, and the Ki67 index."""

from __future__ import annotations

import os

import numpy as np

from cellmaps.errors import CellmapsInputError

#: the class names a Ki67 model gives tumour nuclei
POSITIVE, NEGATIVE = "positive", "negative"


def concordance_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989):

    ρ_c = 2 s_xy / (s_x² + s_y² + (x̄ − ȳ)²), with population (1/n) moments as in Lin's paper.
    NaN for fewer than two pairs, or when both series are the same constant (0/0).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"need two series of the same length, got {x.size} and {y.size}")
    if x.size < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    sxy = np.mean((x - mx) * (y - my))
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * sxy / denom) if denom > 0 else float("nan")


def mean_absolute_error(x: np.ndarray, y: np.ndarray) -> float:
    """Mean |x − y| (NaN for empty input)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"need two series of the same length, got {x.size} and {y.size}")
    return float(np.abs(x - y).mean()) if x.size else float("nan")


def ki67_index(positive: int | np.ndarray, negative: int | np.ndarray) -> float | np.ndarray:
    """Ki67 labelling index = positive / (positive + negative) tumour nuclei (NaN if none)."""
    p = np.asarray(positive, dtype=np.float64)
    n = np.asarray(negative, dtype=np.float64)
    total = p + n
    with np.errstate(invalid="ignore", divide="ignore"):
        idx = np.where(total > 0, p / np.where(total > 0, total, 1), np.nan)
    return float(idx) if idx.ndim == 0 else idx


def pooled_ki67_index(positive: np.ndarray, negative: np.ndarray) -> float:
    """Pooled index over images: Σ positive / (Σ positive + Σ negative)."""
    return ki67_index(int(np.sum(positive)), int(np.sum(negative)))


def require_ki67_classes(classes: list[str], path: str | os.PathLike | None = None) -> None:
    """Refuse a model whose ``classes`` lack 'positive' or 'negative' (not a Ki67 model),
    naming the file and the classes it does have."""
    if POSITIVE not in classes or NEGATIVE not in classes:
        raise CellmapsInputError(
            f"not a Ki67 model: it must classify nuclei as {POSITIVE!r} and {NEGATIVE!r}, "
            f"but its classes are {list(classes) or 'none (a detector without classes)'}",
            path,
        )


def format_index(value: float) -> str:
    """A Ki67 index as the tables write it: 4 decimals, ``nan`` where undefined."""
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
