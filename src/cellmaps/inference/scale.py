"""Automatic object scale (``--object-size auto``): the input → net factor read from the
image itself, with the trained net (a property of the net, not of the image, so written
here rather than taken from a library).

Each function takes a model (anything with ``predict_maps``, ``predict_maps_many``,
``input_scale``, ``decode``, ``recipe`` and ``train_radius``, i.e. :class:`cellmaps.model.Model`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io.scale import mask_object_radii
from cellmaps.postprocess.decode import split_planes
from cellmaps.postprocess.peaks import decoded_channels
from cellmaps.postprocess.segment import split_probabilities

# input → net factors tried (net objects of 0.2× to 10× the model's training radius in the
# input: 0.6–60 px radius for a 6 px model; wide enough for a 20× model on 80× images and
# back, benchmarks/scale_shift.py), the net px each factor is tried on (a central crop of
# at most AUTO_SCALE_NET_CROP² net px, so every factor costs about the same; factors that
# leave fewer than AUTO_SCALE_MIN_NET net px on a side are skipped: a few dozen net px are
# mostly border) and the percentile of the map that scores each.
AUTO = "auto"
AUTO_SCALE_FACTORS = np.geomspace(0.1, 5.0, 16)
AUTO_SCALE_NET_CROP = 384
AUTO_SCALE_MIN_NET = 128
AUTO_SCALE_PERCENTILE = 99.5

#: factors estimate_split_scale segments at (objects of 0.4× to 4× the model's size)
AUTO_SPLIT_FACTORS = np.geomspace(0.25, 2.5, 7)
AUTO_SPLIT_MIN_OBJECTS = 3  # fewer instances than this say nothing about the scale
AUTO_SPLIT_TOLERANCE = 0.25  # r(f) within ×1.25 of the training radius counts as consistent
AUTO_SPLIT_CROP = 512  # input px at most: the crop every factor is segmented on


def auto_scale_crop(image: np.ndarray, factor: float, max_input: int | None = None) -> np.ndarray:
    """The central crop of ``image`` that gives at most ``AUTO_SCALE_NET_CROP``² net px at
    ``factor`` (and at most ``max_input``² input px when given): every factor an automatic
    scale estimate tries costs about the same."""
    h, w = image.shape[:2]
    side = int(np.ceil(AUTO_SCALE_NET_CROP / factor))
    side = side if max_input is None else min(side, max_input)
    i0, j0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[i0 : i0 + side, j0 : j0 + side]


def best_log_factor(log_factors: np.ndarray, response: np.ndarray) -> float:
    """The log factor of the highest response, refined by the vertex of the parabola through
    it and its two neighbours (kept within half a step; the grid's end when the best is
    there)."""
    k = int(np.nanargmax(response))  # NaN: factors a coarse scan left out
    if k in (0, len(response) - 1):
        return float(log_factors[k])
    y0, y1, y2 = response[k - 1 : k + 2]
    curvature = y0 - 2 * y1 + y2  # < 0: argmax takes the first best, so y0 < y1 >= y2
    step = log_factors[k + 1] - log_factors[k]
    offset = np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5)
    return float(log_factors[k] + offset * step)


def coarse_to_fine(
    n: int,
    respond: Callable[[int], float],
    respond_many: Callable[[list[int]], list[float]] | None = None,
) -> np.ndarray:
    """Responses at grid indices 0 … n − 1, NaN where not computed: every other index and
    the last first, then the neighbours of the best so far until the best has both its
    neighbours computed (a climb: it stops at a local maximum of the grid). Where the
    response has one maximum — or its global maximum stands out of the coarse grid — this
    is the full scan's argmax and its neighbours with about 5/8 of the calls
    (``benchmarks/auto_scale_scan.py`` compares the two on validation images).
    ``respond_many(indices)``, when given, computes the responses asked for at once (the
    coarse grid, then up to two neighbours per step) instead of ``respond`` one by one."""
    ask = respond_many or (lambda idx: [respond(i) for i in idx])
    r = np.full(n, np.nan)
    if n == 0:
        return r
    first = sorted(set(range(0, n, 2)) | {n - 1})
    r[first] = ask(first)
    while True:
        k = int(np.nanargmax(r))
        todo = [j for j in (k - 1, k + 1) if 0 <= j < n and np.isnan(r[j])]
        if not todo:
            break
        r[todo] = ask(todo)
    return r


def scale_response(
    model,
    image: np.ndarray,
    factors: np.ndarray = AUTO_SCALE_FACTORS,
    max_input: int | None = None,
    min_net: int = AUTO_SCALE_MIN_NET,
    statistic: Callable[[np.ndarray], float] | None = None,
    scan: str = "coarse",
) -> tuple[np.ndarray, np.ndarray]:
    """(log factors, response): :func:`estimate_input_scale`'s score at every factor that
    leaves at least ``min_net`` net px on the image's shorter side, each on the central
    crop of :func:`auto_scale_crop`. ``statistic`` scores the decoded map (the maximum over
    its class channels; default its ``AUTO_SCALE_PERCENTILE``-th percentile). ``scan``:
    ``"full"`` predicts at every factor, ``"coarse"`` (default) as :func:`coarse_to_fine`
    does (NaN at the factors it leaves out)."""
    img = np.asarray(image)
    score = statistic or (lambda m: float(np.percentile(m, AUTO_SCALE_PERCENTILE)))
    kept = [float(f) for f in np.asarray(factors, dtype=float) if min(img.shape[:2]) * f >= min_net]

    def respond_many(idx: list[int]) -> list[float]:
        # the crops of several factors have about the same net size: their tiles are
        # stacked into one batch of the net (Model.predict_maps_many)
        crops = [auto_scale_crop(img, kept[i], max_input) for i in idx]
        maps = model.predict_maps_many(crops, [kept[i] for i in idx])
        return [score(decoded_channels(m[model.decode.task], model.decode).max(0)) for m in maps]

    if scan == "full":
        response = np.array(respond_many(list(range(len(kept)))), dtype=float)
    elif scan == "coarse":
        response = coarse_to_fine(len(kept), lambda i: respond_many([i])[0], respond_many)
    else:
        raise ValueError(f"scan must be 'full' or 'coarse', got {scan!r}")
    return np.log(np.asarray(kept)), response


def estimate_input_scale(model, image: np.ndarray) -> float:
    """The input → net factor at which the net's evidence for objects is strongest.

    The decoded map (the decoding task, the maximum over its class channels) is predicted
    on a central crop of the image at the factors of :data:`AUTO_SCALE_FACTORS` (every other
    one, then the neighbours of the best: :func:`coarse_to_fine`); each
    factor is scored by the map's ``AUTO_SCALE_PERCENTILE``-th percentile (the peaks: a net
    trained at one object size answers most strongly where objects have that size), and
    the best factor is refined by a parabola through it and its neighbours in log factor.
    On CRCHisto (20×), MoNuSeg and MBM (40×) validation images it lands within a grid step
    of the factor the annotations give (``benchmarks/auto_scale.py``). Where no factor
    gives evidence above the model's floor (``decode.min_score``: an empty or noise image)
    or the best is at either end of the grid (the scale lies outside it; enlarged noise
    looks like small nuclei), the training-image scale is kept. The estimate is multiplied
    by ``inference.auto_scale_calibration`` (1 unless measured on validation images, see
    ``benchmarks/auto_scale.py --ki67``). Only for models that record the radius they were
    trained at; split-decoding (DeepSplit) models measure their own instances instead
    (:func:`estimate_split_scale`)."""
    if model.train_radius is not None and model.decode.decoder == "split":
        return estimate_split_scale(model, image)
    if model.train_radius is None or model.decode.decoder != "peaks":
        raise CellmapsInputError(
            "--object-size auto needs a peak- or split-decoding model that records the "
            "object size it was trained at; give --object-size in px or --pixel-size"
        )
    return factor_from_response(model, *scale_response(model, image))


def factor_from_response(model, log_factors: np.ndarray, response: np.ndarray) -> float:
    """:func:`estimate_input_scale`'s choice from the responses (NaN: not computed): the
    best factor refined by the parabola through it and its neighbours, times the
    calibration; the training-image factor where the best is below the floor, at either end
    of the grid, or fewer than three factors were tried."""
    k = int(np.nanargmax(response)) if len(response) else 0
    if len(response) < 3 or response[k] < model.decode.min_score or k in (0, len(response) - 1):
        return model.input_scale()
    calibration = model.recipe["inference"]["auto_scale_calibration"]
    return float(np.exp(best_log_factor(log_factors, response))) * calibration


def estimate_split_scale(model, image: np.ndarray) -> float:
    """The input → net factor at which a DeepSplit model's own instances have its training
    radius: on a central crop (:func:`auto_scale_crop`) the instances are segmented at every
    factor f of :data:`AUTO_SPLIT_FACTORS`, and their median equivalent-disc radius in net
    px, r(f), is compared with the training radius R. The smallest factor with r(f) within
    ``AUTO_SPLIT_TOLERANCE`` of R (else the factor closest to it) is corrected once by
    R / r(f), within half a grid step. A scan, not an iteration from the training scale, and
    the smallest consistent factor: a net shown objects far larger than its own fragments
    them into pieces that can have about its size too (an iteration from the training scale
    drove a DSB image of radius-20 nuclei to the grid's end), while at too small a factor
    cells merge, which only makes r(f) larger. Factors with fewer than
    ``AUTO_SPLIT_MIN_OBJECTS`` instances do not count; with none left (an empty image) the
    training-image factor is kept. Cellpose sizes its inputs from its own masks too."""
    img = np.asarray(image)
    net = float(model.train_radius)
    errors = {}
    for f in AUTO_SPLIT_FACTORS:
        f = float(f)
        maps = model.predict_maps(auto_scale_crop(img, f, AUTO_SPLIT_CROP), scale=f)
        seg, sep, px = split_probabilities(model.decode, maps)
        radii = mask_object_radii(split_planes(model.decode, seg, sep, px)[0])
        if len(radii) >= AUTO_SPLIT_MIN_OBJECTS:
            errors[f] = float(np.log(np.median(radii) * f / net))  # r(f) in net px vs R
    if not errors:
        return float(model.input_scale())
    near = [f for f in errors if abs(errors[f]) <= np.log1p(AUTO_SPLIT_TOLERANCE)]
    best = min(near) if near else min(errors, key=lambda f: abs(errors[f]))
    half_step = np.sqrt(AUTO_SPLIT_FACTORS[1] / AUTO_SPLIT_FACTORS[0])
    return float(best * np.clip(np.exp(-errors[best]), 1 / half_step, half_step))
