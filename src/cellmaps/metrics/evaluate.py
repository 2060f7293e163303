"""``cellmaps evaluate``: score a prediction folder against a dataset folder.

Detection figures in the summary pool TP/FP/FN over all images; segmentation figures in
the summary are means over images. Everything here is numpy/scipy (matplotlib only for
the optional plot).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path
from cellmaps.io.dataset import Dataset
from cellmaps.io.masks import mask_centroids
from cellmaps.io.points import Points
from cellmaps.metrics.counts import (
    concordance_correlation,
    ki67_index,
    mean_absolute_error,
    pooled_ki67_index,
)
from cellmaps.metrics.detection import (
    classification_counts,
    classification_scores,
    detection_counts,
    is_classified,
    nan_mean,
    pool_detection,
    precision_recall_curve,
    sum_class_counts,
)
from cellmaps.metrics.matching import PROTOCOLS, match_iou, match_points
from cellmaps.metrics.segmentation import segmentation_scores

SEGMENTATION_KEYS = (
    "dice", "aji", "pq", "sq", "dq", "object_dice", "cds", "ap", "pixel_accuracy", "pixel_f1"
)  # fmt: skip
KI67_CLASSES = ("positive", "negative")


def _points_of(ds: Dataset, image_id: str, shape, mask) -> Points | None:
    pts = ds.points(image_id, shape)
    if pts is None and mask is not None:
        coords, _ = mask_centroids(mask)
        pts = Points(coords)
    return pts


def _only_labels(pts: Points | None, labels: Sequence[str] | None) -> Points | None:
    """The points whose label is one of ``labels`` (all of them when ``labels`` is None)."""
    if pts is None or labels is None:
        return pts
    keep = np.isin(np.asarray(pts.labels, dtype=object).astype(str), [str(x) for x in labels])
    scores = None if pts.scores is None else pts.scores[keep]
    return Points(pts.coords[keep], pts.labels[keep], scores)


def _as_dataset(d: Dataset | str | os.PathLike) -> Dataset:
    return d if isinstance(d, Dataset) else Dataset(d)


def evaluate(
    truth: Dataset | str | os.PathLike,
    pred: Dataset | str | os.PathLike,
    split: str | None = None,
    group: str | None = None,
    protocol: str = "hungarian",
    radius: float = 6.0,
    iou: float = 0.5,
    progress: bool = False,
    labels: Sequence[str] | None = None,
    strict: bool = False,
) -> dict:
    """Score predictions against truth, image by image, and summarise.

    Parameters
    ----------
    truth, pred : Dataset or folder
        Truth dataset and prediction folder in the dataset layout. Images without a
        prediction (``points/<id>.csv`` or ``masks/<id>.tif``) are left out with a warning
        naming how many (``strict``: refused instead); none at all is an error.
    split, group : str, optional
        Restrict to a split and/or group of the truth's splits.csv.
    protocol : {"hungarian", "one-to-one", "iou"}
        Point matching within ``radius`` px (KiNet/MicroNet or DeepDistance), or instance
        matching at IoU ≥ ``iou`` (needs masks on both sides).
    radius : float
        Matching radius in pixels for the point protocols.
    labels : sequence of str, optional
        Score only points with these labels, on both sides (e.g. ``positive, negative``
        when a Ki67 model also reports the non-tumour nuclei it leaves out of the index).
    strict : bool
        Refuse when any selected image has no prediction.

    Returns
    -------
    dict
        ``summary`` (pooled detection, mean segmentation, counts, classification,
        Ki67, PR curve when predictions carry scores), ``per_group`` and ``per_image``.
    """
    if protocol not in PROTOCOLS:
        raise CellmapsInputError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    truth, pred = _as_dataset(truth), _as_dataset(pred)
    ids = truth.ids(split, group)
    if not ids:
        raise CellmapsInputError("no images selected", truth.root)
    missing = [i for i in ids if i not in pred.all_ids]
    if missing:
        what = (f"no prediction for {len(missing)} of {len(ids)} images (e.g. {missing[:3]}); "
                "expected points/<id>.csv or masks/<id>.tif")  # fmt: skip
        if strict or len(missing) == len(ids):
            raise CellmapsInputError(what, pred.root)
        warnings.warn(f"{pred.root}: {what}; scoring the other {len(ids) - len(missing)} "
                      "(--strict refuses)", stacklevel=2)  # fmt: skip
        ids = [i for i in ids if i not in set(missing)]
    per_image: dict[str, dict] = {}
    present: set[str] = set()  # every label on either side, before --labels filters them
    duplicates: dict[str, int] = {}  # image id → exact duplicate truth points
    matchings, class_counts, pr_data = {}, {}, []
    truth_labels_all: dict[str, np.ndarray] = {}
    pred_labels_all: dict[str, np.ndarray] = {}
    for image_id in tqdm(ids, desc="evaluate", disable=not progress, unit="img"):
        shape = truth.shape(image_id)
        t_mask = truth.mask(image_id, shape)
        p_mask = pred.mask(image_id, shape) if pred.has("mask", image_id) else None
        t_all = _points_of(truth, image_id, shape, t_mask)
        p_all = _points_of(pred, image_id, shape, p_mask)
        for pts in (t_all, p_all):
            if pts is not None:
                present.update(np.unique(pts.labels.astype(str)).tolist())
        if t_all is not None and (n_dup := duplicate_points(t_all.coords)):
            duplicates[image_id] = n_dup
        t_pts = _only_labels(t_all, labels)
        p_pts = _only_labels(p_all, labels)
        if protocol == "iou":
            if t_mask is None or p_mask is None:
                side = "truth" if t_mask is None else "prediction"
                raise CellmapsInputError(
                    f"protocol 'iou' needs masks; the {side} has none for {image_id!r}"
                )
            m = match_iou(t_mask, p_mask, iou)
        else:
            if t_pts is None or p_pts is None:
                side = truth.root if t_pts is None else pred.root
                raise CellmapsInputError(f"no points or mask for image {image_id!r}", side)
            m = match_points(t_pts.coords, p_pts.coords, radius, protocol)
        row = {"n_truth": m.n_truth, "n_pred": m.n_pred, **detection_counts(m)}
        if t_mask is not None and p_mask is not None:
            row.update(segmentation_scores(t_mask, p_mask, iou))
        matchings[image_id] = m
        if protocol != "iou":
            truth_labels_all[image_id] = t_pts.labels
            pred_labels_all[image_id] = p_pts.labels
            if p_pts.scores is not None:
                pr_data.append((t_pts.coords, p_pts.coords, p_pts.scores))
        per_image[image_id] = row

    _check_labels_present(labels, present)
    summary: dict = {
        "n_images": len(ids),
        "n_images_without_prediction": len(missing),
        "protocol": protocol,
        **pool_detection(matchings.values()),
    }
    if duplicates:
        summary["truth_duplicates"] = int(sum(duplicates.values()))
        _warn_duplicates(duplicates)
    summary["radius" if protocol != "iou" else "iou_threshold"] = (
        radius if protocol != "iou" else iou
    )
    seg_rows = [r for r in per_image.values() if "dice" in r]
    if seg_rows:
        summary["n_images_with_masks"] = len(seg_rows)
        for k in SEGMENTATION_KEYS:
            summary[k] = nan_mean(r[k] for r in seg_rows)
    n_t = np.array([per_image[i]["n_truth"] for i in ids])
    n_p = np.array([per_image[i]["n_pred"] for i in ids])
    summary["count_mae"] = mean_absolute_error(n_t, n_p)
    summary["count_ccc"] = concordance_correlation(n_t, n_p)

    classes = _classes(truth_labels_all, pred_labels_all)
    if classes:
        for image_id in ids:
            class_counts[image_id] = classification_counts(
                matchings[image_id], truth_labels_all[image_id], pred_labels_all[image_id], classes
            )
            per_image[image_id]["class_weighted_f1"] = classification_scores(
                class_counts[image_id]
            )["weighted"]["f1"]
        summary["classification"] = classification_scores(sum_class_counts(class_counts.values()))
        if set(KI67_CLASSES) <= set(classes):
            summary["ki67"] = _ki67_summary(ids, per_image, truth_labels_all, pred_labels_all)
    if pr_data and len(pr_data) == len(ids):
        t, p, s = zip(*pr_data, strict=True)
        summary["pr_curve"] = precision_recall_curve(t, p, s, radius, protocol=protocol)
        summary["pr_auc"] = summary["pr_curve"]["auc"]

    per_group: dict[str, dict] = {}
    groups = defaultdict(list)
    for image_id in ids:
        groups[truth.group_of(image_id) or ""].append(image_id)
    if len(groups) > 1:
        for g, members in sorted(groups.items()):
            per_group[g] = {
                "n_images": len(members),
                **pool_detection(matchings[i] for i in members),
            }
            seg = [per_image[i] for i in members if "dice" in per_image[i]]
            for k in SEGMENTATION_KEYS if seg else ():
                per_group[g][k] = nan_mean(r[k] for r in seg)
    notes = undefined_notes(summary)
    if notes:
        summary["notes"] = notes
    return {
        "truth": str(truth.root),
        "pred": str(pred.root),
        "split": split,
        "group": group,
        "summary": summary,
        "per_group": per_group,
        "per_image": per_image,
    }


def duplicate_points(coords: np.ndarray) -> int:
    """How many points repeat an earlier point exactly (the same x and y)."""
    coords = np.asarray(coords)
    return int(len(coords) - len(np.unique(coords, axis=0))) if len(coords) else 0


def _warn_duplicates(duplicates: dict[str, int]) -> None:

    worst = sorted(duplicates, key=duplicates.get, reverse=True)[:3]
    warnings.warn(
        f"{sum(duplicates.values())} truth point(s) in {len(duplicates)} image(s) repeat "
        f"another point exactly (most in {', '.join(f'{i} ({duplicates[i]})' for i in worst)}); "
        "each copy counts as one more object to find, so recall falls — remove the "
        "duplicates from the annotations unless two objects really share a pixel",
        stacklevel=3,
    )


def _check_labels_present(labels: Sequence[str] | None, present: set[str]) -> None:
    """Refuse ``labels`` that appear in neither the truth nor the predictions (a typo would
    otherwise score nothing against nothing)."""
    if labels is None:
        return
    unknown = [str(x) for x in labels if str(x) not in present]
    if unknown:
        raise CellmapsInputError(
            f"label(s) {unknown} are in neither the truth nor the predictions; labels present: "
            f"{sorted(present) or 'none'}"
        )


def undefined_notes(summary: dict) -> list[str]:
    """A note for each pooled detection figure that is undefined (a 0/0, reported as
    NaN / null rather than 1.0)."""
    why = {
        "precision": "nothing was detected (TP + FP = 0)",
        "recall": "there was nothing to find (TP + FN = 0)",
        "f1": "there was nothing to find and nothing was detected",
    }
    return [
        f"{k} is undefined: {reason}"
        for k, reason in why.items()
        if isinstance(summary.get(k), float) and math.isnan(summary[k])
    ]


def _classes(truth_labels: dict, pred_labels: dict) -> list[str]:
    """Class names to score: classified labels present in the truth, if the predictions
    carry classified labels too (a plain detector's 'nucleus' labels are not classes)."""
    t = {str(x) for v in truth_labels.values() for x in v[is_classified(v)]}
    p = {str(x) for v in pred_labels.values() for x in v[is_classified(v)]}
    return sorted(t | p) if t and p else []


def _ki67_summary(ids, per_image, truth_labels, pred_labels) -> dict:
    counts = {}
    for side, labels in (("truth", truth_labels), ("pred", pred_labels)):
        pos = np.array([np.sum(labels[i] == "positive") for i in ids])
        neg = np.array([np.sum(labels[i] == "negative") for i in ids])
        counts[side] = (pos, neg, ki67_index(pos, neg))
    for k, i in enumerate(ids):
        per_image[i]["ki67_truth"] = float(counts["truth"][2][k])
        per_image[i]["ki67_pred"] = float(counts["pred"][2][k])
    t_idx, p_idx = counts["truth"][2], counts["pred"][2]
    ok = np.isfinite(t_idx) & np.isfinite(p_idx)
    return {
        "index_mae": mean_absolute_error(t_idx[ok], p_idx[ok]),
        "index_ccc": concordance_correlation(t_idx[ok], p_idx[ok]),
        "pooled_truth": pooled_ki67_index(*counts["truth"][:2]),
        "pooled_pred": pooled_ki67_index(*counts["pred"][:2]),
        "n_images_scored": int(ok.sum()),
    }


def json_ready(obj):
    """Replace NaN/inf by None and numpy scalars by Python numbers, recursively; any mapping
    (e.g. a model's :class:`~cellmaps.postprocess.decode.DecodeParams`) becomes a dict."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _table(rows: list[tuple[str, dict]], keys: list[str], first: str) -> list[str]:
    widths = [max(len(first), *(len(r[0]) for r in rows))] + [max(9, len(k)) for k in keys]
    head = "  ".join(
        [first.ljust(widths[0])] + [k.rjust(w) for k, w in zip(keys, widths[1:], strict=True)]
    )
    lines = [head, "-" * len(head)]
    for name, row in rows:
        cells = [_fmt(row.get(k)).rjust(w) for k, w in zip(keys, widths[1:], strict=True)]
        lines.append("  ".join([name.ljust(widths[0])] + cells))
    return lines


def format_table(result: dict) -> str:
    """A plain-text report of :func:`evaluate`'s result."""
    s = result["summary"]
    where = f"radius {s['radius']} px" if "radius" in s else f"IoU ≥ {s['iou_threshold']}"
    lines = [
        f"truth {result['truth']}  pred {result['pred']}  split {result['split'] or 'all'}"
        f"  images {s['n_images']}  protocol {s['protocol']} ({where})",
        "",
        "Detection (TP/FP/FN pooled over images):",
    ]
    det_keys = ["tp", "fp", "fn", "precision", "recall", "f1", "mean_distance", "sd_distance"]
    rows = [("all", s)] + list(result["per_group"].items())
    lines += _table(rows, det_keys, "group")
    if "dice" in s:
        lines += [
            "",
            f"Segmentation (mean over {s['n_images_with_masks']} images with masks on both sides):",
        ]
        lines += _table(rows, list(SEGMENTATION_KEYS), "group")
    if "classification" in s:
        c = s["classification"]
        lines += ["", "Classification (matched and same label; weighted by truth share):"]
        crow = list(c["per_class"].items()) + [("weighted", c["weighted"])]
        lines += _table(crow, ["support", "tp", "fp", "fn", "precision", "recall", "f1"], "class")
    lines += ["", f"Counts per image: MAE {_fmt(s['count_mae'])}  CCC {_fmt(s['count_ccc'])}"]
    if "ki67" in s:
        k = s["ki67"]
        lines.append(
            f"Ki67 index: per-image MAE {_fmt(k['index_mae'])}  CCC {_fmt(k['index_ccc'])}  "
            f"pooled truth {_fmt(k['pooled_truth'])}  pooled pred {_fmt(k['pooled_pred'])}"
        )
    if "pr_auc" in s:
        lines.append(f"Area under the detection precision-recall curve: {_fmt(s['pr_auc'])}")
    for note in s.get("notes", []):
        lines.append(f"Note: {note} (shown as –).")
    return "\n".join(lines)


def plot_evaluation(result: dict, path: str | os.PathLike) -> None:
    """Save a figure: PR curve (if scores), per-image F1, and truth vs predicted counts."""
    # imported here: matplotlib (Agg backend) is needed only for this plot and slows start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, per = result["summary"], result["per_image"]
    ids = list(per)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    if "pr_curve" in s:
        ax.plot(s["pr_curve"]["recall"], s["pr_curve"]["precision"], "o-")
        ax.set_title(f"Precision–recall (AUC {s['pr_auc']:.3f})")
    else:
        ax.text(0.5, 0.5, "no scores in predictions", ha="center", va="center")
        ax.set_title("Precision–recall")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax = axes[1]
    ax.bar(range(len(ids)), [per[i]["f1"] for i in ids])
    ax.axhline(s["f1"], color="k", ls="--", label=f"pooled F1 {s['f1']:.3f}")
    ax.set_xticks(range(len(ids)), ids, rotation=90, fontsize=6)
    ax.set_ylabel("detection F1")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax = axes[2]
    nt = [per[i]["n_truth"] for i in ids]
    npred = [per[i]["n_pred"] for i in ids]
    ax.scatter(nt, npred)
    top = max(nt + npred + [1])
    ax.plot([0, top], [0, top], "k--", lw=1)
    ax.set_xlabel("truth count")
    ax.set_ylabel("predicted count")
    ccc = s["count_ccc"]
    ax.set_title(f"Counts per image (CCC {_fmt(ccc)}, MAE {_fmt(s['count_mae'])})")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
