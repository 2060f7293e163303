"""Detection and classification scores from a matching (DeepDistance §4.2, KiNet §IV-C)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cellmaps.io.points import UNCLASSIFIED_LABELS
from cellmaps.metrics.matching import Matching, match_points


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision TP/(TP+FP), recall TP/(TP+FN) and F1 = 2TP/(2TP+FP+FN).

    A ratio whose denominator is 0 is undefined and reported as NaN, never as 1 or 0:
    precision when nothing was detected, recall when there was nothing to find, all three
    when both (a score of 1.0 there would read as a perfect result for a run that matched
    nothing, e.g. evaluating a label that exists on neither side).
    """
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else nan
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def nan_mean(values: Iterable[float]) -> float:
    """Mean of the defined (non-NaN) values; NaN when none is defined. Per-image scores are
    undefined on images with nothing to find and nothing found (:func:`prf`), and those
    images say nothing about a model's quality, so means over images leave them out."""
    v = np.asarray(list(values), dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def detection_counts(m: Matching) -> dict[str, float]:
    """TP, FP, FN, P, R, F1 and the mean ± sd (population) distance of matched pairs
    (NaN when nothing matched)."""
    d = m.distance
    return {
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
        **prf(m.tp, m.fp, m.fn),
        "mean_distance": float(d.mean()) if len(d) else float("nan"),
        "sd_distance": float(d.std()) if len(d) else float("nan"),
    }


def pool_detection(matchings: Iterable[Matching]) -> dict[str, float]:
    """Pool TP/FP/FN (and matched distances) over several images, then score."""
    ms = list(matchings)
    tp = sum(m.tp for m in ms)
    fp = sum(m.fp for m in ms)
    fn = sum(m.fn for m in ms)
    d = np.concatenate([m.distance for m in ms]) if ms else np.zeros(0)
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        **prf(tp, fp, fn),
        "mean_distance": float(d.mean()) if len(d) else float("nan"),
        "sd_distance": float(d.std()) if len(d) else float("nan"),
    }


def is_classified(labels: np.ndarray) -> np.ndarray:
    """True where a label names a class (not 'nucleus', 'cell', 'unclassified' or empty)."""
    return np.array([str(lab) not in UNCLASSIFIED_LABELS for lab in labels], dtype=bool)


def classification_counts(
    m: Matching, truth_labels: np.ndarray, pred_labels: np.ndarray, classes: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Per-class TP/FP/FN for detection + classification (KiNet §IV-C, after SC-CNN).

    For class c: TP_c = matched pairs where truth and detection are both labelled c;
    FP_c = detections labelled c that are not TP_c; FN_c = truth objects of class c that
    are not TP_c. Truth objects without a class (label 'nucleus'/'cell') are left out:
    a detection matched to one counts for no class, and they are never false negatives.
    """
    truth_labels = np.asarray(truth_labels, dtype=object)
    pred_labels = np.asarray(pred_labels, dtype=object)
    matched_truth = np.full(m.n_pred, None, dtype=object)
    matched_truth[m.pred_idx] = truth_labels[m.truth_idx]
    unknown_partner = np.zeros(m.n_pred, dtype=bool)
    unknown_partner[m.pred_idx] = ~is_classified(truth_labels[m.truth_idx])
    out = {}
    for c in classes:
        tp = int(np.sum((pred_labels == c) & (matched_truth == c)))
        fp = int(np.sum((pred_labels == c) & ~unknown_partner)) - tp
        fn = int(np.sum(truth_labels == c)) - tp
        out[c] = {"tp": tp, "fp": fp, "fn": fn}
    return out


def classification_scores(
    counts: dict[str, dict[str, int]], support: dict[str, int] | None = None
) -> dict:
    """Per-class P/R/F1 and their average weighted by each class's share of the truth.

    ``support`` is the number of truth objects per class (default TP + FN).
    """
    per_class = {c: {**v, **prf(v["tp"], v["fp"], v["fn"])} for c, v in counts.items()}
    support = support or {c: v["tp"] + v["fn"] for c, v in counts.items()}
    total = sum(support.values())
    weighted = {}
    for key in ("precision", "recall", "f1"):
        weighted[key] = (
            float(sum(per_class[c][key] * support[c] for c in per_class) / total)
            if total
            else float("nan")
        )
    for c in per_class:
        per_class[c]["support"] = int(support[c])
    return {"per_class": per_class, "weighted": weighted}


def sum_class_counts(all_counts: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Add per-class TP/FP/FN over images."""
    total: dict[str, dict[str, int]] = {}
    for counts in all_counts:
        for c, v in counts.items():
            t = total.setdefault(c, {"tp": 0, "fp": 0, "fn": 0})
            for k in t:
                t[k] += v[k]
    return total


def precision_recall_curve(
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    radius: float,
    thresholds: np.ndarray | None = None,
    protocol: str = "hungarian",
) -> dict:
    """Detection precision–recall curve over a score threshold, pooled over images, and its area.

    At each threshold t the detections with score ≥ t are matched again (KiNet varies ξ
    and decodes again; this is the same for score = peak height). Default thresholds are
    0, 0.05, ..., 1 times the largest score (KiNet §IV-C's sweep of ξ).

    The area (``auc``) is the trapezoidal area under precision as a function of recall,
    over the thresholds that keep at least one detection, with the curve held flat from
    its lowest-recall point back to recall 0.
    """
    all_scores = (
        np.concatenate([np.asarray(s, dtype=np.float64) for s in scores]) if scores else np.zeros(0)
    )
    if thresholds is None:
        top = all_scores.max() if all_scores.size else 1.0
        thresholds = np.linspace(0.0, 1.0, 21) * top
    thresholds = np.asarray(thresholds, dtype=np.float64)
    precision, recall, n_det = [], [], []
    for t in thresholds:
        ms = [
            match_points(tr, np.asarray(p).reshape(-1, 2)[np.asarray(s) >= t], radius, protocol)
            for tr, p, s in zip(truths, preds, scores, strict=True)
        ]
        pooled = pool_detection(ms)
        precision.append(pooled["precision"])
        recall.append(pooled["recall"])
        n_det.append(pooled["tp"] + pooled["fp"])
    has = np.array(n_det) > 0  # precision is undefined where nothing is detected
    return {
        "thresholds": thresholds.tolist(),
        "precision": precision,
        "recall": recall,
        "n_detections": n_det,
        "auc": pr_auc(np.array(recall)[has], np.array(precision)[has]),
    }


def pr_auc(recall: np.ndarray, precision: np.ndarray) -> float:
    """Trapezoidal area under a precision–recall curve (flat extension to recall 0)."""
    if len(recall) == 0:
        return float("nan")
    order = np.lexsort((-precision, recall))
    r, p = recall[order], precision[order]
    r = np.concatenate([[0.0], r])
    p = np.concatenate([[p[0]], p])
    return float(np.trapezoid(p, r))
