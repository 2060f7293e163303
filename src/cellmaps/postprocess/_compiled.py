"""Compiled kernels (numba) for decoding: the reconstruction behind h-maxima at candidate
maxima (priority floods), local maxima above a threshold, window standard deviations and
the labelling of sparse plateaus.

Written here rather than taken from a library because each replaces a whole-image sort
or a whole-image pass that the library does: ``scipy.ndimage.maximum`` over labels
argsorts every pixel, and scikit-image's grey-level reconstruction sorts every pixel
with a comparison sort and walks them in Python-level heaps. The kernels are compiled
once and cached on disk (``cache=True``; numba falls back to a per-user folder, or
``NUMBA_CACHE_DIR``, when the package folder is read-only).

Only numpy arrays go in and out; the callers in :mod:`cellmaps.postprocess` keep the
arithmetic that decides the result (scikit-image's marker and residue test) in numpy.
"""

from __future__ import annotations

import numba
import numpy as np

_JIT = {"nopython": True, "cache": True, "nogil": True}

# 8-neighbourhood offsets (row, col)
_DR = np.array([-1, -1, -1, 0, 0, 1, 1, 1], dtype=np.int64)
_DC = np.array([-1, 0, 1, -1, 1, -1, 0, 1], dtype=np.int64)


@numba.jit(**_JIT)
def _before(k1, k2, j1, j2) -> bool:
    """(k1, k2) pops before (j1, j2): larger first key, then larger second key."""
    return k1 > j1 or (k1 == j1 and k2 > j2)


@numba.jit(**_JIT)
def _heap_push(keys, ties, items, size, key, tie, item):
    """Push onto a binary max-heap of (key, tie) pairs stored in ``keys``/``ties``/``items``
    (grown by doubling); returns the arrays and the new size."""
    if size == keys.size:
        k2 = np.empty(2 * keys.size, dtype=keys.dtype)
        t2 = np.empty(2 * ties.size, dtype=ties.dtype)
        i2 = np.empty(2 * items.size, dtype=items.dtype)
        k2[:size] = keys[:size]
        t2[:size] = ties[:size]
        i2[:size] = items[:size]
        keys, ties, items = k2, t2, i2
    i = size
    while i > 0:
        up = (i - 1) // 2
        if not _before(key, tie, keys[up], ties[up]):
            break
        keys[i] = keys[up]
        ties[i] = ties[up]
        items[i] = items[up]
        i = up
    keys[i] = key
    ties[i] = tie
    items[i] = item
    return keys, ties, items, size + 1


@numba.jit(**_JIT)
def _heap_pop(keys, ties, items, size):
    """Pop the first (key, tie) pair of a binary max-heap; returns (key, item, new size)."""
    key, item = keys[0], items[0]
    size -= 1
    last_k, last_t, last_i = keys[size], ties[size], items[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(keys[child + 1], ties[child + 1], keys[child], ties[child]):
            child += 1
        if not _before(keys[child], ties[child], last_k, last_t):
            break
        keys[i] = keys[child]
        ties[i] = ties[child]
        items[i] = items[child]
        i = child
    if size > 0:
        keys[i] = last_k
        ties[i] = last_t
        items[i] = last_i
    return key, item, size


@numba.jit(**_JIT)
def _grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with room for at least n + 1 items (doubled when full)."""
    if n < a.size:
        return a
    b = np.empty(2 * a.size, dtype=a.dtype)
    b[:n] = a[:n]
    return b


@numba.jit(**_JIT)
def _reconstruction_at(f: np.ndarray, g: np.ndarray, starts: np.ndarray, h, budget, top):
    """Reconstruction by dilation of the marker ``g`` ≤ ``f`` under ``f`` (8-connectivity),
    at the pixels ``starts`` only, by a priority flood from each:

        rec(p) = max over q of min(g(q), b(p, q)),

    with b(p, q) the largest, over 8-connected paths, of the smallest f on the path. The
    flood pops pixels in decreasing b (equal b: higher f first, so it climbs toward what
    can raise rec before it spreads over a plateau) and stops as soon as b falls below the
    best value found (nothing further can beat it), or — the mask test
    ``f(p) − rec(p) ≥ h`` being monotone in rec — as soon as the test has failed.

    Work is shared between floods in two ways. Pixels of p's plateau (equal f, reached at
    b = f(p)) have p's reconstruction and take it from p. And every pixel r a flood from p
    popped keeps best(p) as a lower bound of its own reconstruction: pops come in
    decreasing b and stop below best, so b(p, r) ≥ best(p), and a path r → p → q reaches a
    marker at least best(p) high without going below it; a later flood that reaches r at
    bottleneck b takes min(b, bound(r)) as a lower bound too. Starts
    should come highest first: a lower maximum then stops as soon as it touches the region
    a higher one explored, instead of flooding its way to the higher one again.

    The test reads ``top[k]`` for start k (f at the start for the h-maxima mask; a caller
    that wants only lower bounds may stop earlier or later with other values).

    Returns (rec, done): rec for each start, the exact value or — where the test fails —
    a lower bound that already fails it; done is False when the floods popped more than
    ``budget`` pixels in all and stopped there (rec is then incomplete).
    """
    hgt, w = f.shape
    ff, gg = f.ravel(), g.ravel()
    stamp = np.zeros(ff.size, dtype=np.int64)  # flood number that visited each pixel
    known = np.full(ff.size, -1, dtype=np.int64)  # start whose result a pixel shares
    bound = np.full(ff.size, -np.inf, dtype=ff.dtype)  # lower bound of each pixel's rec
    rec = np.empty(starts.size, dtype=ff.dtype)
    keys = np.empty(1024, dtype=ff.dtype)
    ties = np.empty(1024, dtype=ff.dtype)
    items = np.empty(1024, dtype=np.int64)
    members = np.empty(1024, dtype=np.int64)
    popped = np.empty(1024, dtype=np.int64)
    total = 0  # pixels popped by every flood so far
    for k in range(starts.size):
        p = starts[k]
        if known[p] >= 0:
            rec[k] = rec[known[p]]
            continue
        fp, tp = ff[p], top[k]
        best = gg[p]
        failed = (tp - best) < h
        flood = k + 1
        stamp[p] = flood
        size = 0
        keys, ties, items, size = _heap_push(keys, ties, items, size, fp, fp, p)
        n_members = 0
        n_popped = 0
        adopt = -1
        while size > 0 and not failed and adopt < 0:
            b, q, size = _heap_pop(keys, ties, items, size)
            if b < best:
                break
            total += 1
            if total > budget:
                return rec, False
            popped = _grow(popped, n_popped)
            popped[n_popped] = q
            n_popped += 1
            if b == fp and ff[q] == fp:  # p's plateau
                members = _grow(members, n_members)
                members[n_members] = q
                n_members += 1
            v = max(min(gg[q], b), min(bound[q], b))
            if v > best:
                best = v
                if (tp - best) < h:
                    failed = True
                    break
            r, c = q // w, q % w
            for j in range(8):
                rr, cc = r + _DR[j], c + _DC[j]
                if rr < 0 or rr >= hgt or cc < 0 or cc >= w:
                    continue
                nb = rr * w + cc
                if stamp[nb] == flood:
                    continue
                stamp[nb] = flood
                if b == fp and ff[nb] == fp and known[nb] >= 0:
                    adopt = known[nb]  # a plateau-mate already has the answer
                    break
                keys, ties, items, size = _heap_push(
                    keys, ties, items, size, min(b, ff[nb]), ff[nb], nb
                )
        if adopt >= 0:
            best = max(best, rec[adopt])
        rec[k] = best
        for i in range(n_members):
            known[members[i]] = k
        for i in range(n_popped):  # b(p, r) ≥ best for every popped r (see docstring)
            if best > bound[popped[i]]:
                bound[popped[i]] = best
    return rec, True


def reconstruction_at(
    f: np.ndarray,
    g: np.ndarray,
    at: np.ndarray,
    h: float,
    budget: int | None = None,
    top: np.ndarray | None = None,
) -> np.ndarray | None:
    """``skimage.morphology.reconstruction(g, f, method="dilation")`` (3×3 footprint) at
    the flat pixel indices ``at`` of float ``f`` (C order), or where the test
    ``top − rec ≥ h`` fails (``top``: f at ``at`` unless given), a lower bound of it that
    fails the test too. The floods run from the highest start down (see
    :func:`_reconstruction_at`). None when the floods would pop more than ``budget``
    pixels in all (None: no limit)."""
    f = np.ascontiguousarray(f)
    g = np.ascontiguousarray(g, dtype=f.dtype)
    at = np.asarray(at, dtype=np.int64)
    order = np.argsort(-f.ravel()[at], kind="stable")
    top = f.ravel()[at] if top is None else np.asarray(top, dtype=f.dtype)
    rec = np.empty(at.size, dtype=f.dtype)
    limit = np.iinfo(np.int64).max if budget is None else int(budget)
    found, done = _reconstruction_at(
        f, g, at[order], f.dtype.type(h), limit, np.ascontiguousarray(top[order])
    )
    if not done:
        return None
    rec[order] = found
    return rec


@numba.jit(**_JIT)
def near_window_maxima(f: np.ndarray, tol, floor) -> np.ndarray:
    """Mask of the pixels above ``floor`` with ``f ≥ (maximum of the 3×3 window) − tol``
    (window cut at the border): ``(f >= maximum_filter(f, 3, cval=-inf) - tol) & (f > floor)``
    in f's dtype, without the filtered copy of the map (one pass, ~10× faster on 2048²)."""
    h, w = f.shape
    out = np.zeros((h, w), dtype=np.bool_)
    for r in range(h):
        r0, r1 = max(0, r - 1), min(h, r + 2)
        for c in range(w):
            v = f[r, c]
            if not v > floor:
                continue
            c0, c1 = max(0, c - 1), min(w, c + 2)
            mx = v
            for rr in range(r0, r1):
                for cc in range(c0, c1):
                    if f[rr, cc] > mx:
                        mx = f[rr, cc]
            out[r, c] = v >= mx - tol
    return out


@numba.jit(**_JIT)
def _block_extrema(f: np.ndarray, g: np.ndarray, b: int):
    """(largest f, smallest f, largest g) of each b × b block (the last blocks cut at the
    border), in one pass over the pixels (numpy's reshape-and-reduce needs a padded copy
    and a pass per statistic: ~20× slower on a 2048² map)."""
    h, w = f.shape
    hb, wb = -(-h // b), -(-w // b)
    fmax = np.full((hb, wb), -np.inf, dtype=f.dtype)
    fmin = np.full((hb, wb), np.inf, dtype=f.dtype)
    gmax = np.full((hb, wb), -np.inf, dtype=f.dtype)
    for r in range(h):
        rb = r // b
        for c in range(w):
            cb = c // b
            v, u = f[r, c], g[r, c]
            if v > fmax[rb, cb]:
                fmax[rb, cb] = v
            if v < fmin[rb, cb]:
                fmin[rb, cb] = v
            if u > gmax[rb, cb]:
                gmax[rb, cb] = u
    return fmax, fmin, gmax


def decided_on_blocks(
    f: np.ndarray, g: np.ndarray, at: np.ndarray, h, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """(passes, fails): booleans per flat index p in ``at``, True where the residue test
    ``f(p) − rec(p) ≥ h`` is proven to pass (resp. fail) on a grid of ``block`` × ``block``
    blocks, rec being the reconstruction by dilation of g under f (8-connectivity). Starts
    proven neither way are left to the floods on the pixels.

    Upper bound (proves passes): blocks carry the largest f and the largest g of their
    pixels. Every 8-connected path of pixels maps to an 8-connected path of blocks whose
    smallest f is at least the path's, and every marker g(q) to a block marker at least as
    high, so the reconstruction on this grid at p's block (:func:`_reconstruction_at`, b²
    times fewer pixels) is U ≥ rec(p).

    Lower bound (proves fails): blocks carry the smallest f of their pixels and the marker
    min(largest g, smallest f). Two 8-adjacent blocks whose pixels all lie above a level are
    joined by pixels above it, so a path of blocks with smallest f above a level is a path
    of pixels above it (p and q included, their blocks being on it): the reconstruction on
    this grid is L ≤ rec(p).

    Float subtraction is monotone, so ``f(p) − U ≥ h`` proves the test and ``f(p) − L < h``
    disproves it. Where a flood on the blocks stops early (the test failed, or passed, on
    the blocks' own values), its value bounds nothing on the other side: nothing is proven.
    These are the floods that cost most on the pixels: maxima that pass visit their whole
    h-band, and maxima that fail visit all of their hill above the saddle that leads higher.
    """
    at = np.asarray(at, dtype=np.int64)
    w = f.shape[1]
    fmax, fmin, gmax = _block_extrema(f, np.ascontiguousarray(g, dtype=f.dtype), block)
    wb = fmax.shape[1]
    blocks = (at // w) // block * wb + (at % w) // block
    unique, which = np.unique(blocks, return_inverse=True)
    fp = f.ravel()[at]
    # upper bounds: where the test failed on the blocks the flood stopped (not an upper bound)
    upper = reconstruction_at(fmax, gmax, unique, h)
    upper = np.where((fmax.ravel()[unique] - upper) >= h, upper, np.inf)[which]
    # lower bounds: every value the flood found is a lower bound (it stops early only once
    # the test on the blocks' own values failed, with a value found on a path)
    highest = np.full(unique.size, -np.inf, dtype=f.dtype)
    np.maximum.at(highest, which, fp)  # the block's highest start: all fail once it does
    lower = reconstruction_at(fmin, np.minimum(gmax, fmin), unique, h, top=highest)[which]
    return (fp - upper) >= h, (fp - lower) < h


@numba.jit(**_JIT)
def window_maxima_above(f: np.ndarray, thr, radius: int) -> np.ndarray:
    """Mask of the pixels of ``f`` that are > 0, ≥ ``thr`` and equal to the maximum of
    their (2·radius+1)² window (cut at the image border) — ``f == maximum_filter(f,
    mode='constant', cval=-inf)`` restricted to those pixels, but each window is read only
    for pixels above the threshold, and only until a larger value turns up."""
    h, w = f.shape
    out = np.zeros((h, w), dtype=np.bool_)
    for r in range(h):
        r0, r1 = max(0, r - radius), min(h, r + radius + 1)
        for c in range(w):
            v = f[r, c]
            if not (v >= thr and v > 0):
                continue
            c0, c1 = max(0, c - radius), min(w, c + radius + 1)
            ok = True
            for rr in range(r0, r1):
                for cc in range(c0, c1):
                    if f[rr, cc] > v:
                        ok = False
                        break
                if not ok:
                    break
            out[r, c] = ok
    return out


@numba.jit(**_JIT)
def window_std_max(img: np.ndarray, rows: np.ndarray, cols: np.ndarray, window: int) -> np.ndarray:
    """For each (rows[k], cols[k]) of an (H, W, C) image: the largest over channels of the
    standard deviation over the ``window``² square starting ``window // 2`` before it,
    mirrored at the borders as ``np.pad(mode='symmetric')``; sums and sums of squares in
    float64 (image values are normalised to about [0, 1], so E[x²] − E[x]² loses nothing
    that matters at the flat-region floor). Reads only the N windows, without gathering
    them into an array."""
    h, w, nc = img.shape
    half = window // 2
    n_px = window * window
    out = np.zeros(rows.size, dtype=np.float64)
    ri = np.empty(window, dtype=np.int64)
    ci = np.empty(window, dtype=np.int64)
    for k in range(rows.size):
        for i in range(window):
            ri[i] = _symmetric(rows[k] - half + i, h)
            ci[i] = _symmetric(cols[k] - half + i, w)
        best = 0.0
        for ch in range(nc):
            total = 0.0
            squares = 0.0
            for i in range(window):
                for j in range(window):
                    v = np.float64(img[ri[i], ci[j], ch])
                    total += v
                    squares += v * v
            mean = total / n_px
            var = max(squares / n_px - mean * mean, 0.0)
            if var > best:
                best = var
        out[k] = np.sqrt(best)
    return out


@numba.jit(**_JIT)
def _symmetric(i: int, n: int) -> int:
    """Index i of an axis of length n mirrored with the edge repeated (periodic)."""
    k = i % (2 * n)
    if k < 0:
        k += 2 * n
    return k if k < n else 2 * n - 1 - k


@numba.jit(**_JIT)
def _label_sparse(mask: np.ndarray, starts: np.ndarray, values: np.ndarray):
    """8-connected components of ``mask`` reached from ``starts`` (flat indices of the
    mask's pixels in raster order), numbered in raster order of their first pixel, with
    each component's pixel count, row and column sums and maximum of ``values``. Only
    the mask's pixels are visited."""
    h, w = mask.shape
    m = mask.ravel()
    vv = values.ravel()
    seen = np.zeros(h * w, dtype=np.bool_)
    count = np.zeros(starts.size, dtype=np.int64)
    sum_r = np.zeros(starts.size, dtype=np.int64)
    sum_c = np.zeros(starts.size, dtype=np.int64)
    vmax = np.zeros(starts.size, dtype=np.float64)
    stack = np.empty(starts.size, dtype=np.int64)
    n = 0
    for s in starts:
        if seen[s]:
            continue
        seen[s] = True
        top = 0
        stack[0] = s
        best = -np.inf
        while top >= 0:
            p = stack[top]
            top -= 1
            r, c = p // w, p % w
            count[n] += 1
            sum_r[n] += r
            sum_c[n] += c
            if vv[p] > best:
                best = vv[p]
            for j in range(8):
                rr, cc = r + _DR[j], c + _DC[j]
                if rr < 0 or rr >= h or cc < 0 or cc >= w:
                    continue
                q = rr * w + cc
                if m[q] and not seen[q]:
                    seen[q] = True
                    top += 1
                    stack[top] = q
        vmax[n] = best
        n += 1
    return count[:n], sum_r[:n], sum_c[:n], vmax[:n]


def sparse_plateaus(
    mask: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel count, row sum, column sum and maximum of ``values`` of every 8-connected
    component of ``mask``, in raster order of the components' first pixels — in time
    linear in the mask's pixels (plus one scan for them)."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    starts = np.flatnonzero(mask)
    dtype = np.float32 if values.dtype == np.float32 else np.float64
    vals = np.ascontiguousarray(values, dtype=dtype)
    return _label_sparse(mask, starts, vals)
