"""Target maps: analytic checks on synthetic shapes, brute-force references, and the same
invariants on real crops from ../shared/data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label, regionprops

from cellmaps.errors import CellmapsInputError
from cellmaps.io import Dataset
from cellmaps.targets import (
    IGNORE_INDEX,
    Annotations,
    available_targets,
    boundary,
    centroid_pixels,
    class_balance_weights,
    cluster_labels,
    filtered_repel,
    foreground,
    inner_distance,
    make_targets,
    outer_distance,
    proximity,
    proximity_per_class,
    repel_code,
    roi_labels,
    separation,
    separation_weights,
    unet_weight_map,
    voronoi_edges,
    voronoi_labels,
)
from tests.conftest import shared_dataset


def disk_mask(shape=(41, 41), centre=(20, 20), radius=12, value=1):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    m = np.zeros(shape, np.int32)
    m[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] = value
    return m


def touching_squares():
    m = np.zeros((30, 40), np.int32)
    m[5:25, 5:20] = 1
    m[5:25, 20:35] = 2
    return m


def brute_outer(mask):
    """Eq. 2 by brute force: for each cell, squared distance to its nearest boundary pixel."""
    out = np.zeros(mask.shape)
    for lab in np.unique(mask)[1:]:
        cell = mask == lab
        padded = np.pad(cell, 1)
        interior = (
            padded[1:-1, 1:-1]
            & padded[:-2, 1:-1]
            & padded[2:, 1:-1]
            & padded[1:-1, :-2]
            & padded[1:-1, 2:]
        )
        bnd = np.argwhere(cell & ~interior)
        pix = np.argwhere(cell)
        d2 = ((pix[:, None, :] - bnd[None, :, :]) ** 2).sum(-1).min(1).astype(float)
        out[cell] = d2 / d2.max() if d2.max() > 0 else 1.0
    return out


# -- DeepDistance ------------------------------------------------------------------------------
def test_inner_distance_is_one_at_the_centroid_and_follows_eq1():
    m = disk_mask()
    d = inner_distance(m, alpha=0.1)
    assert d.dtype == np.float32
    assert d[20, 20] == 1.0 and d.max() == 1.0
    yy, xx = np.mgrid[:41, :41]
    expected = np.where(m > 0, 1 / (1 + 0.1 * ((yy - 20) ** 2 + (xx - 20) ** 2)), 0)
    assert np.allclose(d, expected, atol=1e-6)


def test_inner_distance_uses_the_nearest_centre_of_any_cell():
    m = touching_squares()
    d = inner_distance(m)
    c = centroid_pixels(m)
    pix = np.argwhere(m > 0)
    dist2 = ((pix[:, None, :] - c[None]) ** 2).sum(-1).min(1)
    assert np.allclose(d[m > 0], 1 / (1 + 0.1 * dist2), atol=1e-6)
    assert (d[m == 0] == 0).all()


def thin_l_shape():
    m = np.zeros((20, 20), np.int32)
    m[2:15, 3:5] = 7  # 2 px thick: every pixel is a boundary pixel
    m[13:15, 5:12] = 7
    return m


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "mask", [disk_mask(), touching_squares(), thin_l_shape()], ids=["disk", "squares", "thin"]
)
def test_outer_distance_matches_brute_force_and_peaks_at_one(mask):
    d = outer_distance(mask)
    assert np.allclose(d, brute_outer(mask), atol=1e-6)
    assert d.min() >= 0 and d.max() <= 1
    for lab in np.unique(mask)[1:]:
        assert d[mask == lab].max() == 1.0
    assert (d[mask == 0] == 0).all()


def test_foreground_separates_touching_cells_and_boundary_rings_them():
    m = touching_squares()
    fg = foreground(m, widen=1)
    assert label(fg > 0, connectivity=2).max() == 2
    assert fg[m == 0].sum() == 0
    b = boundary(m, width=1)
    assert (b[m == 0] == 0).all()
    # width 1 = cell pixels with a 4-neighbour outside their own cell
    assert b[5, 10] == 1 and b[15, 19] == 1 and b[15, 20] == 1 and b[15, 12] == 0
    assert ((fg > 0) & (b > 0)).sum() == 0 and ((fg > 0) | (b > 0)).sum() == (m > 0).sum()


# -- DeepSplit --------------------------------------------------------------------------------
def test_separation_only_where_two_instances_meet():
    m = touching_squares()
    m[5:25, 37:39] = 3  # a third cell 2 px away from cell 2 (columns 35, 36 empty)
    s = separation(m, distance=2)
    ys, xs = np.nonzero(s)
    assert len(ys) > 0
    # every separation pixel has two different instances within 2 px
    for y, x in zip(ys, xs, strict=True):
        r0, r1, c0, c1 = (
            max(y - 2, 0),
            min(y + 3, m.shape[0]),
            max(x - 2, 0),
            min(x + 3, m.shape[1]),
        )
        win = m[r0:r1, c0:c1]
        yy, xx = np.mgrid[r0:r1, c0:c1]
        near = win[((yy - y) ** 2 + (xx - x) ** 2 <= 4) & (win > 0)]
        assert len(np.unique(near)) >= 2
    assert s[15, 19] == 1 and s[15, 20] == 1 and s[15, 36] == 1
    assert s[15, 10] == 0 and s[2, 2] == 0
    assert separation(disk_mask()).sum() == 0  # a lone cell has no separation pixels


def test_unet_weight_map_is_largest_in_the_gap_between_cells():
    m = np.zeros((40, 60), np.int32)
    m[10:30, 5:25] = 1
    m[10:30, 29:49] = 2  # gap: columns 25..28
    w = unet_weight_map(m, w0=10, sigma=5)
    wc = class_balance_weights(m)
    assert np.isclose(wc[m > 0].sum(), wc[m == 0].sum(), rtol=1e-5)
    gap = w[10:30, 25:29]
    assert gap.max() == w.max() and gap.min() > w[m == 0][:50].max()
    # printed form: d1 = d2 = 2 at the middle of a 4-px gap (columns 26.5) → exp(-(1.5²+2.5²)/50)
    expected = wc[20, 26] + 10 * np.exp(
        -(2.0**2 + 3.0**2) / 50
    )  # column 26: 2 px to cell 1, 3 to cell 2
    assert w[20, 26] == pytest.approx(expected, rel=1e-5)
    u = unet_weight_map(m, form="unet")
    assert u[20, 26] == pytest.approx(wc[20, 26] + 10 * np.exp(-((2.0 + 3.0) ** 2) / 50), rel=1e-5)
    assert np.allclose(w[m > 0], wc[m > 0])


def test_separation_weights_values():
    m = touching_squares()
    w = separation_weights(m)
    assert np.allclose(np.unique(w), [1.0, 5.0, 22.6])
    assert w[15, 19] == pytest.approx(22.6) and w[15, 10] == 5 and w[0, 0] == 1
    # at the separation target's own distance, the gap weight covers exactly its pixels
    for d in (2.0, 3.0):
        assert np.array_equal(separation_weights(m, distance=d) == 22.6, separation(m, d) > 0)
    assert (separation(m, 3.0) > 0).sum() > (separation(m, 2.0) > 0).sum()


# -- point maps ------------------------------------------------------------------------------
COLLINEAR = np.array([[20.0, 10.0], [20.0, 30.0], [20.0, 50.0]])


def test_proximity_is_one_at_points_zero_beyond_d_and_follows_eq1():
    p = proximity(COLLINEAR, (40, 61), alpha=3, d=15)
    assert p.dtype == np.float32
    assert (p[20, [10, 30, 50]] == 1.0).all()
    yy, xx = np.mgrid[:40, :61]
    dist = np.min([np.hypot(yy - r, xx - c) for r, c in COLLINEAR], axis=0)
    expected = np.where(dist <= 15, (np.exp(3 * (1 - dist / 15)) - 1) / (np.exp(3) - 1), 0)
    assert np.allclose(p, expected, atol=1e-6)
    assert (p[dist > 15] == 0).all()
    assert proximity(COLLINEAR, (40, 61), scale=5).max() == pytest.approx(5.0)


def test_proximity_per_class_puts_each_point_in_its_channel():
    labels = ["a", "b", "nucleus"]
    p = proximity_per_class(COLLINEAR, labels, ["a", "b"], (40, 61))
    assert p.shape == (2, 40, 61)
    assert p[0, 20, 10] == 1 and p[0, 20, 30] == 0 and p[1, 20, 30] == 1
    assert p[:, 20, 50].max() == 0  # unclassified points are in no channel


def test_repel_code_formula_and_faster_decay_near_neighbours():
    shape = (40, 61)
    r = repel_code(COLLINEAR, shape, alpha=0.05, r=70)
    assert (r[20, [10, 30, 50]] == 1.0).all()
    # midline between points 1 and 2 (column 20): d1 = d2 = 10 → 1/(1+2·0.05·10)
    assert r[20, 20] == pytest.approx(1 / (1 + 2 * 0.05 * 10), rel=1e-6)
    # a lone point decays as 1/(1+α·d1)
    lone = repel_code(np.array([[20.0, 30.0]]), shape)
    assert lone[20, 40] == pytest.approx(1 / (1 + 0.05 * 10), rel=1e-6)
    assert r[20, 40] < lone[20, 40]
    far = repel_code(np.array([[0.0, 0.0]]), (100, 100), r=70)
    assert far[99, 99] == 0 and far[0, 69] > 0


def test_voronoi_edges_are_equidistant_and_separate_cells():
    rng = np.random.default_rng(3)
    pts = rng.uniform(0, 63, size=(12, 2))
    shape = (64, 64)
    e = voronoi_edges(pts, shape)
    yy, xx = np.mgrid[:64, :64]
    d = np.sort(np.stack([np.hypot(yy - r, xx - c) for r, c in pts]), axis=0)
    near = np.argmin(np.stack([np.hypot(yy - r, xx - c) for r, c in pts]), axis=0)
    assert (d[1][e] - d[0][e] <= 1.0 + 1e-9).all()
    # every pair of 4-neighbours in different cells has an edge pixel on at least one side
    for a, b in (
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
    ):
        differ = near[a] != near[b]
        assert (e[a][differ] | e[b][differ]).all()
    v = voronoi_labels(pts, shape, point_radius=0)
    assert set(np.unique(v)) <= {0, 1, IGNORE_INDEX}
    rc = np.rint(pts).astype(int)
    assert (v[rc[:, 0], rc[:, 1]] == 1).all()
    assert ((v == 0) == (e & (v != 1))).all()
    assert (v == 1).sum() == len(np.unique(rc, axis=0))


def test_cluster_labels_find_dark_discs_around_points():
    img = np.full((60, 60, 3), 220, np.uint8)
    centres = [(15, 15), (15, 45), (45, 30)]
    truth = np.zeros((60, 60), bool)
    for c in centres:
        truth |= disk_mask((60, 60), c, 6) > 0
    img[truth] = (60, 40, 120)
    lab = cluster_labels(img, np.array(centres, float), k=2)
    assert set(np.unique(lab)) <= {0, 1}
    assert ((lab == 1) == truth).mean() > 0.98
    lab3 = cluster_labels(img, np.array(centres, float), k=3)
    assert (lab3[truth] == 1).mean() > 0.95 and (lab3 == 1).sum() <= truth.sum() * 1.1
    fr = filtered_repel(img, np.array(centres, float), clusters=lab)
    assert (fr[lab != 1] == 0).all() and fr[15, 15] == 1.0


def test_roi_labels_ignore_unannotated_pixels():
    roi = np.array([[0, 1, 2], [2, 0, 1]], np.uint8)
    out = roi_labels(roi)
    assert out.tolist() == [[IGNORE_INDEX, 0, 1], [1, IGNORE_INDEX, 0]]
    with pytest.raises(ValueError, match="integer"):
        roi_labels(roi.astype(float))


def test_ignore_pixels_never_contribute_to_the_masked_loss():
    """cellmaps.losses.masked_cross_entropy on Voronoi labels (with IGNORE_INDEX on the
    boundaries): equal to a numpy partial cross-entropy over the kept pixels, and unchanged
    when the predictions at ignored pixels change arbitrarily."""
    import torch

    from cellmaps.losses import masked_cross_entropy

    rng = np.random.default_rng(0)
    lab = voronoi_labels(COLLINEAR, (40, 61))
    assert (lab == IGNORE_INDEX).any() and (lab != IGNORE_INDEX).any()
    logits = rng.normal(size=(2, 40, 61))

    def loss(lg):
        return float(
            masked_cross_entropy(torch.tensor(lg[None]), torch.tensor(lab[None].astype(np.int64)))
        )

    keep = lab != IGNORE_INDEX
    logp = logits - np.log(np.exp(logits).sum(0, keepdims=True))
    by_hand = -np.take_along_axis(logp, np.where(keep, lab, 0)[None].astype(int), 0)[0][keep]
    assert loss(logits) == pytest.approx(by_hand.mean(), rel=1e-5)
    noisy = logits.copy()
    noisy[:, ~keep] += rng.normal(scale=100, size=(2, int((~keep).sum())))
    assert loss(noisy) == pytest.approx(loss(logits), rel=1e-6)
    noisy[:, keep] += rng.normal(scale=1, size=(2, int(keep.sum())))
    assert loss(noisy) != pytest.approx(loss(logits), rel=1e-3)  # kept pixels do count


def test_missing_annotations_give_a_clear_error():
    a = Annotations(np.zeros((20, 20, 3), np.uint8), points=COLLINEAR[:1] / 3, source="x.png")
    assert "outer_distance" not in available_targets(a) and "proximity" in available_targets(a)
    with pytest.raises(
        CellmapsInputError,
        match="x.png: map 'outer_distance' needs instance masks, but only points exist",
    ):
        make_targets(["outer_distance"], a)
    with pytest.raises(CellmapsInputError, match="unknown target map"):
        make_targets(["nope"], a)


# -- real crops ---------------------------------------------------------------------------------
REAL = [
    ("monuseg", 0, 300),
    ("monuseg", 20, 300),
    ("dsb2018_fluo", 0, 256),
    ("dsb2018_fluo", 100, 256),
    ("usiigaci_phc", 3, 400),
]


@pytest.mark.parametrize("name,index,size", REAL)
def test_invariants_on_real_crops(name, index, size):
    ds = Dataset(shared_dataset(name))
    image_id = ds.ids()[index]
    m = ds.mask(image_id)[:size, :size]
    inner, outer = inner_distance(m), outer_distance(m)
    cents = centroid_pixels(m)
    for region, c in zip(regionprops(m), cents, strict=True):
        cell = m == region.label
        assert outer[cell].max() == 1.0
        assert 0 <= outer[cell].min() and inner[cell].max() <= 1.0
        if m[c[0], c[1]] == region.label:
            assert inner[c[0], c[1]] == 1.0
    assert (inner[m == 0] == 0).all() and (outer[m == 0] == 0).all()
    assert np.allclose(outer, brute_outer(m), atol=1e-6)
    s = separation(m)
    hi = ndimage.maximum_filter(m, size=5)
    lo = ndimage.minimum_filter(np.where(m > 0, m, m.max() + 1), size=5)
    assert (hi[s > 0] != lo[s > 0]).all()  # two instances in every separation pixel's window
    w = unet_weight_map(m)
    if (s > 0).any() and ((s > 0) & (m == 0)).any():
        assert w[(s > 0) & (m == 0)].mean() > w[(s == 0) & (m == 0)].mean()
    pts = np.array([r.centroid for r in regionprops(m)])
    p = proximity(pts, m.shape)
    assert p.max() <= 1.0 and p.max() > 0.8
    # zero exactly beyond d = 15 px of every point (brute-force distance to the points)
    rr, cc = np.mgrid[: m.shape[0], : m.shape[1]]
    nearest = np.min(
        [np.hypot(rr - r, cc - c) for r, c in pts], axis=0
    )  # independent of distance_to_nearest_point
    assert (p[nearest > 15.0 + 1e-6] == 0).all() and (p[nearest < 14.0] > 0).all()
