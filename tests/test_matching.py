"""Point and instance matching: hand-computed cases, an independent solver, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from cellmaps.metrics import (
    detection_counts,
    match_hungarian,
    match_iou,
    match_one_to_one,
    match_points,
)


def pts(*rc):
    return np.array(rc, dtype=float).reshape(-1, 2)


def test_no_predictions_and_no_truth():
    m = match_hungarian(pts((0, 0), (5, 5)), pts(), 6)
    assert (m.tp, m.fp, m.fn) == (0, 0, 2)
    d = detection_counts(m)
    assert np.isnan(d["precision"]) and d["recall"] == 0 and d["f1"] == 0  # P is 0/0
    assert np.isnan(d["mean_distance"])
    m = match_one_to_one(pts(), pts((1, 1)), 6)
    assert (m.tp, m.fp, m.fn) == (0, 1, 0)
    d = detection_counts(m)
    assert d["precision"] == 0 and np.isnan(d["recall"]) and d["f1"] == 0  # R is 0/0
    d = detection_counts(match_hungarian(pts(), pts(), 6))
    assert np.isnan(d["precision"]) and np.isnan(d["recall"]) and np.isnan(d["f1"])


def test_point_exactly_at_the_radius():
    # KiNet: within the disc of radius r (inclusive); DeepDistance: "less than" the threshold.
    t, p = pts((0, 0)), pts((0, 6))
    assert match_hungarian(t, p, 6).tp == 1
    assert match_one_to_one(t, p, 6).tp == 0
    assert match_one_to_one(t, p, 6.0001).tp == 1
    assert match_hungarian(t, p, 5.9999).tp == 0


def test_duplicate_predictions():
    t, p = pts((0, 0)), pts((1, 0), (1, 0))
    m = match_hungarian(t, p, 6)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    m = match_one_to_one(t, p, 6)  # the truth point has two partners: no unique match
    assert (m.tp, m.fp, m.fn) == (0, 2, 1)


def test_one_prediction_between_two_truths():
    t, p = pts((0, 0), (0, 10)), pts((0, 5))
    m = match_hungarian(t, p, 6)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert m.distance.tolist() == [5.0]
    assert match_one_to_one(t, p, 6).tp == 0


def test_hungarian_beats_greedy_nearest_neighbour():
    # Greedy would pair P1-T2 (distance 1) first and leave one match; the optimum pairs both.
    t = pts((0, 0), (0, 3))
    p = pts((0, 2), (0, 5))
    m = match_hungarian(t, p, 2.5)
    assert m.tp == 2
    assert m.truth_idx.tolist() == [0, 1] and m.pred_idx.tolist() == [0, 1]
    assert m.distance.tolist() == [2.0, 2.0]
    assert match_one_to_one(t, p, 2.5).tp == 0


def test_ties_give_the_same_counts_and_distance():
    t = pts((0, 0), (0, 4))
    p = pts((0, 2), (0, 6))
    m = match_hungarian(t, p, 2)
    assert m.tp == 2 and m.distance.sum() == 4.0


def test_mean_and_sd_of_matched_distances():
    d = detection_counts(match_hungarian(pts((0, 0), (10, 10)), pts((0, 3), (10, 14)), 6))
    assert d["mean_distance"] == 3.5 and d["sd_distance"] == 0.5
    assert d["precision"] == d["recall"] == d["f1"] == 1.0


def test_one_to_one_is_not_monotone_in_the_radius_but_hungarian_is():
    t, p = pts((0, 0), (0, 8)), pts((0, 1), (0, 9))
    assert match_one_to_one(t, p, 5).tp == 2
    assert match_one_to_one(t, p, 10).tp == 0  # every point now has two partners
    assert match_hungarian(t, p, 10).tp == 2


def test_unknown_protocol_and_bad_radius():
    with pytest.raises(ValueError, match="unknown point matching protocol"):
        match_points(pts(), pts(), 5, "greedy")
    with pytest.raises(ValueError, match="radius must be a positive"):
        match_points(pts(), pts(), 0)
    with pytest.raises(ValueError, match="finite"):
        match_points(pts((np.nan, 0)), pts(), 5)


def dense_reference(t, p, r):
    """Independent solver: one dense assignment over all points, forbidden pairs priced out."""
    if len(t) == 0 or len(p) == 0:
        return 0, 0.0
    d = np.linalg.norm(t[:, None, :] - p[None, :, :], axis=-1)
    big = 1e6
    cost = np.where(d <= r, d, big)
    rows, cols = linear_sum_assignment(cost)
    ok = cost[rows, cols] < big
    return int(ok.sum()), float(cost[rows, cols][ok].sum())


coords = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 40)).map(lambda x: (float(x[0]), float(x[1]))),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(coords, coords, st.sampled_from([1.0, 2.5, 4.0, 7.0]))
def test_hungarian_equals_a_dense_assignment(t, p, r):
    t, p = pts(*t), pts(*p)
    m = match_hungarian(t, p, r)
    tp, total = dense_reference(t, p, r)
    assert m.tp == tp
    assert m.distance.sum() == pytest.approx(total, abs=1e-9)
    assert len(set(m.truth_idx)) == m.tp and len(set(m.pred_idx)) == m.tp


@settings(max_examples=100, deadline=None)
@given(coords, coords, st.floats(0.5, 10), st.randoms(use_true_random=False))
def test_invariant_to_point_order_and_hungarian_dominates(t, p, r, rnd):
    t, p = pts(*t), pts(*p)
    it, ip = list(range(len(t))), list(range(len(p)))
    rnd.shuffle(it)
    rnd.shuffle(ip)
    for match in (match_hungarian, match_one_to_one):
        a, b = match(t, p, r), match(t[it], p[ip], r)
        assert a.tp == b.tp
        assert a.distance.sum() == pytest.approx(b.distance.sum())
    assert match_hungarian(t, p, r).tp >= match_one_to_one(t, p, r).tp


@settings(max_examples=100, deadline=None)
@given(coords, coords, st.floats(0.5, 8), st.floats(0, 5))
def test_hungarian_f1_non_decreasing_in_radius(t, p, r, extra):
    t, p = pts(*t), pts(*p)
    f_small = detection_counts(match_hungarian(t, p, r))["f1"]
    f_big = detection_counts(match_hungarian(t, p, r + extra))["f1"]
    if len(t) == len(p) == 0:  # nothing to find, nothing found: F1 is 0/0 at every radius
        assert np.isnan(f_small) and np.isnan(f_big)
    else:
        assert f_big >= f_small


def test_iou_matching_by_hand():
    a = np.zeros((4, 8), np.int32)
    b = np.zeros((4, 8), np.int32)
    a[0:2, 0:2] = 1  # 4 px
    b[0:2, 0:3] = 5  # 6 px, IoU 4/6 with a's object 1
    a[0:2, 4:6] = 2  # 4 px
    b[0:1, 4:6] = 9  # 2 px, IoU 2/4 = 0.5 with a's object 2
    m = match_iou(a, b, 0.5)
    assert m.tp == 2 and m.truth_idx.tolist() == [0, 1] and m.pred_idx.tolist() == [0, 1]
    assert np.allclose(1 - m.distance, [4 / 6, 0.5])
    assert match_iou(a, b, 0.6).tp == 1
    with pytest.raises(ValueError, match="shapes differ"):
        match_iou(a, b[:, :4])
