"""The Python API's two functions that are not methods of a model: :func:`load_model` (a
bundled model by name, or a file) and :func:`evaluate` (arrays of one image, or folders).
Reached as ``cellmaps.load_model`` and ``cellmaps.evaluate``."""

from __future__ import annotations

import os

import numpy as np

from cellmaps.bundled import resolve_model
from cellmaps.errors import CellmapsInputError
from cellmaps.io.dataset import Dataset
from cellmaps.io.masks import mask_centroids
from cellmaps.metrics import evaluate as evaluate_folders
from cellmaps.metrics import match_points, pool_detection, segmentation_scores
from cellmaps.model import Model, Prediction

__all__ = ["evaluate", "load_model"]


def load_model(name_or_path: str | os.PathLike | Model | None = None) -> Model:
    """A model ready to predict.

    Parameters
    ----------
    name_or_path : a bundled model's name (``cellmaps models`` lists them: ``default``,
        ``ki67``, ``fluo-nuclei``), a model file written by ``cellmaps train``, or a
        :class:`~cellmaps.model.Model` (returned as is). None: the bundled default H&E
        nucleus detector.

    Examples
    --------
    >>> import cellmaps
    >>> m = cellmaps.load_model("fluo-nuclei")
    >>> m.training["modality"], m.can_outline
    ('fluorescence', True)
    """
    return resolve_model(name_or_path)


def _is_points(a: np.ndarray) -> bool:
    """(N, 2) coordinates rather than a label image (label images are wider than 2 px)."""
    return a.ndim == 2 and a.shape[1] == 2


def _as_array(x, want_points: bool) -> np.ndarray:
    if isinstance(x, Prediction):
        if not want_points and x.labels is not None:
            return x.labels
        return x.points.coords
    a = np.asarray(x)
    if a.ndim != 2:
        raise CellmapsInputError(
            f"evaluate takes (N, 2) points (row, col) or an (H, W) label image, got shape {a.shape}"
        )
    return a


def evaluate(
    truth,
    pred,
    *,
    radius: float = 6.0,
    protocol: str = "hungarian",
    iou: float = 0.5,
    **folder_options,
) -> dict:
    """Score predictions against truth: one image given as arrays, or folders.

    Parameters
    ----------
    truth, pred : arrays of one image — (N, 2) points (row, col) or (H, W) instance label
        images (a :class:`~cellmaps.model.Prediction` counts as its label image, else its
        points) — or a dataset folder and a prediction folder (``cellmaps evaluate``'s
        :func:`cellmaps.metrics.evaluate`, which takes ``folder_options`` such as
        ``split``).
    radius : matching radius (px) for points.
    protocol : ``"hungarian"`` or ``"one-to-one"`` point matching.
    iou : IoU threshold of instance matching (label images on both sides).

    Returns
    -------
    dict
        For arrays: ``detection`` (tp, fp, fn, precision, recall, f1, …; label images are
        matched by their centroids) and, with label images on both sides,
        ``segmentation`` (dice, aji, pq, sq, dq, cds, …). For folders, the summary,
        per-group and per-image scores of :func:`cellmaps.metrics.evaluate`.

    Examples
    --------
    >>> import numpy as np, cellmaps
    >>> truth = np.array([[10.0, 10.0], [30.0, 40.0]])
    >>> cellmaps.evaluate(truth, truth + 1.5)["detection"]["f1"]
    1.0
    """
    if isinstance(truth, str | os.PathLike | Dataset):
        return evaluate_folders(truth, pred, protocol=protocol, radius=radius, iou=iou,
                                **folder_options)  # fmt: skip
    if folder_options:
        raise CellmapsInputError(f"{sorted(folder_options)} apply to folders, not to arrays")
    t = _as_array(truth, want_points=False)
    p = _as_array(pred, want_points=_is_points(t))
    out = {}
    if not _is_points(t) and not _is_points(p):
        if t.shape != p.shape:
            raise CellmapsInputError(f"label images differ in shape: {t.shape} vs {p.shape}")
        out["segmentation"] = segmentation_scores(t, p, iou)
    t_pts = t if _is_points(t) else mask_centroids(t)[0]
    p_pts = p if _is_points(p) else mask_centroids(p)[0]
    out["detection"] = pool_detection([match_points(t_pts, p_pts, radius, protocol)])
    return out
