"""Classification, PR curve, segmentation and count metrics against hand-computed answers
and, for AJI and Dice, an independently written formulation on real monuseg masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import disk

from cellmaps.io import Dataset
from cellmaps.metrics import (
    aji,
    classification_counts,
    classification_scores,
    concordance_correlation,
    dice,
    instance_scores,
    ki67_index,
    match_hungarian,
    mean_absolute_error,
    object_dice,
    pixel_accuracy,
    pixel_f1,
    pooled_ki67_index,
    pr_auc,
    precision_recall_curve,
)
from tests.conftest import shared_dataset


def pts(*rc):
    return np.array(rc, dtype=float).reshape(-1, 2)


# -- classification (KiNet §IV-C) -------------------------------------------------------------
def test_classification_counts_by_hand():
    truth = pts((0, 0), (0, 20), (0, 40), (0, 60), (0, 80))
    t_lab = np.array(["A", "A", "B", "nucleus", "B"], dtype=object)
    pred = pts((0, 1), (0, 21), (0, 41), (0, 61), (50, 50))
    p_lab = np.array(["A", "B", "B", "A", "A"], dtype=object)
    m = match_hungarian(truth, pred, 5)
    c = classification_counts(m, t_lab, p_lab, ["A", "B"])
    # A: TP 1 (first); FP: pred 1 matched to A-truth labelled B is not A... A-preds are 0, 3, 4;
    # pred 3 sits on an unclassified nucleus (ignored), pred 4 is unmatched → FP_A = 1; FN_A = 1.
    assert c["A"] == {"tp": 1, "fp": 1, "fn": 1}
    # B: preds 1 (truth A → wrong) and 2 (truth B → TP); truth B at (0,80) missed.
    assert c["B"] == {"tp": 1, "fp": 1, "fn": 1}
    s = classification_scores(c)
    assert s["per_class"]["A"]["precision"] == 0.5 and s["per_class"]["A"]["support"] == 2
    assert s["weighted"]["f1"] == pytest.approx(0.5)


def test_weighted_average_uses_truth_share():
    counts = {"A": {"tp": 3, "fp": 0, "fn": 0}, "B": {"tp": 0, "fp": 1, "fn": 1}}
    s = classification_scores(counts)
    assert s["weighted"]["recall"] == pytest.approx(3 / 4 * 1 + 1 / 4 * 0)


# -- precision–recall curve -------------------------------------------------------------------
def test_pr_curve_by_hand():
    truth = [pts((0, 0), (0, 50))]
    pred = [pts((0, 1), (30, 30), (0, 51))]
    score = [np.array([0.9, 0.8, 0.3])]
    c = precision_recall_curve(truth, pred, score, radius=5, thresholds=np.array([0, 0.5, 1.0]))
    assert c["precision"][:2] == pytest.approx([2 / 3, 0.5])
    assert c["recall"] == pytest.approx([1.0, 0.5, 0.0])
    assert c["n_detections"] == [3, 2, 0]
    # area over the two thresholds with detections, flat to recall 0: 0.5*0.5 + 0.5*(0.5+2/3)/2
    assert c["auc"] == pytest.approx(0.25 + 0.5 * (0.5 + 2 / 3) / 2)


def test_pr_auc_of_a_perfect_curve_is_one():
    assert pr_auc(np.array([0.2, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)


# -- segmentation -----------------------------------------------------------------------------
def small_case():
    t = np.zeros((6, 6), np.int32)
    p = np.zeros((6, 6), np.int32)
    t[0:2, 0:2] = 1
    t[0:2, 4:6] = 2
    p[0:2, 0:3] = 3
    p[4:5, 4:6] = 4
    return t, p


def test_segmentation_scores_by_hand():
    t, p = small_case()
    assert pixel_accuracy(t, p) == pytest.approx(28 / 36)
    assert pixel_f1(t, p) == dice(t, p) == pytest.approx(0.5)
    assert aji(t, p) == pytest.approx(4 / 12)
    assert object_dice(t, p) == pytest.approx(0.5)
    s = instance_scores(t, p, 0.5)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["cds"] == pytest.approx(0.5) and s["ap"] == pytest.approx(1 / 3)


def test_empty_masks():
    z = np.zeros((4, 4), np.int32)
    one = z.copy()
    one[1, 1] = 1
    both_empty = [aji(z, z), dice(z, z), object_dice(z, z), *instance_scores(z, z).values()]
    assert [k for k, v in instance_scores(z, z).items() if v == v] == ["tp", "fp", "fn"]
    assert all(np.isnan(v) for v in both_empty[:3])  # 0/0: undefined, not a perfect 1.0
    assert aji(one, z) == 0.0 and dice(one, z) == 0.0 and object_dice(z, one) == 0.0


def test_cds_punishes_a_merge_with_fns_and_an_fp():
    t = np.zeros((3, 10), np.int32)
    t[:, 0:3], t[:, 3:6], t[:, 6:9] = 1, 2, 3
    p = (t > 0).astype(np.int32)  # the three cells merged into one
    s = instance_scores(t, p)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 1, 3)
    assert dice(t, p) == 1.0  # ...while the DSC does not notice


# -- independent formulations ------------------------------------------------------------------
def aji_reference(gt, pr):
    """Kumar et al. 2017, Algorithm 1, written object by object with boolean masks."""
    g_ids = [i for i in np.unique(gt) if i]
    s_ids = [j for j in np.unique(pr) if j]
    s_masks = {j: pr == j for j in s_ids}
    c = u = 0
    used = set()
    for i in g_ids:
        g = gt == i
        cand = [j for j in np.unique(pr[g]) if j]
        if not cand:
            u += g.sum()
            continue
        ious = [(g & s_masks[j]).sum() / (g | s_masks[j]).sum() for j in cand]
        j = cand[int(np.argmax(ious))]
        c += (g & s_masks[j]).sum()
        u += (g | s_masks[j]).sum()
        used.add(j)
    u += sum(s_masks[j].sum() for j in s_ids if j not in used)
    return c / u


def object_dice_reference(gt, pr):
    def one_side(a, b):
        total = (a > 0).sum()
        acc = 0.0
        for i in [i for i in np.unique(a) if i]:
            obj = a == i
            cand, counts = np.unique(b[obj], return_counts=True)
            keep = cand != 0
            if not keep.any():
                continue
            j = cand[keep][np.argmax(counts[keep])]
            other = b == j
            acc += obj.sum() / total * 2 * (obj & other).sum() / (obj.sum() + other.sum())
        return acc

    return 0.5 * (one_side(gt, pr) + one_side(pr, gt))


def dice_reference(gt, pr):
    a, b = gt.astype(bool), pr.astype(bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def perturbations(mask):
    """Known perturbations of a label image: erosion, merges, splits, a shift, a dilation."""
    eroded = mask * ndimage.binary_erosion(mask > 0, disk(2))
    merged = mask.copy()
    ids = np.unique(mask)[1:]
    for a, b in zip(ids[::4], ids[1::4], strict=False):
        merged[merged == b] = a
    split = mask.copy()
    for i in ids[::3]:
        rr, cc = np.nonzero(mask == i)
        right = cc > cc.mean()
        split[rr[right], cc[right]] = mask.max() + i
    shifted = np.roll(mask, (3, -2), axis=(0, 1))
    from skimage.segmentation import expand_labels

    return {
        "eroded": eroded,
        "merged": merged,
        "split": split,
        "shifted": shifted,
        "grown": expand_labels(mask, 2),
    }


@pytest.mark.parametrize("image_id", ["TCGA-21-5784-01Z-00-DX1", "TCGA-2Z-A9J9-01A-01-TS1"])
def test_aji_and_dice_match_independent_formulation_on_monuseg(image_id):
    ds = Dataset(shared_dataset("monuseg"))
    mask = ds.mask(image_id)[:256, :256]
    for name, pert in perturbations(mask).items():
        assert aji(mask, pert) == pytest.approx(aji_reference(mask, pert), abs=1e-12), name
        assert dice(mask, pert) == pytest.approx(dice_reference(mask, pert), abs=1e-12), name
        assert object_dice(mask, pert) == pytest.approx(
            object_dice_reference(mask, pert), abs=1e-12
        ), name
    p = perturbations(mask)
    assert aji(mask, mask) == 1.0
    assert aji(mask, p["merged"]) < 1.0 and dice(mask, p["merged"]) == 1.0
    assert instance_scores(mask, p["split"])["fp"] > 0 and aji(mask, p["split"]) < 1.0


# -- counts -----------------------------------------------------------------------------------
def test_ccc_by_hand_and_against_numpy_moments():
    assert concordance_correlation([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert concordance_correlation([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=50), rng.normal(size=50) + 0.3
    cov = np.cov(x, y, bias=True)
    ref = 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (x.mean() - y.mean()) ** 2)
    assert concordance_correlation(x, y) == pytest.approx(ref)
    assert np.isnan(concordance_correlation([1], [1]))
    assert mean_absolute_error([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


def test_ki67_index():
    assert ki67_index(3, 1) == 0.75
    assert np.isnan(ki67_index(0, 0))
    assert np.allclose(ki67_index(np.array([1, 0]), np.array([1, 4])), [0.5, 0.0])
    assert pooled_ki67_index([3, 1], [1, 3]) == 0.5


def test_mean_average_precision_by_hand():
    """Two truth squares; the prediction copies one exactly and covers the other at IoU 90/110
    = 0.82. AP (TP/(TP+FP+FN)) is 1 at the seven thresholds τ = 0.5, 0.55, …, 0.8 and 1/3 at
    0.85, 0.9 and 0.95, so mAP = (7 · 1 + 3 · 1/3) / 10 = 0.8."""
    from cellmaps.metrics.segmentation import mean_average_precision

    truth = np.zeros((30, 30), np.int32)
    truth[0:10, 0:10] = 1
    truth[15:25, 15:25] = 2
    pred = np.zeros_like(truth)
    pred[0:10, 0:10] = 5
    pred[15:25, 16:26] = 9
    assert mean_average_precision(truth, pred) == pytest.approx(0.8)
    assert mean_average_precision(truth, truth) == 1.0
    assert mean_average_precision(truth, pred, taus=[0.5]) == 1.0
    assert mean_average_precision(truth, np.zeros_like(truth)) == 0.0


def test_instance_errors_name_what_became_of_each_cell_by_hand():
    from cellmaps.metrics import instance_errors

    t = np.zeros((40, 60), int)
    p = np.zeros((40, 60), int)
    t[2:8, 2:8], t[2:8, 8:14] = 1, 2  # two touching cells ...
    p[2:8, 2:15] = 1  # ... found as one (IoU 36/78 each): merged
    t[12:18, 2:20] = 3  # one cell ...
    p[12:18, 2:8], p[12:18, 8:14], p[12:18, 14:20] = 2, 3, 4  # ... in three pieces: split
    t[25:30, 2:7] = 4  # nothing there: missed
    t[25:30, 20:25] = 5  # 25 px, 15 of them found inside a 27-px outline: IoU 15/37
    p[25:28, 20:25] = 5
    p[28:31, 25:29] = 5
    t[32:38, 40:46] = 6
    p[32:38, 40:46] = 6  # exact: matched
    p[2:6, 50:54] = 7  # on background: spurious
    got = instance_errors(t, p)
    assert got == {"matched": 1, "merged": 2, "split": 1, "missed": 1, "imprecise": 1,
                   "spurious": 1}  # fmt: skip
    assert instance_errors(t, t) == {"matched": 6, "merged": 0, "split": 0, "missed": 0,
                                     "imprecise": 0, "spurious": 0}  # fmt: skip
