"""Exact h-maxima methods tried before the one cellmaps ships, kept for the ablation in
benchmarks/hmaxima_speed.py (not used by cellmaps).

Union-find max-tree (Berger et al., ICIP 2007), numba: every pixel sorted in decreasing
order (LSD radix sort on the float32 bit pattern, linear time), 8-connected level sets
merged by union-find, then rec(p) = max over the nodes N holding p of
min(level(N), max of the marker over N). Exact, and independent of h, but every step
visits pixels in value order, i.e. in random places of the image: on this CPU it is
memory-latency bound.

Region-wise reconstruction (cellmaps before this version): scikit-image's reconstruction
run on the bounding box of each connected region above the map's minimum that holds
several maxima; regions holding one flat maximum answered without reconstruction. Fast
with a flat background, a full reconstruction without one.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage
from skimage.morphology import reconstruction

EIGHT = np.ones((3, 3), dtype=bool)

_DR = np.array([-1, -1, -1, 0, 0, 1, 1, 1], dtype=np.int64)
_DC = np.array([-1, 0, 1, -1, 1, -1, 0, 1], dtype=np.int64)


@numba.njit(cache=True)
def _descending_keys_f32(values):
    bits = values.view(np.uint32)
    keys = np.empty(bits.size, dtype=np.uint32)
    for i in range(bits.size):
        b = bits[i]
        k = (~b) if (b >> np.uint32(31)) else (b | np.uint32(0x80000000))
        keys[i] = ~k
    return keys


@numba.njit(cache=True)
def _radix_argsort_u32(keys):
    n = keys.size
    order = np.arange(n)
    tmp = np.empty(n, dtype=np.int64)
    for shift in range(0, 32, 8):
        count = np.zeros(257, dtype=np.int64)
        for i in range(n):
            count[((keys[i] >> np.uint32(shift)) & np.uint32(255)) + 1] += 1
        for b in range(256):
            count[b + 1] += count[b]
        for i in range(n):
            p = order[i]
            b = (keys[p] >> np.uint32(shift)) & np.uint32(255)
            tmp[count[b]] = p
            count[b] += 1
        order, tmp = tmp, order
    return order


@numba.njit(cache=True)
def _find_root(zpar, p):
    root = p
    while zpar[root] != root:
        root = zpar[root]
    while zpar[p] != root:
        nxt = zpar[p]
        zpar[p] = root
        p = nxt
    return root


@numba.njit(cache=True)
def _max_tree(f, order):
    h, w = f.shape
    n = h * w
    ff = f.ravel()
    parent = np.empty(n, dtype=np.int64)
    zpar = np.full(n, -1, dtype=np.int64)
    for k in range(n):
        p = order[k]
        parent[p] = p
        zpar[p] = p
        r, c = p // w, p % w
        for j in range(8):
            rr, cc = r + _DR[j], c + _DC[j]
            if rr < 0 or rr >= h or cc < 0 or cc >= w:
                continue
            q = rr * w + cc
            if zpar[q] < 0:
                continue
            root = _find_root(zpar, q)
            if root != p:
                parent[root] = p
                zpar[root] = p
    for k in range(n - 1, -1, -1):
        p = order[k]
        q = parent[p]
        if ff[parent[q]] == ff[q]:
            parent[p] = parent[q]
    return parent


@numba.njit(cache=True)
def _reconstruct(f, g, order, parent):
    ff, gg = f.ravel(), g.ravel()
    n = ff.size
    gmax = gg.copy()
    for k in range(n):
        p = order[k]
        q = parent[p]
        if q != p and gmax[p] > gmax[q]:
            gmax[q] = gmax[p]
    rec = np.empty(n, dtype=ff.dtype)
    for k in range(n - 1, -1, -1):
        p = order[k]
        q = parent[p]
        if ff[q] == ff[p] and q != p:
            rec[p] = rec[q]
            continue
        v = min(ff[p], gmax[p])
        if q != p and rec[q] > v:
            v = rec[q]
        rec[p] = v
    return rec.reshape(f.shape)


def max_tree_h_maxima_mask(image: np.ndarray, h: float) -> np.ndarray:
    """h-maxima mask (as scikit-image's) from the union-find max-tree; float32 maps."""
    f = np.ascontiguousarray(image, dtype=np.float32)
    if h > np.ptp(f):
        return np.zeros(f.shape, bool)
    marker = f - h - 2 * np.finfo(f.dtype).resolution * np.abs(f)
    order = _radix_argsort_u32(_descending_keys_f32(f.ravel()))
    rec = _reconstruct(f, marker, order, _max_tree(f, order))
    return (f - rec) >= h


def regionwise_h_maxima_mask(image: np.ndarray, h: float) -> np.ndarray:
    """Boolean mask equal to ``skimage.morphology.h_maxima(image, h) > 0`` (8-connectivity).

    Integer images are computed in float64 (scikit-image does the same for non-integer h).
    """
    f = np.asarray(image)
    if not np.issubdtype(f.dtype, np.floating):
        f = f.astype(np.float64)
    out = np.zeros(f.shape, dtype=bool)
    if h > np.ptp(f):
        return out
    if h == 0:
        raise ValueError("h = 0 is ambiguous, use local maxima instead")
    res = np.finfo(f.dtype).resolution

    def marker(values: np.ndarray) -> np.ndarray:
        """scikit-image's marker f − h − 2·resolution·|f|, same expression and dtype."""
        resolution = 2 * res * np.abs(values)
        return values - h - resolution

    f_min = f.min()

    # candidates: a superset of every pixel that can end up in the mask (maxima of their
    # 3×3 window up to the float tolerance that the marker's resolution term allows)
    mx = ndimage.maximum_filter(f, footprint=EIGHT, mode="constant", cval=-np.inf)
    fabs_max = max(abs(f_min), abs(f.max()))
    tol = 8 * (2 * res * fabs_max) + 8 * np.spacing(fabs_max)
    cand = f >= mx - tol

    # Work on the candidate pixels only (a few % of the image). The largest marker value of a
    # region sits within the tolerance of the region's maximum, i.e. on a candidate pixel.
    lab, n = ndimage.label(f > f_min, structure=EIGHT)
    idx = np.flatnonzero(cand)
    f_c, lab_c = f.ravel()[idx], lab.ravel()[idx]
    g_c = marker(f_c)
    g_comp = np.full(n + 1, -np.inf, dtype=f.dtype)
    np.maximum.at(g_comp, lab_c, g_c)
    g_bg = marker(np.array([f_min], dtype=f.dtype))[0]  # the same for every f_min pixel
    g_comp[0] = g_bg
    order = np.argsort(g_comp[1:])[::-1] + 1
    top1 = g_comp[order[0]] if n else -np.inf
    top2 = g_comp[order[1]] if n > 1 else -np.inf
    g_out = np.full(n + 1, max(top1, g_bg), dtype=f.dtype)
    if n:
        g_out[order[0]] = max(top2, g_bg)
    outside = np.minimum(g_out, f.dtype.type(f_min))  # min(max g outside K, f_min)

    # candidates on the minimum itself: rec = min(max g, f_min)
    on_min = lab_c == 0
    if on_min.any():
        rec_min = min(max(top1, g_bg), f_min)
        out.ravel()[idx[on_min]] = (f_c[on_min] - rec_min) >= h

    in_u = ~on_min
    cl, nc = ndimage.label(cand & (lab > 0), structure=EIGHT)
    if nc == 0:
        return out
    cl_c = cl.ravel()[idx[in_u]]
    fu, lu = f_c[in_u], lab_c[in_u]
    fmin_c = np.full(nc + 1, np.inf, dtype=f.dtype)
    fmax_c = np.full(nc + 1, -np.inf, dtype=f.dtype)
    np.minimum.at(fmin_c, cl_c, fu)
    np.maximum.at(fmax_c, cl_c, fu)
    comp_of = np.zeros(nc + 1, dtype=np.intp)
    comp_of[cl_c] = lu
    per_comp = np.bincount(comp_of[1:], minlength=n + 1)
    flat_single = (fmin_c == fmax_c) & (per_comp[comp_of] == 1)
    flat_single[0] = False

    # fast path: the region holds one flat maximum → rec = max(max g in K, outside term)
    k = comp_of[flat_single]
    rec_fast = np.maximum(g_comp[k], outside[k])
    keep = np.zeros(nc + 1, dtype=bool)
    keep[np.flatnonzero(flat_single)] = (fmax_c[flat_single] - rec_fast) >= h
    out.ravel()[idx[in_u]] = keep[cl_c]

    # slow path: reconstruct every other region on a small crop. Within a region K only
    # the pixels above L_K = min marker over K's candidates matter: anything a path carries
    # through a pixel at or below L_K is ≤ L_K ≤ g(p) ≤ rec(p) for every candidate p.
    slow = np.ones(nc + 1, dtype=bool)
    slow[0] = False
    slow[flat_single] = False
    slow_comps = np.unique(comp_of[slow])
    if len(slow_comps):
        boxes = ndimage.find_objects(lab)
        level = np.full(n + 1, np.inf, dtype=f.dtype)
        np.minimum.at(level, lab_c[in_u], g_c[in_u])
        floor = f.dtype.type(min(g_c.min(), g_bg, f_min) - abs(h) - 1)
        for kc in slow_comps:
            sl = boxes[kc - 1]
            keep_px = (lab[sl] == kc) & (f[sl] > level[kc])
            rows, cols = np.nonzero(keep_px)
            sub = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            keep_px = keep_px[sub]
            box = (
                slice(sl[0].start + sub[0].start, sl[0].start + sub[0].stop),
                slice(sl[1].start + sub[1].start, sl[1].start + sub[1].stop),
            )
            fb = f[box]
            seed = np.where(keep_px, marker(fb), floor)
            mask = np.where(keep_px, fb, floor)
            rec = np.maximum(reconstruction(seed, mask, method="dilation"), outside[kc])
            test = keep_px & cand[box]
            hit = out[box]
            hit[test] = (fb[test] - rec[test]) >= h
    return out
