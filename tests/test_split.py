"""DeepSplit post-processing: border lengths, border-length-limited cuts, separation."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.postprocess.split import border_lengths, merge_long_borders, split_instances


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.int32)
    for i, (r, c) in enumerate(centres, start=1):
        out[((yy - r) ** 2 + (xx - c) ** 2 <= radius**2) & (out == 0)] = i
    return out


def test_border_lengths_count_pixel_edges_by_hand():
    lab = np.zeros((8, 10), np.int32)
    lab[1:6, 1:4] = 1  # 5 rows tall
    lab[1:6, 4:7] = 2  # shares a 5-edge vertical border with 1
    lab[6, 4:7] = 3  # under 2: a 3-edge horizontal border; touches 1 only at a corner
    assert border_lengths(lab) == {(1, 2): 5, (2, 3): 3}
    assert border_lengths(np.zeros((4, 4), np.int32)) == {}
    merged = merge_long_borders(lab, max_border=4)  # 1-2 (5 edges) merge, 2-3 (3) stay cut
    assert merged.max() == 2 and merged[3, 2] == merged[3, 5] != merged[6, 5]


def test_two_touching_discs_are_cut_a_wide_necked_dumbbell_is_not():
    touching = discs((40, 60), [(20, 20), (20, 38)], 10) > 0  # chord ~ 9 px
    lab, cen = split_instances(touching.astype(float), max_border=12)
    assert lab.max() == 2 and len(cen) == 2
    assert lab[20, 20] != lab[20, 38] and ((lab > 0) == touching).all()
    assert np.allclose(sorted(cen[:, 1]), [20, 38], atol=1.5)
    dumbbell = discs((40, 70), [(20, 20), (20, 46)], 10) > 0
    dumbbell[13:27, 20:46] = True  # a neck 14 px wide
    lab, _ = split_instances(dumbbell.astype(float), max_border=12)
    assert lab.max() == 1
    # the same dumbbell with every cut kept is cut (at its neck, into the bulbs and the neck)
    assert split_instances(dumbbell.astype(float), max_border=None)[0].max() >= 2


def test_separation_map_splits_cells_merged_along_a_long_contact():
    truth = discs((40, 60), [(20, 20), (20, 34)], 10)  # chord ~ 14 px: too long to cut
    seg = (truth > 0).astype(float)
    assert split_instances(seg, max_border=12)[0].max() == 1
    sep = np.zeros_like(seg)
    edge = (truth == 1) & (np.roll(truth, -1, 1) == 2)  # the contact line
    sep[np.nonzero(edge)[0], np.nonzero(edge)[1]] = 1.0
    sep[np.nonzero(edge)[0], np.nonzero(edge)[1] + 1] = 1.0
    lab, _ = split_instances(seg, sep, max_border=12)
    assert lab.max() == 2 and ((lab > 0) == (truth > 0)).all()  # contact pixels given back
    from cellmaps.metrics import aji

    assert aji(truth, lab) > 0.9


def test_small_objects_and_holes():
    seg = np.zeros((30, 30))
    seg[5:15, 5:15] = 1
    seg[9, 9] = 0  # a hole
    seg[11:14, 11:14] = 0  # a 9-px hole: larger than max_hole 5, kept
    seg[25:27, 25:27] = 1  # 4 px
    lab, cen = split_instances(seg, min_size=5, max_hole=5)
    assert lab.max() == 1 and lab[9, 9] == 1 and lab[25, 25] == 0 and lab[12, 12] == 0
    rr, cc = np.nonzero(lab)
    assert np.allclose(cen, [[rr.mean(), cc.mean()]])
    with pytest.raises(ValueError, match="differ"):
        split_instances(seg, np.zeros((3, 3)))
    assert split_instances(np.zeros((5, 5)))[0].max() == 0
