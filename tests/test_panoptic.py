"""Panoptic Quality (PQ = SQ · DQ) against an independent formulation: every IoU computed
pair by pair with boolean masks, pairs above 0.5 taken as matches (unique by the IoU > 0.5
argument of Kirillov et al. 2019, checked here too)."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.metrics import panoptic_quality, segmentation_scores


def brute_force_pq(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tids = [t for t in np.unique(truth) if t]
    pids = [p for p in np.unique(pred) if p]
    pairs = []
    for t in tids:
        for p in pids:
            a, b = truth == t, pred == p
            iou = (a & b).sum() / (a | b).sum()
            if iou > 0.5:
                pairs.append((t, p, iou))
    assert len({t for t, _, _ in pairs}) == len(pairs) == len({p for _, p, _ in pairs})
    tp = len(pairs)
    fp, fn = len(pids) - tp, len(tids) - tp
    sq = np.mean([x for _, _, x in pairs]) if tp else 0.0
    dq = tp / (tp + fp / 2 + fn / 2)
    return {"pq": sq * dq, "sq": sq, "dq": dq}


def random_discs(rng: np.random.Generator, shape=(96, 96), n=12) -> np.ndarray:
    """Up to ``n`` discs of radius 4–9 at random places (later ones paint over earlier)."""
    out = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(4, 9)
        out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    return out


@pytest.mark.parametrize("seed", range(8))
def test_pq_equals_the_pair_by_pair_formulation(seed):
    """A random instance image against a jittered, partly dropped and partly added copy."""
    rng = np.random.default_rng(seed)
    truth = random_discs(rng)
    pred = np.roll(truth, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    pred[pred == rng.integers(1, 13)] = 0  # one object missed
    extra = random_discs(rng, n=3)
    pred[(extra > 0) & (pred == 0)] = extra[(extra > 0) & (pred == 0)] + 100  # spurious ones
    got, want = panoptic_quality(truth, pred), brute_force_pq(truth, pred)
    assert got == pytest.approx(want)
    assert 0 < got["pq"] < 1


def test_hand_computed_cases():
    t = np.zeros((4, 8), int)
    t[:, :4], t[:, 4:] = 1, 2
    assert panoptic_quality(t, t) == {"pq": 1.0, "sq": 1.0, "dq": 1.0}
    p = np.zeros((4, 8), int)
    p[:, 1:4], p[:, 4:6] = 7, 3  # IoU 3/4, and 2/4: not above ½, so one FP and one FN
    pq = panoptic_quality(t, p)
    assert pq["dq"] == pytest.approx(0.5) and pq["sq"] == pytest.approx(0.75)
    assert segmentation_scores(t, p)["cds"] == pytest.approx(1.0)  # IoU ≥ τ there
    p[:, 4:6] = 0
    p[:, 5:8] = 3  # IoU 3/4 both
    assert panoptic_quality(t, p)["pq"] == pytest.approx(0.75)
    # nothing found: DQ = SQ = PQ = 0; nothing anywhere: undefined
    assert panoptic_quality(t, np.zeros_like(t)) == {"pq": 0.0, "sq": 0.0, "dq": 0.0}
    assert np.isnan(panoptic_quality(np.zeros_like(t), np.zeros_like(t))["pq"])
    assert segmentation_scores(t, p)["pq"] == pytest.approx(0.75)
