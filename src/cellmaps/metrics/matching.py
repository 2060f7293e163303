"""Matching detections to annotations: radius one-to-one, Hungarian, and instance IoU.

All functions are pure numpy/scipy. Points are (N, 2) arrays; any consistent coordinate
order works because only Euclidean distances are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

Protocol = Literal["hungarian", "one-to-one", "iou"]
PROTOCOLS: tuple[str, ...] = ("hungarian", "one-to-one", "iou")


@dataclass(frozen=True)
class Matching:
    """A one-to-one matching between ``n_truth`` truth objects and ``n_pred`` predictions.

    ``truth_idx[k]`` is matched to ``pred_idx[k]`` with ``distance[k]`` (point protocols:
    Euclidean distance; ``iou`` protocol: 1 − IoU).
    """

    truth_idx: np.ndarray
    pred_idx: np.ndarray
    distance: np.ndarray
    n_truth: int
    n_pred: int

    @property
    def tp(self) -> int:
        return int(len(self.truth_idx))

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_truth - self.tp


def _empty_matching(n_truth: int, n_pred: int) -> Matching:
    z = np.zeros(0, dtype=np.intp)
    return Matching(z, z.copy(), np.zeros(0), n_truth, n_pred)


def _as_points(p: np.ndarray) -> np.ndarray:
    arr = np.asarray(p, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise ValueError("point coordinates must be finite")
    return arr


def candidate_pairs(
    truth: np.ndarray, pred: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (truth, pred) pairs with distance ≤ ``radius``, found with k-d trees.

    Returns index arrays ``i`` (truth), ``j`` (pred) and the distances ``d``.
    """
    truth, pred = _as_points(truth), _as_points(pred)
    if len(truth) == 0 or len(pred) == 0:
        z = np.zeros(0, dtype=np.intp)
        return z, z.copy(), np.zeros(0)
    sdm = cKDTree(truth).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
    return sdm["i"].astype(np.intp), sdm["j"].astype(np.intp), sdm["v"].astype(np.float64)


def max_cardinality_min_cost_matching(
    i: np.ndarray, j: np.ndarray, cost: np.ndarray, n_truth: int, n_pred: int
) -> Matching:
    """Among the allowed pairs (i, j) with cost ≥ 0, find a matching of maximum size and,
    among those, minimum total cost (the Hungarian algorithm, scipy's linear_sum_assignment).

    The bipartite graph is split into connected components first, so the dense assignment
    problems stay small even for 100k × 100k points; single-pair components are matched
    directly. Within a component, forbidden pairs get a cost larger than any matching's
    total, which makes the optimum maximise the number of allowed pairs first.
    """
    if len(i) == 0:
        return _empty_matching(n_truth, n_pred)
    graph = coo_matrix((np.ones(len(i)), (i, n_truth + j)), shape=(n_truth + n_pred,) * 2)
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[i]
    pairs_per_comp = np.bincount(pair_comp, minlength=comp.max() + 1)
    single = pairs_per_comp[pair_comp] == 1  # a component with one edge is one truth + one pred
    out_i, out_j, out_d = [i[single]], [j[single]], [cost[single]]
    multi = np.flatnonzero(~single)
    if len(multi):
        order = multi[np.argsort(pair_comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(pair_comp[order])) + 1
        for grp in np.split(order, bounds):
            gi, gj, gc = i[grp], j[grp], cost[grp]
            ui, ri = np.unique(gi, return_inverse=True)
            uj, rj = np.unique(gj, return_inverse=True)
            big = (gc.max() + 1.0) * (min(len(ui), len(uj)) + 1)
            dense = np.full((len(ui), len(uj)), big)
            dense[ri, rj] = gc
            rows, cols = linear_sum_assignment(dense)
            ok = dense[rows, cols] < big
            out_i.append(ui[rows[ok]])
            out_j.append(uj[cols[ok]])
            out_d.append(dense[rows[ok], cols[ok]])
    ti, pj, d = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
    order = np.argsort(ti, kind="stable")
    return Matching(ti[order], pj[order], d[order], n_truth, n_pred)


def match_hungarian(truth: np.ndarray, pred: np.ndarray, radius: float) -> Matching:
    """KiNet/MicroNet matching: optimal one-to-one assignment among pairs within ``radius``.

    A detection can match a truth point when their distance is ≤ ``radius`` (the
    "gold-standard region" of KiNet §IV-C is a disc of radius r). The matching has the
    largest possible number of pairs, and among those the smallest total distance.
    """
    truth, pred = _as_points(truth), _as_points(pred)
    i, j, d = candidate_pairs(truth, pred, radius)
    return max_cardinality_min_cost_matching(i, j, d, len(truth), len(pred))


def match_one_to_one(truth: np.ndarray, pred: np.ndarray, radius: float) -> Matching:
    """DeepDistance §4.2 matching: a pair matches only if each is the other's *only*
    partner closer than ``radius`` (strictly less than, as in the paper).
    """
    truth, pred = _as_points(truth), _as_points(pred)
    i, j, d = candidate_pairs(truth, pred, radius)
    close = d < radius
    i, j, d = i[close], j[close], d[close]
    partners_t = np.bincount(i, minlength=len(truth))
    partners_p = np.bincount(j, minlength=len(pred))
    unique = (partners_t[i] == 1) & (partners_p[j] == 1)
    order = np.argsort(i[unique], kind="stable")
    return Matching(i[unique][order], j[unique][order], d[unique][order], len(truth), len(pred))


def label_overlap(truth_mask: np.ndarray, pred_mask: np.ndarray):
    """Pixel overlaps between instances.

    Returns
    -------
    truth_ids, pred_ids : arrays of the object ids present (0 excluded)
    ti, pj, inter : index (into the id arrays) pairs with a non-zero overlap and its size
    truth_area, pred_area : object areas, aligned with the id arrays
    """
    t = np.asarray(truth_mask).ravel()
    p = np.asarray(pred_mask).ravel()
    if t.shape != p.shape:
        raise ValueError(f"mask shapes differ: {truth_mask.shape} vs {pred_mask.shape}")
    truth_ids, t_inv = np.unique(t, return_inverse=True)
    pred_ids, p_inv = np.unique(p, return_inverse=True)
    t_off = 1 if truth_ids.size and truth_ids[0] == 0 else 0
    p_off = 1 if pred_ids.size and pred_ids[0] == 0 else 0
    truth_area = np.bincount(t_inv, minlength=len(truth_ids))[t_off:]
    pred_area = np.bincount(p_inv, minlength=len(pred_ids))[p_off:]
    both = (t != 0) & (p != 0)
    key = (t_inv[both] - t_off).astype(np.int64) * max(len(pred_ids) - p_off, 1) + (
        p_inv[both] - p_off
    )
    pair_keys, inter = np.unique(key, return_counts=True)
    npred = max(len(pred_ids) - p_off, 1)
    return (
        truth_ids[t_off:],
        pred_ids[p_off:],
        (pair_keys // npred).astype(np.intp),
        (pair_keys % npred).astype(np.intp),
        inter.astype(np.int64),
        truth_area.astype(np.int64),
        pred_area.astype(np.int64),
    )


def match_iou(truth_mask: np.ndarray, pred_mask: np.ndarray, tau: float = 0.5) -> Matching:
    """Match instances of two label images when IoU ≥ ``tau`` (default 0.5).

    The matching has the most pairs and, among those, the largest total IoU
    (``distance`` holds 1 − IoU). For tau > 0.5 a pair is unique anyway, since an object
    can overlap at most one other object by more than half of their union.
    Indices refer to the sorted non-zero ids of each mask.
    """
    if not 0 < tau <= 1:
        raise ValueError(f"IoU threshold must be in (0, 1], got {tau}")
    tid, pid, i, j, inter, ta, pa = label_overlap(truth_mask, pred_mask)
    iou = inter / (ta[i] + pa[j] - inter)
    ok = iou >= tau
    return max_cardinality_min_cost_matching(i[ok], j[ok], 1.0 - iou[ok], len(tid), len(pid))


def match_points(
    truth: np.ndarray, pred: np.ndarray, radius: float, protocol: str = "hungarian"
) -> Matching:
    """Match point sets with the named protocol: ``"hungarian"`` or ``"one-to-one"``."""
    if radius <= 0 or not np.isfinite(radius):
        raise ValueError(f"radius must be a positive number, got {radius}")
    if protocol == "hungarian":
        return match_hungarian(truth, pred, radius)
    if protocol == "one-to-one":
        return match_one_to_one(truth, pred, radius)
    raise ValueError(
        f"unknown point matching protocol {protocol!r}; use 'hungarian' or 'one-to-one'"
    )
