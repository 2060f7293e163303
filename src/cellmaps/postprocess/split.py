"""DeepSplit's post-processing (Torr et al., seeds/deepsplit.md §3.2): cells from the
segmentation and separation maps, holes filled, small objects removed, then a seeded
watershed from cell centres that cuts only along short borders."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.feature import peak_local_max
from skimage.segmentation import relabel_sequential, watershed

from cellmaps.postprocess.components import drop_small_labels, seeded_watershed


def border_lengths(labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Length of the border between every pair of touching labels (a < b, both > 0), in
    pixel edges: the number of 4-neighbour pixel pairs with one pixel in each.

    Written with numpy rather than scikit-image's region adjacency graph, which weighs
    edges by colour, not by border length.
    """
    lab = np.asarray(labels)
    pairs = []
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        lo, hi = np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])
        pairs.append(np.stack([lo, hi], 1))
    allp = np.concatenate(pairs).astype(np.int64)
    if len(allp) == 0:
        return {}
    uniq, counts = np.unique(allp, axis=0, return_counts=True)
    return {(int(p[0]), int(p[1])): int(c) for p, c in zip(uniq, counts, strict=True)}


def merge_long_borders(labels: np.ndarray, max_border: int) -> np.ndarray:
    """Merge every two touching labels whose border is ``max_border`` pixel edges or
    longer (DeepSplit: a cut is kept only along a border below a length criterion, so a
    cell whose inner boundary the watershed found is not cut in half). Labels 1..K."""
    lab = np.asarray(labels).astype(np.int64)
    n = int(lab.max()) + 1
    pairs = [pair for pair, length in border_lengths(lab).items() if length >= max_border]
    pairs = np.array(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    # background (0) never touches a border, so it stays a group of its own
    group = np.where(np.arange(n) == 0, -1, group)
    return relabel_sequential(group[lab] + 1)[0].astype(np.int32)


def fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """``mask`` with its holes (background regions enclosed by it) of at most ``max_hole``
    px filled. With scipy rather than scikit-image's ``remove_small_holes``, whose size
    argument changed meaning between versions."""
    mask = np.asarray(mask, bool)
    holes, n = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if n == 0:
        return mask
    small = np.bincount(holes.ravel()) <= max_hole
    small[0] = False
    return mask | small[holes]


def split_instances(
    segmentation: np.ndarray,
    separation: np.ndarray | None = None,
    threshold: float = 0.5,
    min_size: int = 20,
    max_hole: int = 20,
    seed_distance: int = 5,
    max_border: int | None = 12,
    separation_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Instance mask and centroids from DeepSplit's two maps (§3.2).

    1. Cells = segmentation > ``threshold`` minus separation > ``separation_threshold``
       (default: ``threshold``) — the separation result intersected with the segmentation
       mask: the predicted contact pixels are taken out so touching cells fall apart; holes
       up to ``max_hole`` px filled. (Class-weighted losses bias both probabilities upwards,
       so the thresholds are worth choosing on validation: :func:`cellmaps.tune.tune_split`.)
    2. Seeds at cell centres: maxima of each cell's (8-connected component's) distance
       transform at least ``seed_distance`` px apart; labels grow from them by a watershed
       on the negated distance inside the cells.
    3. Where two grown labels meet along a border of ``max_border`` pixel edges or more they
       are merged back (only short borders — necks between merged cells — are cut);
       ``None`` keeps every cut.
    4. The contact pixels removed in 1 are given back to the nearest cell inside the
       segmentation mask, and objects under ``min_size`` px are removed.

    Parameters
    ----------
    segmentation, separation : (H, W) float
        Probabilities (or binary maps) of cell pixels and of cell-cell contact pixels.

    Returns
    -------
    labels : (H, W) int32, 1..K
    centroids : (K, 2) float64, (row, col)
    """
    seg = np.asarray(segmentation) > threshold
    if seg.ndim != 2:
        raise ValueError(f"segmentation must be 2-D, got shape {seg.shape}")
    cells = seg.copy()
    if separation is not None:
        sep_cut = threshold if separation_threshold is None else separation_threshold
        sep = np.asarray(separation) > sep_cut
        if sep.shape != seg.shape:
            raise ValueError(f"separation {sep.shape} and segmentation {seg.shape} differ")
        cells &= ~sep
    cells = fill_small_holes(cells, max_hole)
    comps, n = ndimage.label(cells, structure=np.ones((3, 3), bool))  # 8-connected
    dist = ndimage.distance_transform_edt(cells)
    if n:
        peaks = peak_local_max(
            dist, min_distance=max(1, int(seed_distance)), labels=comps, exclude_border=False
        )
    else:
        peaks = np.zeros((0, 2), int)
    markers = np.zeros(seg.shape, np.int32)
    markers[peaks[:, 0], peaks[:, 1]] = np.arange(1, len(peaks) + 1)
    # cells without a seed (none in a flat or one-pixel-wide object) keep their component
    grown = seeded_watershed(-dist, markers, cells)
    if max_border is not None:
        grown = merge_long_borders(grown, max_border)
    # give the removed contact pixels (and filled holes) back to the nearest cell in the mask
    full = watershed(ndimage.distance_transform_edt(grown == 0), grown, mask=seg | cells)
    full = drop_small_labels(full, min_size)
    k = int(full.max())
    if k == 0:
        return full, np.zeros((0, 2))
    centroids = np.array(ndimage.center_of_mass(np.ones_like(full), full, range(1, k + 1)))
    return full, centroids.reshape(-1, 2)
