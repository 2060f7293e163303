"""Does `--object-size auto` find the scale of images from each H&E source? (validation splits)

    python -m benchmarks.auto_scale [--model MODEL] [--seed 0]

For each validation source of the default model (CRCHisto val at 20×, the held-out MoNuSeg
train images and MBM val at 40×): every image's estimated input → net factor
(:meth:`cellmaps.model.Model.estimate_input_scale`) against the factor its own points give
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
from cellmaps.io.dataset import Dataset
from cellmaps.io.masks import mask_centroids
from cellmaps.io.scale import median_object_radius
from cellmaps.metrics import match_points, pool_detection
from cellmaps.model import AUTO, Model, bundled_model_path

NAMES = ("crchisto", "monuseg", "mbm_bonemarrow")
POLICIES = ("given", AUTO, "none")


def truth_of(ds: Dataset, image_id: str) -> np.ndarray:
    pts = ds.points(image_id)
    return pts.coords if pts is not None else mask_centroids(ds.mask(image_id))[0]


def source_rows(model: Model, root: str, split: str, name: str) -> tuple[list[dict], dict]:
    """Per image: true and estimated factor; per policy: pooled detection scores."""
    ds = Dataset(root)
    given = train_object_size(name)
    data_size = model.training["data_object_size"]
    rows, matches = [], {p: [] for p in POLICIES}
    for image_id in ds.ids(split):
        image, truth = ds.image(image_id), truth_of(ds, image_id)
        true_factor = model.object_size / median_object_radius(points=[truth])[0]
        estimate = model.estimate_input_scale(image)
        rows.append(
            {"source": name, "id": image_id, "true_factor": true_factor, "auto_factor": estimate}
        )
        # "none": taken to be like the training images (the default of models without auto)
        sizes = {"given": given, AUTO: model.object_size / estimate, "none": data_size}
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
    ap.add_argument("--report-only", action="store_true", help="redraw the figure from the results")
    args = ap.parse_args()
    if args.report_only:
        plot(
            json.loads((REPO / "results" / "auto_scale.json").read_text())["images"],
            REPO / "docs" / "auto_scale.png",
        )
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


def model_grid_ratio() -> float:
    from cellmaps.model import AUTO_SCALE_FACTORS

    return float(AUTO_SCALE_FACTORS[1] / AUTO_SCALE_FACTORS[0])


if __name__ == "__main__":
    main()
