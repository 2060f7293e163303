"""Does `--object-size auto` find the scale of images from each H&E source? (validation splits)

    python -m benchmarks.auto_scale [--model MODEL] [--seed 0]

For each validation source of the default model (CRCHisto val at 20×, the held-out MoNuSeg
train images and MBM val at 40×): every image's estimated input → net factor
(:func:`cellmaps.inference.scale.estimate_input_scale`) against the factor its own points give
(model object size / half the median nearest-neighbour spacing of the image's points), and
pooled detection F1 when the model is told the source's object size (its train split's
median radius), estimates it per image (auto), or takes every image to be like its first
training source's (CRCHisto's; what a model without auto does when told nothing). Writes results/auto_scale.json, docs/auto_scale.png and the
'auto_scale' section of BENCHMARKS.md. Validation images only: this chooses the bundled
model's default policy (recipe ``inference.object_size``).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks._common import (
    REPO,
    machine,
    machine_line,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from benchmarks.train_default_model import RADIUS, train_object_size, training_sources
from cellmaps.inference.scale import AUTO, estimate_input_scale
from cellmaps.io.dataset import Dataset
from cellmaps.io.scale import median_object_radius
from cellmaps.metrics import match_points, pool_detection
from cellmaps.model import Model, bundled_model_path
from cellmaps.tune import truth_points

NAMES = ("crchisto", "monuseg", "mbm_bonemarrow")
POLICIES = ("given", AUTO, "none")


def source_rows(model: Model, root: str, split: str, name: str) -> tuple[list[dict], dict]:
    """Per image: true and estimated factor; per policy: pooled detection scores."""
    ds = Dataset(root)
    given = train_object_size(name)
    data_size = model.training["data_object_size"]
    rows, matches = [], {p: [] for p in POLICIES}
    for image_id in ds.ids(split):
        image, truth = ds.image(image_id), truth_points(ds, image_id)
        true_factor = model.train_radius / median_object_radius(points=[truth])[0]
        estimate = estimate_input_scale(model, image)
        rows.append(
            {"source": name, "id": image_id, "true_factor": true_factor, "auto_factor": estimate}
        )
        # "none": taken to be like the training images (the default of models without auto)
        sizes = {"given": given, AUTO: model.train_radius / estimate, "none": data_size}
        for p in POLICIES:
            found = model.detect(image, object_size=sizes[p]).coords
            matches[p].append(match_points(truth, found, RADIUS[name], "hungarian"))
    scores = {p: pool_detection(matches[p]) for p in POLICIES}
    return rows, scores


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for name, colour in zip(NAMES, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        r = [x for x in rows if x["source"] == name]
        ax.scatter([x["true_factor"] for x in r], [x["auto_factor"] for x in r], s=14,
                   color=colour, label=name)  # fmt: skip
    lim = [0.25, 2.5]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=lim, ylim=lim, xlabel="factor from the image's points",
           ylabel="factor estimated (auto)", title="--object-size auto, validation images")  # fmt: skip
    ticks = [0.25, 0.5, 1.0, 2.0]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
        axis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(bundled_model_path("default")))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ki67", action="store_true", help="the Ki67 scorer's study instead")
    ap.add_argument(
        "--apply",
        action="store_true",
        help="with --ki67: make auto its default if the rule says so",
    )
    ap.add_argument("--report-only", action="store_true", help="redraw the figure from the results")
    args = ap.parse_args()
    if args.report_only:
        plot(
            json.loads((REPO / "results" / "auto_scale.json").read_text())["images"],
            REPO / "docs" / "auto_scale.png",
        )
        return
    if args.ki67:
        run_ki67(args, machine())
        return
    model = Model.load(args.model)
    _, val_sources, _ = training_sources(args.seed, NAMES)
    rows, scores = [], {}
    for (root, split), name in zip(val_sources, NAMES, strict=True):
        r, s = source_rows(model, root, split, name)
        rows += r
        scores[name] = s
        print(name, {p: round(v["f1"], 4) for p, v in s.items()}, flush=True)
    log_err = np.abs(np.log([r["auto_factor"] / r["true_factor"] for r in rows]))
    mach = machine()
    write_results(
        "auto_scale",
        {"machine": mach, "model": model.training.get("description"), "seed": args.seed,
         "images": rows, "scores": scores},
    )  # fmt: skip
    plot(rows, REPO / "docs" / "auto_scale.png")
    step = float(np.log(model_grid_ratio()))
    lines = [
        "## Object size estimated per image (`benchmarks/auto_scale.py`)",
        "",
        f"`python -m benchmarks.auto_scale --seed {args.seed}`. {machine_line(mach)} "
        f"Model: {model.training.get('description')}.",
        f"Estimated vs annotated input → net factor on {len(rows)} validation images: median "
        f"|log ratio| {np.median(log_err):.3f} ({np.mean(log_err <= step):.0%} within one grid "
        f"step, ×{np.exp(step):.2f}); worst ×{np.exp(log_err.max()):.2f}.",
        "",
        "| val source | images | F1, object size given | F1, auto | F1, taken as training-image scale |",
        "|---|---|---|---|---|",
    ]
    for name in NAMES:
        n = sum(r["source"] == name for r in rows)
        f = [scores[name][p]["f1"] for p in POLICIES]
        lines.append(f"| {name} | {n} | {f[0]:.4f} | {f[1]:.4f} | {f[2]:.4f} |")
    lines += ["", "![](docs/auto_scale.png)"]
    update_benchmarks_md("auto_scale", "\n".join(lines))
    print("\n".join(lines))


# The Ki67 scorer on BCData val (one source, 40x): each image as it is and shrunk to half (as
# if scanned at 20x), scored with the object size given, estimated, or taken as training's.
KI67_MAGNIFICATIONS = (1.0, 0.5)
KI67_RADIUS = 10.0


def ki67_val_images(mag: float):
    """(id, image, truth coords, truth labels) of bcdata val, resized by ``mag``."""
    from skimage.transform import rescale

    from benchmarks._common import SHARED_DATA

    ds = Dataset(SHARED_DATA / "bcdata_ki67")
    for image_id in ds.ids("val"):
        img, pts = ds.image(image_id), ds.points(image_id)
        if mag != 1.0:
            img = rescale(img, mag, order=1, channel_axis=-1, preserve_range=True)
            img = (img + 0.5).astype(np.uint8)
        yield image_id, img, (pts.coords + 0.5) * mag - 0.5, np.asarray(pts.labels)


def ki67_calibration(model: Model) -> float:
    """exp(median log(annotated / estimated factor)) over the val images at their own (40x)
    magnification, where the annotated factor is 1 (the model was trained at that scale);
    the half-size images are left to check it."""
    model.recipe["inference"]["auto_scale_calibration"] = 1.0
    logs = [np.log(1.0 / estimate_input_scale(model, x[1])) for x in ki67_val_images(1.0)]
    return float(np.exp(np.median(logs)))


def ki67_study(seed: int) -> dict:
    """Detection F1 and per-image Ki67 index MAE of the bundled Ki67 scorer on bcdata val at
    each magnification of :data:`KI67_MAGNIFICATIONS`, per scale policy, auto calibrated by
    :func:`ki67_calibration`."""
    from cellmaps.metrics.counts import ki67_index, mean_absolute_error

    model = Model.load(bundled_model_path("ki67"))
    size = model.training["data_object_size"]
    calibration = ki67_calibration(model)
    model.recipe["inference"]["auto_scale_calibration"] = calibration
    out = {"calibration": calibration}
    for mag in KI67_MAGNIFICATIONS:
        matches = {p: [] for p in POLICIES}
        idx = {p: [] for p in POLICIES}
        truth_idx, factors = [], []
        for image_id, img, truth, labels in ki67_val_images(mag):
            truth_idx.append(ki67_index((labels == "positive").sum(), (labels == "negative").sum()))
            estimate = estimate_input_scale(model, img)
            factors.append(
                {"id": image_id, "true": 1 / mag, "auto": estimate * size / model.train_radius}
            )
            sizes = {"given": size * mag, AUTO: model.train_radius / estimate, "none": size}
            for p in POLICIES:
                found = model.detect(img, object_size=sizes[p])
                matches[p].append(match_points(truth, found.coords, KI67_RADIUS * mag, "hungarian"))
                lab = np.asarray(found.labels)
                idx[p].append(ki67_index((lab == "positive").sum(), (lab == "negative").sum()))
        out[str(mag)] = {
            "factors": factors,
            **{
                p: {
                    "f1": pool_detection(matches[p])["f1"],
                    "index_mae": mean_absolute_error(idx[p], truth_idx),
                }
                for p in POLICIES
            },
        }
        print(mag, {p: out[str(mag)][p] for p in POLICIES}, flush=True)
    return out


def ki67_keeps_auto(study: dict) -> tuple[bool, str]:
    """Auto becomes the Ki67 scorer's default when, on val, it costs at most 0.01 detection
    F1 at BCData's own magnification and beats the training scale on the half-size images."""
    own, half = study["1.0"], study["0.5"]
    ok_own = own[AUTO]["f1"] >= own["none"]["f1"] - 0.01
    ok_half = half[AUTO]["f1"] > half["none"]["f1"]
    return ok_own and ok_half, (
        f"at 40x auto F1 {own[AUTO]['f1']:.3f} vs training scale {own['none']['f1']:.3f} "
        f"({'within' if ok_own else 'more than'} 0.01 below); at half size {half[AUTO]['f1']:.3f} vs "
        f"{half['none']['f1']:.3f} ({'better' if ok_half else 'not better'})"
    )


def run_ki67(args, mach) -> None:
    from benchmarks.record_object_size import stored_as_half

    study = ki67_study(args.seed)
    keep, why = ki67_keeps_auto(study)
    applied = False
    if args.apply:  # the calibration always (it only acts under auto), the policy by the rule
        path = bundled_model_path("ki67")
        model = Model.load(path)
        model.recipe["inference"]["auto_scale_calibration"] = study["calibration"]
        model.recipe["inference"]["object_size"] = AUTO if keep else None
        model.save(path, half=stored_as_half(path))
        applied = True
    write_results("auto_scale_ki67", {"machine": mach, "seed": args.seed, "study": study,
                                      "keep_auto": keep, "applied": applied})  # fmt: skip
    lines = [
        "## Ki67 scorer: object size estimated per image (`benchmarks/auto_scale.py --ki67`)",
        "",
        f"`python -m benchmarks.auto_scale --ki67{' --apply' if args.apply else ''} --seed "
        f"{args.seed}`. {machine_line(mach)} BCData val images as they are (40×) and shrunk to "
        f"half (as if 20×); detection F1 within {KI67_RADIUS:g} px × size, per-image Ki67 index MAE. "
        f"The auto estimate is calibrated by ×{study['calibration']:.2f}: the median ratio of "
        "annotated to estimated factor on the val images at 40× (the net, fine-tuned at one "
        "magnification from the earlier mixed-scale default model, answers most strongly off its "
        "training scale); the half-size images check it. Estimated factors (annotated 1 and 2): "
        + "; ".join(
            f"×{m:g}: " + ", ".join(f"{f['auto']:.2f}" for f in study[str(m)]["factors"])
            for m in KI67_MAGNIFICATIONS
        )
        + ".",
        "",
        "| images | policy | detection F1 | index MAE |",
        "|---|---|---|---|",
    ]
    names = {"given": "object size given", AUTO: "estimated (auto)", "none": "training scale"}
    for mag in KI67_MAGNIFICATIONS:
        for p in POLICIES:
            r = study[str(mag)][p]
            lines.append(f"| ×{mag:g} | {names[p]} | {r['f1']:.4f} | {r['index_mae']:.4f} |")
    lines += [
        "",
        f"Rule (auto becomes the default if it costs ≤ 0.01 F1 at 40× and helps at half size): "
        f"{why} → {'auto' if keep else 'training scale'}"
        + (
            f" (written into the bundled Ki67 model, with the ×{study['calibration']:.2f} "
            "calibration that `--object-size auto` then uses)."
            if applied
            else "."
        ),
    ]
    update_benchmarks_md("auto_scale_ki67", "\n".join(lines))
    print("\n".join(lines))


def model_grid_ratio() -> float:
    from cellmaps.inference.scale import AUTO_SCALE_FACTORS

    return float(AUTO_SCALE_FACTORS[1] / AUTO_SCALE_FACTORS[0])


if __name__ == "__main__":
    main()
