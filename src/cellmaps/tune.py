"""Choosing the decoding threshold (ξ, or h) by the best F1 on validation images."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.io.dataset import Dataset
from cellmaps.io.masks import mask_centroids
from cellmaps.metrics import match_points, nan_mean, pool_detection, prf
from cellmaps.metrics.counts import ki67_index, mean_absolute_error, require_ki67_classes
from cellmaps.metrics.segmentation import aji, instance_scores
from cellmaps.postprocess.decode import split_planes
from cellmaps.postprocess.peaks import decoded_channels
from cellmaps.postprocess.segment import split_probabilities

XI_GRID = [round(x, 2) for x in np.arange(0.05, 0.96, 0.05)]
H_GRID = [0.1, 0.2, 0.3, 0.4, 0.5]
AREA_GRID = [5, 10, 20, 40, 80, 120, 160, 240]
MIN_DISTANCE_GRID = [2, 3, 4, 5, 6]
# Evidence floor candidates, as fractions of the median per-image maximum of the decoded map
FLOOR_FRACTIONS = [round(x, 2) for x in np.arange(0.0, 0.81, 0.05)]
# The floor is FLOOR_SAFETY × the highest candidate whose validation F1 is within
# FLOOR_TOLERANCE of the best: the highest such candidate sits where validation detections
# start to be lost, and images of another stain or scanner give weaker maps (the default
# model's peaks on scikit-image's IHC sample: half of them lie below that edge).
FLOOR_TOLERANCE = 0.005
FLOOR_SAFETY = 0.5
#: edge factors of the floor tried by :func:`choose_edge_floor` (√2: what mirroring does to
#: the spread of linearly filtered noise on the edge, see ``edge_floor_factor``)
EDGE_FLOOR_GRID = [1.0, round(2**0.5, 4), 1.7, 2.0, 2.5, 3.0]


def truth_points(ds: Dataset, image_id: str) -> np.ndarray:
    """An image's annotated object centres: its points, else its mask's centroids."""
    pts = ds.points(image_id)
    return pts.coords if pts is not None else mask_centroids(ds.mask(image_id))[0]


def tune_decoding(
    model,
    sources,
    grid=None,
    progress: bool = True,
    min_distances=None,
    object_size: float | None = None,
    pixel_size: float | None = None,
    evidence_floor: bool = True,
    radii: list[float] | None = None,
    object_sizes: list[float | None] | None = None,
    noise_images: list[np.ndarray] | None = None,
) -> dict:
    """Predict the maps of every validation image once, decode them at every value of the
    grid (ξ for peak decoding, h for h-maxima, the area threshold for connected
    components) and, for peak decoding, every minimum peak
    distance in ``min_distances`` (default 2..6 px), match with the recipe's protocol and
    radius, and return the setting with the best pooled F1 (first of ties) and the curve.
    The sweep decodes without an evidence floor; with ``evidence_floor`` the floor is then
    chosen by :func:`choose_evidence_floor` (``min_score`` in the result).
    ``object_size`` / ``pixel_size`` describe the images as in :meth:`Model.predict_maps`.
    ``radii`` gives each source its own matching radius (sources at different
    magnifications, e.g. CRCHisto 20× r 6 and MoNuSeg 40× r 12); default: the recipe's.
    ``object_sizes`` gives each source its own median object radius (px), for models trained
    at a common object scale on sources of several magnifications (each source is then
    resampled as in training); default: ``object_size`` for every source.
    With ``noise_images`` (images with nothing in them) and the floor, the floor's edge
    factor is chosen too (:func:`choose_edge_floor`: ``edge_floor`` in the result)."""
    if radii is not None and len(radii) != len(sources):
        raise CellmapsInputError(f"{len(radii)} radii for {len(sources)} validation sources")
    if object_sizes is not None and len(object_sizes) != len(sources):
        raise CellmapsInputError(
            f"{len(object_sizes)} object sizes for {len(sources)} validation sources"
        )
    kind = model.decode.decoder
    param = {"hmaxima": "h", "components": "min_area", "split": "min_area"}.get(kind, "xi")
    default = {"h": H_GRID, "min_area": AREA_GRID, "xi": XI_GRID}[param]
    grid = grid or model.decode.get("grid") or default
    cached = []
    for k, (root, split) in enumerate(sources):
        radius = model.recipe["evaluate"]["radius"] if radii is None else float(radii[k])
        size = object_size if object_sizes is None else object_sizes[k]
        ds = Dataset(root)
        annotated = [i for i in ds.ids(split) if ds.has("points", i) or ds.has("mask", i)]
        if not annotated:
            raise CellmapsInputError(
                f"no image{f' of split {split!r}' if split else ''} has an annotation (points "
                "or a mask) to tune against",
                root,
            )
        for image_id in tqdm(annotated, desc="tune: predict", disable=not progress, leave=False):
            truth = truth_points(ds, image_id)
            maps = model.predict_maps(ds.image(image_id), object_size=size, pixel_size=pixel_size)
            cached.append((truth, maps, radius))
    if param != "xi":
        min_distances = [model.decode["min_distance"]]
    elif min_distances is None:
        min_distances = MIN_DISTANCE_GRID
    curve = []
    sweep = tqdm(
        total=len(min_distances) * len(grid),
        desc=f"tune: {param} sweep",
        disable=not progress,
        leave=False,
    )
    for md in min_distances:
        with model.decoding(min_distance=int(md)):
            for v in grid:
                value = int(v) if param == "min_area" else float(v)
                scores = pooled_scores(model, cached, **{param: v}, min_score=0.0)
                curve.append({param: value, "min_distance": int(md), **scores})
                sweep.update()
    sweep.close()
    best = max(curve, key=lambda r: r["f1"])
    if not evidence_floor:
        return {**best, "param": param, "curve": curve}
    floor = choose_evidence_floor(model, cached, best, param)
    out = {
        **best,
        "min_score": floor["min_score"],
        "param": param,
        "curve": curve,
        "floor_edge": floor["edge"],
        "floor_curve": floor["curve"],
    }
    if noise_images:
        noise = [model.predict_maps(im) for im in noise_images]
        edge = choose_edge_floor(model, cached, noise, {**best, "min_score": out["min_score"]},
                                 param)  # fmt: skip
        out.update(edge_floor=edge["edge_floor"], edge_curve=edge["curve"])
    return out


def choose_edge_floor(model, cached, noise_maps, best: dict, param: str) -> dict:
    """The floor's factor on the image edge (``decode.edge_floor``): of
    :data:`EDGE_FLOOR_GRID`, those whose pooled validation F1 (at the chosen ξ / h / area,
    peak distance and floor ``best['min_score']``) stays within ``FLOOR_TOLERANCE`` of the
    plain floor's (factor 1), the one leaving the fewest detections on ``noise_maps`` (maps
    of images with nothing in them); the smallest of ties.

    Returns ``edge_floor`` and the curve of (edge_floor, F1, noise detections)."""
    fixed = {param: best[param], "min_score": best["min_score"]}
    curve = []
    with model.decoding(min_distance=int(best["min_distance"])):
        for f in EDGE_FLOOR_GRID:
            with model.decoding(edge_floor=float(f)):
                f1 = pooled_scores(model, cached, **fixed)["f1"]
                found = sum(len(model.decode_maps(m, **fixed)) for m in noise_maps)
            curve.append({"edge_floor": float(f), "f1": f1, "noise_detections": int(found)})
    ok = [c for c in curve if c["f1"] >= curve[0]["f1"] - FLOOR_TOLERANCE]
    chosen = min(ok, key=lambda c: (c["noise_detections"], c["edge_floor"]))
    return {"edge_floor": chosen["edge_floor"], "curve": curve}


def pooled_scores(model, cached, **decode) -> dict:
    """Pooled detection scores over cached (truth coords, maps[, radius]) entries, each map
    decoded by ``model.decode_maps(maps, **decode)`` and matched with the recipe's protocol
    and the entry's radius (the recipe's where it has none)."""
    ev = model.recipe["evaluate"]
    return pool_detection(
        [
            match_points(
                t,
                model.decode_maps(maps, **decode).coords,
                r[0] if r else ev["radius"],
                ev["protocol"],
            )
            for t, maps, *r in cached
        ]
    )


def choose_evidence_floor(model, cached, best: dict, param: str) -> dict:
    """The absolute evidence floor (``decode.min_score``): ``FLOOR_SAFETY`` × the highest
    candidate (the "edge") whose pooled validation F1, at the chosen ξ / h / area and peak
    distance, stays within ``FLOOR_TOLERANCE`` of the best F1 — so it costs nothing on the
    validation images and leaves room for the weaker maps of other stains. Candidates are
    ``FLOOR_FRACTIONS`` of the median per-image maximum of the decoded map.

    ``cached`` holds (truth coords, maps) per validation image. Returns the floor, the edge
    and the curve of (min_score, F1)."""
    task = model.decode["task"]
    top = float(
        np.median(
            [float(np.max(decoded_channels(maps[task], model.decode))) for _, maps, *_ in cached]
        )
    )
    with model.decoding(min_distance=int(best["min_distance"])):
        floors = [max(frac * top, 0.0) for frac in FLOOR_FRACTIONS]
        curve = [
            {
                "min_score": f,
                "f1": pooled_scores(model, cached, **{param: best[param]}, min_score=f)["f1"],
            }
            for f in floors
        ]
    ok = [r for r in curve if r["f1"] >= best["f1"] - FLOOR_TOLERANCE]
    edge = max(r["min_score"] for r in ok) if ok else 0.0
    return {"min_score": FLOOR_SAFETY * edge, "edge": edge, "curve": curve}


#: DeepSplit border-length limits tried (map pixels); None cuts every border
MAX_BORDER_GRID = (4, 8, 12, 16, 24, None)
#: DeepSplit cell / separation probability thresholds tried
SPLIT_THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: DeepSplit watershed seed distances tried (map pixels; the benchmark's cells have a radius
#: of 8): a larger distance cuts fewer elongated cells in two, a smaller one splits more
#: merged pairs
SEED_DISTANCE_GRID = (3, 5, 7, 9, 12)
#: the decode keys :func:`tune_split` chooses, in the order it chooses them
SPLIT_DECODE_KEYS = ("cell_threshold", "separation_threshold", "min_distance", "max_border")


def split_scores(model, cached) -> dict:
    """Cell detection score (CDS = 2TP/(2TP+FP+FN), cells matched at IoU ≥ 0.5, TP/FP/FN
    pooled over the images) and mean AJI of the instances
    :func:`cellmaps.postprocess.decode.split_planes` makes at the model's current decoding,
    over cached (mask, split probabilities) pairs."""
    tp = fp = fn = 0
    ajis = []
    for truth, (seg, sep, scale) in cached:
        labels = split_planes(model.decode, seg, sep, scale)[0]
        m = instance_scores(truth, labels, 0.5)
        tp, fp, fn = tp + m["tp"], fp + m["fp"], fn + m["fn"]
        ajis.append(aji(truth, labels))
    return {"cds": prf(tp, fp, fn)["f1"], "aji": nan_mean(ajis)}


def tune_split(model, sources, grids: dict | None = None, progress: bool = True) -> dict:
    """DeepSplit's post-processing chosen on the masked images of ``sources`` (§3.2): the
    cell threshold, the separation threshold, the watershed seed distance and the
    border-length limit (``decode.cell_threshold``, ``separation_threshold``,
    ``min_distance``, ``max_border``), one after the other in that order (coordinate
    search; each keeps the values chosen before it), each
    by the best cell detection score (ties → AJI) of :func:`split_scores`. Each image's maps
    are predicted once. Sets the chosen values in ``model.decode`` and returns them with
    the curve of every setting tried."""
    if model.decode.get("segment") != "split":
        raise CellmapsInputError(
            "split post-processing is tuned for DeepSplit-style models (decode.segment: split)"
        )
    grids = grids or dict(
        zip(
            SPLIT_DECODE_KEYS,
            (SPLIT_THRESHOLD_GRID, SPLIT_THRESHOLD_GRID, SEED_DISTANCE_GRID, MAX_BORDER_GRID),
            strict=True,
        )
    )
    if not model.decode.get("boundary_task"):
        grids = {k: v for k, v in grids.items() if k != "separation_threshold"}
    cached = []
    for root, split in sources:
        ds = Dataset(root)
        ids = [i for i in ds.ids(split) if ds.has("mask", i)]
        for i in tqdm(ids, desc="tune: split", disable=not progress, leave=False):
            maps = model.predict_maps(ds.image(i))
            cached.append((ds.mask(i), split_probabilities(model.decode, maps)))
    if not cached:
        raise CellmapsInputError(
            "tuning the split post-processing needs images with masks", sources[0][0]
        )
    curve = []
    for key, grid in grids.items():
        rows = []
        for v in grid:
            model.decode = model.decode.replace(**{key: v})
            rows.append({**{k: model.decode.get(k) for k in grids}, **split_scores(model, cached)})
        best = max(rows, key=lambda r: (r["cds"], r["aji"]))
        model.decode = model.decode.replace(**{key: best[key]})
        curve += rows
    return {**{k: model.decode[k] for k in grids}, **split_scores(model, cached), "curve": curve}


DECODE_KEYS = ("xi", "h", "min_area", "min_distance", "min_score", "edge_floor")


def apply_tuning(model, best: dict, sources) -> None:
    """Store a :func:`tune_decoding` result in the model: the tuned decoding parameter and
    minimum peak distance in ``model.decode``, and where it was tuned and its F1 in
    ``model.training`` (``tuned_on``, ``tuned_param``, ``tuned_f1``). The one write-back
    used by ``cellmaps tune``, :func:`cellmaps.training.train` and the benchmarks."""
    model.decode = model.decode.replace(**{k: best[k] for k in DECODE_KEYS if k in best})
    model.training["tuned_on"] = [{"folder": str(r), "split": s} for r, s in sources]
    model.training["tuned_param"] = best["param"]
    model.training["tuned_f1"] = best["f1"]


def score_split(
    model,
    root,
    split: str | None,
    radius: float | None = None,
    protocol: str | None = None,
    object_size: float | None = None,
) -> dict:
    """Pooled detection scores (TP, FP, FN, precision, recall, F1, distances) of ``model``
    on every image of a dataset split, matched by the recipe's protocol and radius unless
    given. Truth is the points, or the mask centroids where an image has no points."""
    ev = model.recipe["evaluate"]
    radius = ev["radius"] if radius is None else radius
    protocol = ev["protocol"] if protocol is None else protocol
    ds = Dataset(root)
    matches = []
    for image_id in ds.ids(split):
        truth = truth_points(ds, image_id)
        found = model.detect(ds.image(image_id), object_size=object_size).coords
        matches.append(match_points(truth, found, radius, protocol))
    return {"n_images": len(matches), **pool_detection(matches)}


#: factors tried for one class's map in the class decision (log-spaced, 1 in the middle)
CLASS_GAIN_GRID = [round(float(x), 3) for x in np.geomspace(0.25, 4.0, 25)]


def index_mae_by_gain(
    model,
    images: list[np.ndarray],
    truths: list[tuple[int, int]],
    cls: str,
    progress: bool = True,
    **detect_options,
) -> dict[float, float]:
    """Per-image Ki67 index MAE for each factor of :data:`CLASS_GAIN_GRID` on class ``cls``'s
    map; ``truths`` holds each image's annotated (positive, negative) counts; ``detect_options``
    (e.g. ``object_size``) go to ``model.detect``."""
    truth = np.array([ki67_index(p, n) for p, n in truths], float)
    before = model.decode.get("class_gain")
    out = {}
    try:
        for g in tqdm(CLASS_GAIN_GRID, desc=f"{cls} gain", disable=not progress):
            model.decode = model.decode.replace(class_gain={cls: g})
            pred = []
            for image in images:
                labels = np.asarray(model.detect(image, **detect_options).labels).astype(str)
                pred.append(ki67_index(np.sum(labels == "positive"), np.sum(labels == "negative")))
            pred = np.asarray(pred, float)
            ok = np.isfinite(truth) & np.isfinite(pred)
            out[g] = mean_absolute_error(truth[ok], pred[ok])
    finally:
        model.decode = model.decode.replace(class_gain=before)
    return out


def tune_class_gain(
    model,
    images: list[np.ndarray],
    truths: list[tuple[int, int]],
    progress: bool = True,
    **detect_options,
) -> dict:
    """Choose the factor on the 'positive' class map (the class decision of a Ki67 model)
    with the lowest per-image index MAE on validation images; ties go to the factor nearest
    1. Sets ``model.decode['class_gain']`` and returns {'gain', 'mae', 'mae_at_1'}."""
    maes = index_mae_by_gain(model, images, truths, "positive", progress, **detect_options)
    best = min(maes, key=lambda g: (round(maes[g], 12), abs(np.log(g))))
    model.decode = model.decode.replace(class_gain={"positive": best})
    return {"gain": best, "mae": maes[best], "mae_at_1": maes[1.0], "by_gain": maes}


def ki67_truths(sources) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """The images of (dataset, split) sources that have points, with their annotated
    (positive, negative) counts; images without a tumour point are skipped (no index)."""
    images, truths = [], []
    for root, split in sources:
        ds = Dataset(root)
        for image_id in ds.ids(split):
            if not ds.has("points", image_id):
                continue
            labels = np.asarray(ds.points(image_id).labels).astype(str)
            pos, neg = int(np.sum(labels == "positive")), int(np.sum(labels == "negative"))
            if pos + neg:
                images.append(ds.image(image_id))
                truths.append((pos, neg))
    if not images:
        raise CellmapsInputError(
            "--class-gain needs validation images with points labelled positive / negative"
        )
    return images, truths


def any_mask(sources) -> bool:
    """Whether any image of the (folder, split) ``sources`` has an instance mask."""
    for root, split in sources:
        ds = Dataset(root)
        if any(ds.has("mask", i) for i in ds.ids(split)):
            return True
    return False


def tune_model(
    model,
    sources,
    class_gain: bool = False,
    object_size: float | str | None = None,
    pixel_size: float | None = None,
    progress: bool = True,
    model_path=None,
) -> dict:
    """``cellmaps tune``: everything a model's decoding is tuned on, stored in the model.

    :func:`tune_decoding` (ξ / h / area and the evidence floor, :func:`apply_tuning`); for
    DeepSplit-style models with masks among ``sources``, :func:`tune_split`; with
    ``class_gain`` (Ki67 models), :func:`tune_class_gain` on the per-image index MAE.
    ``model_path`` names the file in errors. Returns {"decoding": …, "split": … or None,
    "split_keys": […], "class_gain": … or None}."""
    best = tune_decoding(
        model, sources, progress=progress, object_size=object_size, pixel_size=pixel_size
    )
    apply_tuning(model, best, sources)
    out = {"decoding": best, "split": None, "split_keys": [], "class_gain": None}
    if model.decode.segment == "split" and any_mask(sources):
        cut = tune_split(model, sources, progress=progress)
        keys = [k for k in SPLIT_DECODE_KEYS if k in cut]
        model.training["tuned_split"] = {k: cut[k] for k in (*keys, "cds", "aji")}
        out.update(split=cut, split_keys=keys)
    if class_gain:
        require_ki67_classes(model.training.get("classes") or [], model_path)
        images, truths = ki67_truths(sources)
        found = tune_class_gain(
            model, images, truths, progress=progress, object_size=object_size,
            pixel_size=pixel_size,
        )  # fmt: skip
        model.training["class_gain_tuning"] = {k: v for k, v in found.items() if k != "by_gain"}
        out["class_gain"] = found
    return out
