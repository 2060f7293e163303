"""Segmentation scores for label images: pixel, object and instance-matching metrics.

Both inputs are integer label images of the same shape, 0 = background.
"""

from __future__ import annotations

import numpy as np

from cellmaps.metrics.detection import nan_mean, prf
from cellmaps.metrics.matching import label_overlap, match_iou


def pixel_confusion(truth_mask: np.ndarray, pred_mask: np.ndarray) -> dict[str, int]:
    """Foreground/background pixel counts: tp, fp, fn, tn."""
    t = np.asarray(truth_mask) != 0
    p = np.asarray(pred_mask) != 0
    if t.shape != p.shape:
        raise ValueError(f"mask shapes differ: {t.shape} vs {p.shape}")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(t.size - tp - fp - fn)}


def pixel_accuracy(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Share of pixels whose foreground/background class agrees."""
    c = pixel_confusion(truth_mask, pred_mask)
    n = c["tp"] + c["fp"] + c["fn"] + c["tn"]
    return (c["tp"] + c["tn"]) / n if n else 1.0


def pixel_f1(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """F1 of foreground pixels, 2TP/(2TP+FP+FN); undefined (NaN) when both masks are empty.

    For binary masks this is the same number as the Dice similarity coefficient
    (:func:`dice`); the weakly supervised paper calls it pixel F1, DeepSplit DSC.
    """
    c = pixel_confusion(truth_mask, pred_mask)
    return prf(c["tp"], c["fp"], c["fn"])["f1"]


def dice(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Dice similarity coefficient of the foreground, 2|T∩P|/(|T|+|P|) (DeepSplit's DSC)."""
    return pixel_f1(truth_mask, pred_mask)


def _best_partner_dice(inter, area_a, area_b, ia, ib, n_a):
    """For each object of A: Dice with the object of B it overlaps most (0 if none)."""
    best_inter = np.zeros(n_a, dtype=np.int64)
    best_b = np.full(n_a, -1, dtype=np.intp)
    # sort pairs so that, per object of A, the largest overlap comes last (ties → lowest id of B)
    order = np.lexsort((-ib, inter, ia))
    best_inter[ia[order]] = inter[order]
    best_b[ia[order]] = ib[order]
    d = np.zeros(n_a)
    has = best_b >= 0
    d[has] = 2 * best_inter[has] / (area_a[has] + area_b[best_b[has]])
    return d


def object_dice(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Object-level Dice (Sirinukunwattana et al. 2017; used by Qu et al. 2019):

    D_obj = ½ [ Σ_i γ_i Dice(G_i, S*(G_i)) + Σ_j σ_j Dice(G*(S_j), S_j) ],

    γ_i = |G_i| / Σ|G|, σ_j = |S_j| / Σ|S|, S*(G_i) the predicted object that overlaps G_i
    most (Dice 0 if none) and G*(S_j) likewise. Undefined (NaN) when both masks are empty
    (nothing to find, nothing found), 0 when only one is.
    """
    tid, pid, i, j, inter, ta, pa = label_overlap(truth_mask, pred_mask)
    if len(tid) == 0 and len(pid) == 0:
        return float("nan")
    if len(tid) == 0 or len(pid) == 0:
        return 0.0
    dg = _best_partner_dice(inter, ta, pa, i, j, len(tid))
    ds = _best_partner_dice(inter, pa, ta, j, i, len(pid))
    return float(0.5 * (np.sum(ta * dg) / ta.sum() + np.sum(pa * ds) / pa.sum()))


def aji(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, Algorithm 1).

    For each truth object G_i take the predicted object S_j with the largest IoU; add
    |G_i ∩ S_j| to C and |G_i ∪ S_j| to U (|G_i| alone when it overlaps nothing). Finally
    add the area of every predicted object never chosen to U. AJI = C / U.
    A predicted object may be chosen by several truth objects, as in the original.
    Undefined (NaN) when both masks are empty (0/0).
    """
    tid, pid, i, j, inter, ta, pa = label_overlap(truth_mask, pred_mask)
    if len(tid) == 0 and len(pid) == 0:
        return float("nan")
    iou = inter / (ta[i] + pa[j] - inter)
    best_j = np.full(len(tid), -1, dtype=np.intp)
    best_inter = np.zeros(len(tid), dtype=np.int64)
    order = np.lexsort((-j, iou, i))  # per truth object the largest IoU last (ties → lowest id)
    best_j[i[order]] = j[order]
    best_inter[i[order]] = inter[order]
    has = best_j >= 0
    c = best_inter.sum()
    u = np.sum(ta[has] + pa[best_j[has]] - best_inter[has]) + ta[~has].sum()
    used = np.zeros(len(pid), dtype=bool)
    used[best_j[has]] = True
    u += pa[~used].sum()
    return float(c / u) if u else float("nan")


def instance_scores(truth_mask: np.ndarray, pred_mask: np.ndarray, tau: float = 0.5) -> dict:
    """Instance matching at IoU ≥ tau: TP, FP, FN, P, R, F1 and AP.

    ``cds`` is DeepSplit's cell detection score 2TP/(2TP+FP+FN) (its Eq. 2). DeepSplit
    matches cells "by comparing their position and area"; cellmaps uses IoU ≥ 0.5 for
    that rule, which compares both and can pair each cell with at most one other, so CDS
    equals the instance F1 at τ = 0.5 (an incorrect merge costs two FN and one FP).
    ``ap`` is TP/(TP+FP+FN), the "average precision" at one IoU of the 2018 Data Science Bowl.
    """
    m = match_iou(truth_mask, pred_mask, tau)
    scores = prf(m.tp, m.fp, m.fn)
    denom = m.tp + m.fp + m.fn
    return {
        "tp": m.tp,
        "fp": m.fp,
        "fn": m.fn,
        **scores,
        "cds": scores["f1"],
        "ap": m.tp / denom if denom else float("nan"),
        "mean_iou_matched": float(np.mean(1.0 - m.distance)) if m.tp else float("nan"),
    }


INSTANCE_ERROR_KINDS = ("matched", "merged", "split", "missed", "imprecise")


def instance_errors(truth_mask: np.ndarray, pred_mask: np.ndarray, tau: float = 0.5) -> dict:
    """What became of every true object, for reading an instance score: each is counted
    once, in the first kind that applies —

    - ``matched``: a prediction overlaps it with IoU ≥ ``tau``;
    - ``merged``: the prediction holding most (> ½) of it also holds most of another true
      object (two cells came back as one);
    - ``split``: two or more predictions each lie mostly (> ½ of their own area) inside it;
    - ``missed``: predictions cover less than half of it;
    - ``imprecise``: found, but no outline reaches IoU ``tau``;

    and ``spurious``: predictions lying mostly (> ½) on background.

    >>> t = np.zeros((4, 8), int); t[:, :3], t[:, 4:7] = 1, 2
    >>> p = np.zeros((4, 8), int); p[:, :7] = 1                 # both cells as one
    >>> {k: v for k, v in instance_errors(t, p).items() if v}
    {'merged': 2}
    """
    tid, pid, i, j, inter, ta, pa = label_overlap(truth_mask, pred_mask)
    n_t, n_p = len(tid), len(pid)
    iou = inter / (ta[i] + pa[j] - inter)
    best_iou = np.zeros(n_t)
    np.maximum.at(best_iou, i, iou)
    covered = np.bincount(i, weights=inter, minlength=n_t) / np.maximum(ta, 1)
    # the prediction holding most of each true object, and how many objects each holds so
    host = np.full(n_t, -1)
    mostly_t = inter > 0.5 * ta[i]
    host[i[mostly_t]] = j[mostly_t]
    held = np.bincount(host[host >= 0], minlength=n_p)
    # predictions lying mostly inside one true object, counted per object
    mostly_p = inter > 0.5 * pa[j]
    pieces = np.bincount(i[mostly_p], minlength=n_t)
    on_truth = np.bincount(j, weights=inter, minlength=n_p)
    kind = np.full(n_t, "imprecise", dtype=object)
    kind[covered < 0.5] = "missed"
    kind[pieces >= 2] = "split"
    kind[(host >= 0) & (held[np.maximum(host, 0)] >= 2)] = "merged"
    kind[best_iou >= tau] = "matched"
    out = {k: int(np.count_nonzero(kind == k)) for k in INSTANCE_ERROR_KINDS}
    out["spurious"] = int(np.count_nonzero(on_truth <= 0.5 * pa))
    return out


def cell_detection_score(truth_mask: np.ndarray, pred_mask: np.ndarray, tau: float = 0.5) -> float:
    """DeepSplit's CDS = 2TP/(2TP+FP+FN) with cells matched at IoU ≥ tau (see instance_scores)."""
    return instance_scores(truth_mask, pred_mask, tau)["cds"]


def mean_average_precision(
    truth_mask: np.ndarray, pred_mask: np.ndarray, taus: np.ndarray | None = None
) -> float:
    """Mean of :func:`instance_scores`' AP over IoU thresholds (default 0.5, 0.55, ..., 0.95)."""
    taus = np.arange(0.5, 0.951, 0.05) if taus is None else np.asarray(taus)
    return nan_mean(instance_scores(truth_mask, pred_mask, t)["ap"] for t in taus)


def panoptic_quality(truth_mask: np.ndarray, pred_mask: np.ndarray) -> dict[str, float]:
    """Panoptic Quality of one image's instances (Kirillov et al. 2019, Eq. 1; as HoVer-Net
    reports it for nuclei): objects matched at IoU > 0.5 (a match is then unique),

    SQ = mean IoU of the matched pairs, DQ = TP / (TP + FP/2 + FN/2), PQ = SQ · DQ.

    Both images empty give NaN (nothing to score). A pair at IoU exactly 0.5 is not a match
    (strictly above, as in the paper; :func:`instance_scores` at τ = 0.5 counts it).

    >>> t = np.zeros((4, 8), int); t[:, :4], t[:, 4:] = 1, 2
    >>> p = np.zeros((4, 8), int); p[:, :3] = 1                 # IoU 0.75; object 2 missed
    >>> {k: round(v, 4) for k, v in panoptic_quality(t, p).items()}
    {'pq': 0.5, 'sq': 0.75, 'dq': 0.6667}
    """
    m = match_iou(truth_mask, pred_mask, float(np.nextafter(0.5, 1.0)))
    denom = m.tp + 0.5 * (m.fp + m.fn)
    if denom == 0:
        return {"pq": float("nan"), "sq": float("nan"), "dq": float("nan")}
    sq = float(np.mean(1.0 - m.distance)) if m.tp else 0.0
    dq = m.tp / denom
    return {"pq": sq * dq, "sq": sq, "dq": dq}


def segmentation_scores(truth_mask: np.ndarray, pred_mask: np.ndarray, tau: float = 0.5) -> dict:
    """All segmentation scores for one image pair."""
    inst = instance_scores(truth_mask, pred_mask, tau)
    pq = panoptic_quality(truth_mask, pred_mask)
    return {
        "pq": pq["pq"],
        "sq": pq["sq"],
        "dq": pq["dq"],
        "dice": dice(truth_mask, pred_mask),
        "aji": aji(truth_mask, pred_mask),
        "object_dice": object_dice(truth_mask, pred_mask),
        "cds": inst["cds"],
        "ap": inst["ap"],
        "pixel_accuracy": pixel_accuracy(truth_mask, pred_mask),
        "pixel_f1": pixel_f1(truth_mask, pred_mask),
    }
