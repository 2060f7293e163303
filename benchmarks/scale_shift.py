"""Does the automatic scale hold on magnifications it has not seen? (#33 part 1)

    python -m benchmarks.scale_shift --split val [--estimators net,log,...]
    python -m benchmarks.scale_shift --split test --final     # once, with the chosen estimator

Every image of a split of CRCHisto (20×), MoNuSeg (40×) and MBM (40×) is rescaled by each
factor of :data:`SHIFTS` (0.5 … 2: as if scanned at 10× … 80×) and the default model
detects nuclei in it twice: with the object size given (the source's train-split median
radius × the factor: what a user who knows the scanner types) and with it estimated from
the image by an estimator of :data:`ESTIMATORS`. Reported per (source, factor): pooled
detection F1 of both (match radius of the source × factor) and, per image, the estimated
median nucleus radius against the true one (its mask's median equivalent-disc radius where
there are masks, else half the lower quartile of its points' nearest-neighbour spacing: the
definition the model was trained with) × the factor.

Selection rule, fixed before the first test run (written 2026-12-07, before any estimator
was scored on test): on the **val** split, the estimator with the smallest worst-case F1
loss (given − estimated) over every (source, factor) cell; ties within 0.005 go to the
smaller median |log radius error|. No calibration (multiplier 1). (Amended before any test
F1 was computed: the test run scores the chosen estimator only — with ``net-narrow`` beside it
it takes about an hour of CPU; a first such run was stopped unfinished and wrote nothing.) ``detections`` (10 s per
image) is scored on the first 3 val images of each source only (``--per-source 3``, beside
``net`` on the same images) and is eligible only if it beats ``net`` there. Test is scored once, with
``--final``, for the chosen estimator and the one bundled before #33 (``net-narrow``).

Added 2026-12-07, before its first run: ``net-shared`` (``--add-shared``) is what
``cellmaps predict --object-size shared`` does to a folder: per (source, factor) cell — a
folder scanned at one magnification — one radius for all its images, from ``net``'s
estimates on up to 8 of them spread over the cell (the recorded estimates of the split's
run, for the same model), combined by their median in log scale. It answers a different
use (one scanner per run), so it is reported beside ``net`` and does not replace it as the
per-image default; the README recommends it for such folders if its worst F1 loss on val
is smaller than ``net``'s. Its test figures come once, with ``--final --add-shared``.

Writes results/scale_shift_<split>.json, docs/scale_shift_<split>.png and the
'scale_shift' section of BENCHMARKS.md (from both JSON files when they exist).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from functools import partial

import numpy as np
from scipy.ndimage import maximum_filter
from skimage.transform import rescale

from benchmarks._common import (
    REPO,
    RESULTS,
    SHARED_DATA,
    machine,
    machine_line,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from benchmarks.train_default_model import RADIUS, train_object_size, training_sources
from cellmaps.inference import scale as auto
from cellmaps.io.dataset import Dataset
from cellmaps.io.scale import (
    POINT_SPACING_PERCENTILE,
    mask_object_radii,
    median_object_radius,
    nearest_neighbour_distances,
)
from cellmaps.metrics import match_points, pool_detection
from cellmaps.model import Model, bundled_model_path
from cellmaps.tune import truth_points

NAMES = ("crchisto", "monuseg", "mbm_bonemarrow")
SHIFTS = (0.5, 0.71, 1.0, 1.41, 2.0)
GOAL_F1_LOSS = 0.02
GOAL_RADIUS_ERROR = 0.15


def estimate_with(**response_options) -> Callable:
    """:func:`cellmaps.inference.scale.estimate_input_scale` with other
    :func:`~cellmaps.inference.scale.scale_response` options (the ablation's variants)."""

    def estimate(model: Model, image: np.ndarray) -> float:
        original = auto.scale_response
        auto.scale_response = partial(original, **response_options)
        try:
            return auto.estimate_input_scale(model, image)
        finally:
            auto.scale_response = original

    return estimate


def top_half_peak_mean(m: np.ndarray) -> float:
    """Mean of the upper half of the map's local maxima (7 px window) above 0: a score
    that follows the detections rather than the brightest pixels."""
    peaks = np.sort(m[(m == maximum_filter(m, 7)) & (m > 0)])[::-1]
    return float(peaks[: max(1, len(peaks) // 2)].mean()) if len(peaks) else 0.0


def detection_spacing_scale(model: Model, image: np.ndarray) -> float:
    """Approach tried and left out (ablation): the smallest factor f of 0.2–3 at which the
    model's own detections on a central crop are spaced as its training points were,
    f · r(f) ≈ R (r(f): half the lower quartile of their nearest-neighbour spacing, the
    definition R was read with), corrected once within half a grid step."""
    factors = np.geomspace(0.2, 3.0, 9)
    errors = {}
    for f in factors:
        crop = auto.auto_scale_crop(np.asarray(image), float(f), 1024)
        pts = model.decode_maps(model.predict_maps(crop, scale=float(f)))
        nn = nearest_neighbour_distances(pts.coords)
        if len(nn) >= 8:
            r = float(np.percentile(nn, POINT_SPACING_PERCENTILE) / 2.0)
            errors[float(f)] = float(np.log(f * r / model.train_radius))
    if not errors:
        return float(model.input_scale())
    near = [f for f in errors if abs(errors[f]) <= np.log(1.25)]
    best = min(near) if near else min(errors, key=lambda f: abs(errors[f]))
    half_step = np.sqrt(factors[1] / factors[0])
    return float(best * np.clip(np.exp(-errors[best]), 1 / half_step, half_step))


#: estimator name → f(model, image) → input → net factor. "net" is the package's
#: estimate_input_scale; the others are the ablation (what it was before #33, another
#: statistic, another signal).
ESTIMATORS: dict[str, Callable] = {
    "net": auto.estimate_input_scale,
    "net-narrow": estimate_with(factors=np.geomspace(0.25, 2.5, 12), max_input=512, min_net=0),
    "net-peaks": estimate_with(statistic=top_half_peak_mean),
    "detections": detection_spacing_scale,
}


def shifted(image: np.ndarray, coords: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """The image rescaled by ``f`` (anti-aliased when shrinking, uint8 kept) and its points
    mapped with it (pixel centres as in :mod:`cellmaps.io.scale`)."""
    if f == 1.0:
        return image, coords
    out = rescale(image, f, order=1, channel_axis=-1 if image.ndim == 3 else None,
                  preserve_range=True, anti_aliasing=f < 1)  # fmt: skip
    return (out + 0.5).astype(np.uint8), (coords + 0.5) * f - 0.5


def true_radius(ds: Dataset, image_id: str) -> tuple[float, str]:
    """An image's own median nucleus radius (px) and what it is read from."""
    if ds.has("mask", image_id):
        return float(np.median(mask_object_radii(ds.mask(image_id)))), "mask"
    return median_object_radius(points=[truth_points(ds, image_id)])[0], "points"


def source_split(split: str, seed: int) -> list[tuple[str, str, str]]:
    """(name, dataset folder, split) per source; val is the default model's val sources."""
    if split == "val":
        _, val, _ = training_sources(seed, NAMES)
        return [(n, root, s) for n, (root, s) in zip(NAMES, val, strict=True)]
    return [(n, str(SHARED_DATA / n), "test") for n in NAMES]


def share_maps(model: Model) -> dict:
    """Make ``model.predict_maps`` (and ``predict_maps_many``) remember its maps by (input
    bytes, scale) until the returned dict is cleared: estimators that differ only in how they score the same crops
    predict them once (their timings then count the first one only)."""
    cache: dict = {}
    predict, predict_many = model.predict_maps, model.predict_maps_many

    def key_of(image, scale, args=(), kw=()):
        a = np.ascontiguousarray(image)
        return (hashlib.sha1(a.tobytes()).hexdigest(), a.shape, scale, args, tuple(sorted(kw)))

    def remembered(image, *args, scale=None, **kw):
        key = key_of(image, scale, args, kw)
        if key not in cache:
            cache[key] = predict(image, *args, scale=scale, **kw)
        return cache[key]

    def remembered_many(images, scales):  # the scale estimate's stacked crops
        keys = [key_of(i, f) for i, f in zip(images, scales, strict=True)]
        todo = [k for k, key in enumerate(keys) if key not in cache]
        new = predict_many([images[k] for k in todo], [scales[k] for k in todo])
        cache.update({keys[k]: m for k, m in zip(todo, new, strict=True)})
        return [cache[key] for key in keys]

    model.predict_maps, model.predict_maps_many = remembered, remembered_many
    return cache


def run(
    model: Model, split: str, seed: int, estimators: list[str], per_source: int | None = None
) -> dict:
    """Per image and shift: true radius, each estimate and its time; pooled F1 per cell
    (the first ``per_source`` images of each source only, when given)."""
    rows, matches = [], {}
    cache = share_maps(model)
    for name, root, s in source_split(split, seed):
        ds = Dataset(root)
        given_size = train_object_size(name)
        for image_id in ds.ids(s)[:per_source]:
            image, truth = ds.image(image_id), truth_points(ds, image_id)
            radius, kind = true_radius(ds, image_id)
            for f in SHIFTS:
                cache.clear()
                img, pts = shifted(image, truth, f)
                match_r = RADIUS[name] * f
                row = {"source": name, "id": image_id, "shift": f, "true_radius": radius * f,
                       "truth_from": kind, "estimates": {}, "seconds": {}}  # fmt: skip
                found = model.detect(img, object_size=given_size * f).coords
                matches.setdefault((name, f, "given"), []).append(
                    match_points(pts, found, match_r, "hungarian")
                )
                for e in estimators:
                    t0 = time.perf_counter()
                    factor = ESTIMATORS[e](model, img)
                    row["seconds"][e] = time.perf_counter() - t0
                    row["estimates"][e] = model.train_radius / factor
                    found = model.detect(img, object_size=model.train_radius / factor).coords
                    matches.setdefault((name, f, e), []).append(
                        match_points(pts, found, match_r, "hungarian")
                    )
                rows.append(row)
            print(name, image_id, {e: round(r["estimates"][e] / r["true_radius"], 2)
                                   for r in rows[-len(SHIFTS):] for e in estimators}, flush=True)  # fmt: skip
    cells = [
        {"source": n, "shift": f, "policy": p, **pool_detection(m)}
        for (n, f, p), m in matches.items()
    ]
    return {"images": rows, "cells": cells}


def add_shared(model: Model, res: dict, seed: int, base: str = "net") -> dict:
    """The ``net-shared`` policy added to a split's results (see the module doc): per cell,
    the radius of :func:`cellmaps.predict.shared_object_size` computed from the recorded
    ``base`` estimates, every image detected with it and matched; its seconds per image are
    the sampled estimates' time spread over the cell's images."""
    from cellmaps.predict import SHARED_SCALE_IMAGES, median_factor, spread_sample

    name_of = f"{base}-shared"
    by_cell: dict = {}
    for row in res["images"]:
        by_cell.setdefault((row["source"], row["shift"]), []).append(row)
    matches = {}
    r_net = float(model.train_radius)
    for name, root, s in source_split(res["split"], seed):
        ds = Dataset(root)
        order = {image_id: k for k, image_id in enumerate(ds.ids(s))}
        for f in SHIFTS:
            rows = sorted(by_cell[(name, f)], key=lambda r: order[r["id"]])
            sample = spread_sample(rows, SHARED_SCALE_IMAGES)
            radius = r_net / median_factor([r_net / r["estimates"][base] for r in sample])
            secs = sum(r["seconds"][base] for r in sample) / len(rows)
            for row in rows:
                img, pts = shifted(ds.image(row["id"]), truth_points(ds, row["id"]), f)
                found = model.detect(img, object_size=radius).coords
                matches.setdefault((name, f), []).append(
                    match_points(pts, found, RADIUS[name] * f, "hungarian")
                )
                row["estimates"][name_of] = radius
                row["seconds"][name_of] = secs
            print(name, f, f"shared radius {radius:.2f} px from {len(sample)} images", flush=True)
    res["cells"] = [c for c in res["cells"] if c["policy"] != name_of] + [
        {"source": n, "shift": f, "policy": name_of, **pool_detection(m)}
        for (n, f), m in matches.items()
    ]
    res["summary"] = summary(res)
    return res


def merged(old: dict, new: dict, rename: dict[str, str]) -> dict:
    """``new`` with the estimators of an earlier run of the same split added (renamed by
    ``rename``; the earlier run's commands and machines kept in ``earlier_runs``)."""
    for r_old, r_new in zip(old["images"], new["images"], strict=True):
        assert (r_old["id"], r_old["shift"]) == (r_new["id"], r_new["shift"])
        for key in ("estimates", "seconds"):
            r_new[key] = {rename.get(k, k): v for k, v in r_old[key].items()} | r_new[key]
    ours = {c["policy"] for c in new["cells"]}
    new["cells"] += [c | {"policy": rename.get(c["policy"], c["policy"])} for c in old["cells"]
                     if rename.get(c["policy"], c["policy"]) not in ours]  # fmt: skip
    new["earlier_runs"] = old.get("earlier_runs", []) + [
        {"command": old["command"], "machine": old["machine"], "renamed": rename}
    ]
    new["summary"] = summary(new)
    return new


def summary(result: dict) -> dict[str, dict]:
    """Per estimator: worst and per-cell F1 loss against given, radius errors, seconds."""
    f1 = {(c["source"], c["shift"], c["policy"]): c["f1"] for c in result["cells"]}
    out = {}
    for e in sorted({c["policy"] for c in result["cells"]} - {"given"}):
        loss = {(n, f): f1[(n, f, "given")] - f1[(n, f, e)] for (n, f, p) in f1 if p == e}
        err = np.array([np.log(r["estimates"][e] / r["true_radius"]) for r in result["images"]])
        secs = [r["seconds"][e] for r in result["images"]]
        worst = max(loss, key=loss.get)
        out[e] = {
            "worst_f1_loss": loss[worst],
            "worst_cell": list(worst),
            "cells_within_goal": int(sum(v <= GOAL_F1_LOSS for v in loss.values())),
            "cells": len(loss),
            "median_abs_log_radius_error": float(np.median(np.abs(err))),
            "median_radius_error": float(np.expm1(np.median(np.abs(err)))),
            "median_seconds": float(np.median(secs)),
        }
    return out


def plot(result: dict, split: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = sorted({c["policy"] for c in result["cells"]})
    fig, axes = plt.subplots(1, len(NAMES), figsize=(4 * len(NAMES), 3.4), sharey=True)
    for ax, name in zip(axes, NAMES, strict=True):
        for p in policies:
            c = sorted((x for x in result["cells"] if x["source"] == name and x["policy"] == p),
                       key=lambda x: x["shift"])  # fmt: skip
            ax.plot([x["shift"] for x in c], [x["f1"] for x in c], "o-" if p != "given" else "k--",
                    label=p, ms=4)  # fmt: skip
        ax.set(xscale="log", title=f"{name} {split}", xlabel="image rescaled by")
        ax.set_xticks(SHIFTS, [f"{s:g}" for s in SHIFTS])
        ax.minorticks_off()
    axes[0].set_ylabel("detection F1")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, REPO / "docs" / f"scale_shift_{split}.png")


def n_images(res: dict) -> int:
    return len({(r["source"], r["id"]) for r in res["images"]})


def archive_other_models_run(name: str, fingerprint: str) -> None:
    """Keep a run of another model (an earlier bundled default) beside the new one, as
    results/<name>_model_<fingerprint[:8]>.json, instead of writing over it: the estimators
    were compared on that model's run."""
    path = RESULTS / f"{name}.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("model_sha256") != fingerprint:
            path.rename(RESULTS / f"{name}_model_{str(old.get('model_sha256'))[:8]}.json")


def report() -> None:
    """BENCHMARKS.md 'scale_shift' from results/scale_shift_{val,test}.json, then the runs
    of earlier models and the partial runs."""
    lines = ["## Automatic scale under magnification shift (`benchmarks/scale_shift.py`)", ""]
    partial = sorted(RESULTS.glob("scale_shift_*_first*.json"))
    earlier = sorted(RESULTS.glob("scale_shift_*_model_*.json"))
    current = [RESULTS / "scale_shift_val.json", RESULTS / "scale_shift_test.json"]
    bundled = Model.load(bundled_model_path("default")).fingerprint()
    for path in [*current, *earlier, *partial]:
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        split = res["split"]
        which = ("" if res.get("model_sha256") == bundled
                 else f" (model {str(res.get('model_sha256'))[:8]}, an earlier default)")  # fmt: skip
        lines += [
            f"**{split}**{which} — `{res['command']}`. {machine_line(res['machine'])}"
            + "".join(
                f" Added: `{a['command']}`, commit {a['machine']['commit']}, "
                f"{a['machine']['date']} (from the recorded net estimates)."
                for a in res.get("added_runs", [])
            ),  # fmt: skip
            f"{n_images(res)} images of CRCHisto, MoNuSeg and MBM ({split}) rescaled by "
            f"{', '.join(f'{s:g}' for s in SHIFTS)}; F1 lost against the object size given "
            f"(goal ≤ {GOAL_F1_LOSS}) and the estimated radius against the image's own "
            f"(goal ≤ {GOAL_RADIUS_ERROR:.0%} median).",
            "",
            "| estimator | worst F1 loss (cell) | cells within goal | median radius error "
            "| median s per image (maps shared: the first net-based estimator run pays) |",
            "|---|---|---|---|---|",
        ]
        for e, s in res["summary"].items():
            lines.append(
                f"| {e} | {s['worst_f1_loss']:.3f} ({s['worst_cell'][0]} ×{s['worst_cell'][1]:g})"
                f" | {s['cells_within_goal']}/{s['cells']} | {s['median_radius_error']:.1%} "
                f"| {s['median_seconds']:.2f} |"
            )
        if any(e.endswith("-shared") for e in res["summary"]):
            lines += ["", "A `-shared` policy's seconds are its sampled estimates' time spread "
                      "over the cell's images (a folder of more images spreads it further)."]  # fmt: skip
        met_f1 = [e for e, x in res["summary"].items() if x["worst_f1_loss"] <= GOAL_F1_LOSS]
        met_r = [e for e, x in res["summary"].items()
                 if x["median_radius_error"] <= GOAL_RADIUS_ERROR]  # fmt: skip
        lines += [
            "",
            f"F1 goal (loss ≤ {GOAL_F1_LOSS} in every cell) met by: {', '.join(met_f1) or 'none'}; "
            f"radius goal (≤ {GOAL_RADIUS_ERROR:.0%} median) met by: {', '.join(met_r) or 'none'}.",
        ]
        figure = RESULTS.parent / "docs" / f"scale_shift_{split}.png"
        lines += ["", f"![](docs/scale_shift_{split}.png)" if path in current
                  and figure.exists() else "", ""]  # fmt: skip
    update_benchmarks_md("scale_shift", "\n".join(lines).rstrip())
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--estimators", default="net,net-narrow,net-peaks")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="add these estimators to the split's existing results JSON",
    )
    ap.add_argument("--rename", default="", help="with --merge: OLD=NEW names of earlier ones")
    ap.add_argument("--per-source", type=int,
                    help="only the first N images of each source (a slow estimator's ablation; "
                    "written to results/scale_shift_<split>_first<N>.json)")  # fmt: skip
    ap.add_argument("--model", default=str(bundled_model_path("default")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--final", action="store_true", help="needed with --split test (run once)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--add-shared",
        action="store_true",
        help="add the net-shared policy (--object-size shared) to the split's results, from "
        "their recorded net estimates (same model only)",
    )
    args = ap.parse_args()
    if args.report_only:
        report()
        return
    if args.split == "test" and not args.final:
        ap.error("test is scored once, after the choice on val: add --final")
    if args.add_shared:
        model = Model.load(args.model)
        name = f"scale_shift_{args.split}"
        res = json.loads((RESULTS / f"{name}.json").read_text())
        if res["model_sha256"] != model.fingerprint():
            ap.error(f"results/{name}.json is another model's run: rerun the split first")
        res = add_shared(model, res, args.seed)
        res.setdefault("added_runs", []).append(
            {"command": f"python -m benchmarks.scale_shift --split {args.split} --add-shared"
                        + (" --final" if args.final else ""), "machine": machine()}
        )  # fmt: skip
        write_results(name, res)
        plot(res, args.split)
        report()
        return
    estimators = args.estimators.split(",")
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        ap.error(f"unknown estimators {unknown}; known: {sorted(ESTIMATORS)}")
    mach = machine()
    model = Model.load(args.model)
    res = run(model, args.split, args.seed, estimators, args.per_source)
    res["summary"] = summary(res)
    res.update(machine=mach, model_sha256=model.fingerprint(), split=args.split, seed=args.seed,
               command="python -m benchmarks.scale_shift " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in (("split", args.split),
                                                               ("estimators", args.estimators),
                                                               ("per_source", args.per_source))
                   if v is not None)
               + (" --final" if args.final else ""))  # fmt: skip
    if args.merge:
        res = merged(json.loads((RESULTS / f"scale_shift_{args.split}.json").read_text()), res,
                     dict(x.split("=") for x in args.rename.split(",") if x))  # fmt: skip
    name = f"scale_shift_{args.split}" + (f"_first{args.per_source}" if args.per_source else "")
    archive_other_models_run(name, res["model_sha256"])
    write_results(name, res)
    if not args.per_source:
        plot(res, args.split)
    report()


if __name__ == "__main__":
    main()
