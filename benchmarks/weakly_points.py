"""Weakly supervised multi-task learning from points (seeds/weakly-supervised-multitask.md)
at CPU scale: Table 1 (segmentation) and Table 2 (detection) on MoNuSeg, from points only.

    python -m benchmarks.weakly_points [--iterations 600] [--crop 160] [--batch 8] [--seed 0]
                                       [--combiners round_robin,sum,uncertainty]
                                       [--report-only]

Data (symlinks under runs/weakly_points/, nothing copied):
- monuseg: the 13 training images are split, seeded, into 10 train and 3 val (MoNuSeg has no
  validation split); the 14 test images are scored. The points-only folder links images/ and
  points/ only, so no mask can be read while training; the test masks are read from the
  shared dataset for scoring alone. The full-mask comparison trains the same net, optimiser,
  scheduler and decoding on CE against the true nucleus pixels plus the repel code kept on
  them (targets mask_labels, mask_filtered_repel), from a folder that also links masks/.
- crchisto: points only (train / val / test splits as shipped); detection scores at r 6.

Every model is trained for the same iterations with the recipe's Ranger (lr 1e-3), its
decoding (ξ, peak distance, evidence floor) tuned on the val images, then scored on test:
per-image pixel accuracy, pixel F1, object Dice and AJI averaged over images (Table 1;
instances = argmax mask split by a watershed from the detections), pooled detection
precision / recall (Hungarian, r 12 on MoNuSeg) and the concordance correlation of per-image
counts (Table 2). Writes results/weakly_points.json, docs/weakly_points_panel.png,
docs/weakly_points_curves.png and the 'weakly_points' section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    cached_train,
    machine,
    machine_line,
    read_results,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset
from cellmaps.metrics.counts import concordance_correlation
from cellmaps.metrics.detection import pool_detection
from cellmaps.metrics.matching import match_hungarian
from cellmaps.metrics.segmentation import segmentation_scores
from cellmaps.model import Model, segment_image
from cellmaps.recipes import load_recipe

WORK = REPO / "runs" / "weakly_points"
N_VAL = 3
PAPER = {  # Chamanzar & Nie, Tables 1 and 2 (their PMS2 IHC data, 0.5 µm/px)
    "round_robin": {"pixel_accuracy": 0.929, "pixel_f1": 0.791, "object_dice": 0.784,
                    "aji": 0.599, "precision": 0.941, "recall": 0.925, "ccc": 0.998},
    "uncertainty": {"pixel_accuracy": 0.915, "pixel_f1": 0.731, "object_dice": 0.735,
                    "aji": 0.532, "precision": 0.964, "recall": 0.907, "ccc": 0.997},
}  # fmt: skip
TARGETS = {"aji": 0.58, "object_dice": 0.78, "precision": 0.90, "recall": 0.90, "ccc": 0.95}
SEG_KEYS = ["pixel_accuracy", "pixel_f1", "object_dice", "aji"]
LABELS = {
    "round_robin": "scheduler (round robin, Eq. 4)",
    "sum": "naive sum (Qu et al.)",
    "uncertainty": "task uncertainty (Kendall et al.)",
    "masks": "full masks (same recipe, CE on true nucleus pixels + repel on them)",
}


def link_dataset(src: Path, dst: Path, rows: list[str], subs: tuple[str, ...]) -> Path:
    """A dataset folder of symlinks to ``subs`` of ``src`` with its own splits.csv."""
    dst.mkdir(parents=True, exist_ok=True)
    for sub in subs:
        link = dst / sub
        if not link.exists():
            os.symlink((src / sub).resolve(), link)
    (dst / "splits.csv").write_text("\n".join(["id,split,group", *rows]) + "\n")
    return dst


def monuseg_splits(seed: int) -> list[str]:
    """splits.csv rows: N_VAL seeded train images become val."""
    ds = Dataset(SHARED_DATA / "monuseg")
    train = sorted(ds.ids("train"))
    val = set(np.random.default_rng(seed).permutation(train)[:N_VAL].tolist())
    return [
        f"{i},{'val' if i in val else ds.split_of(i)},{ds.group_of(i)}" for i in sorted(ds.ids())
    ]


def masks_recipe(recipe: dict) -> dict:
    """The same recipe with the point labels replaced by the full masks: CE on the true
    nucleus pixels and the repel code kept on them, under the same scheduler."""
    r = {**recipe, "tasks": [dict(t) for t in recipe["tasks"]]}
    by = {t["name"]: t for t in r["tasks"]}
    mask_ce = dict(by["cluster"], name="mask", target="mask_labels", target_options={})
    repel = dict(
        by["repel"], target="mask_filtered_repel", target_options={"alpha": 0.05, "r": 70.0}
    )
    r["tasks"] = [mask_ce, repel]
    r["name"] = "weakly-points (full masks)"
    return r


def recipe_for(args, combine: str, radius: float = 12.0) -> dict:
    """The bundled recipe at the benchmark's budget; ``radius`` is the matching radius of
    the validation F1 and of the decoding tuned on val (input pixels)."""
    r = load_recipe("weakly-points")
    r["evaluate"]["radius"] = radius
    r["training"].update(
        iterations=args.iterations, crop=args.crop, batch=args.batch, seed=args.seed,
        val_every=max(args.iterations // 4, 1), checkpoint_every=50,
    )  # fmt: skip
    r["combine"]["kind"] = combine
    return r


def score_segmentation(model: Model, folder: Path, truth: Path, split: str, radius: float) -> dict:
    """Table 1 (per-image means) and Table 2 (pooled P / R, CCC of counts) on a split."""
    ds, tr = Dataset(folder), Dataset(truth)
    per_image, matchings, counts = [], [], []
    for i in ds.ids(split):
        pts, mask = segment_image(model, ds.image(i))
        truth_pts = tr.points(i).coords
        matchings.append(match_hungarian(truth_pts, pts.coords, radius))
        counts.append((len(truth_pts), len(pts.coords)))
        row = {"id": i, "n_truth": len(truth_pts), "n_pred": len(pts.coords)}
        truth_mask = tr.mask(i)
        if truth_mask is not None:
            row.update(segmentation_scores(truth_mask, mask))
        per_image.append(row)
    det = pool_detection(matchings)
    c = np.array(counts, dtype=float)
    out = {
        "precision": det["precision"],
        "recall": det["recall"],
        "f1": det["f1"],
        "ccc": concordance_correlation(c[:, 0], c[:, 1]),
        "per_image": per_image,
    }
    if "aji" in per_image[0]:
        out.update({k: float(np.mean([r[k] for r in per_image])) for k in SEG_KEYS})
    return out


def train_one(recipe: dict, folder: Path, name: str) -> tuple[Model, float]:
    t0 = time.time()
    model = cached_train(recipe, [(str(folder), "train", 1.0)], [(str(folder), "val")], WORK, name)
    minutes = model.training.get("elapsed_seconds", time.time() - t0) / 60.0
    return model, minutes


def plot_panel(model: Model, folder: Path, truth: Path, image_id: str, path: Path) -> None:
    """One test image: the three label maps made from its points, the nucleus probability
    and the instances, with the true outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from cellmaps.targets.weak import cluster_labels, filtered_repel, voronoi_labels

    ds, tr = Dataset(folder), Dataset(truth)
    img = ds.image(image_id)[..., :3]
    pts = ds.points(image_id).coords
    crop = (slice(0, 400), slice(0, 400))
    img_c = img[crop]
    p_c = pts[(pts[:, 0] < 399.5) & (pts[:, 1] < 399.5)]
    vor = voronoi_labels(p_c, img_c.shape[:2])
    clu = cluster_labels(img_c, p_c, k=2)
    rep = filtered_repel(img_c, p_c, clusters=clu)
    maps = model.predict_maps(img)
    prob = np.asarray(maps[model.decode["task"]][model.decode["channel"]])
    if maps.rescaled:
        from cellmaps.model import _resize_map_to

        prob = _resize_map_to(prob, maps.input_shape)
    found, mask = segment_image(model, img, maps=maps)
    truth_mask = tr.mask(image_id)[crop]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.4))
    axes[0].imshow(img_c)
    axes[0].plot(p_c[:, 1], p_c[:, 0], "g.", ms=3)
    axes[0].set_title("image + points (the only labels)")
    shown = np.where(vor == 255, 0.5, vor.astype(float))
    axes[1].imshow(shown, cmap="RdYlGn", vmin=0, vmax=1)
    axes[1].set_title("Voronoi (red edges, green points, grey ignored)")
    axes[2].imshow(clu, cmap="gray")
    axes[2].set_title("local k-means clusters (k 2)")
    axes[3].imshow(rep, cmap="magma")
    axes[3].set_title("filtered repel code")
    axes[4].imshow(img_c)
    axes[4].imshow(np.ma.masked_less(prob[crop], 0.5), cmap="viridis", alpha=0.35)
    yy, xx = np.nonzero(find_boundaries(mask[crop]))
    axes[4].plot(xx, yy, ",", color="yellow")
    yy, xx = np.nonzero(find_boundaries(truth_mask))
    axes[4].plot(xx, yy, ",", color="cyan")
    f = found.coords
    f = f[(f[:, 0] < 400) & (f[:, 1] < 400)]
    axes[4].plot(f[:, 1], f[:, 0], "r+", ms=4)
    axes[4].set_title("prediction: instances (yellow), truth (cyan), detections")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"weakly-points on MoNuSeg test {image_id} (top-left 400 x 400)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_curves(models: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks._common import training_log

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, p in models.items():
        rows = training_log(p)
        if not rows:
            continue
        it = [r["iteration"] for r in rows]
        axes[0].plot(it, [r["loss"] for r in rows], label=name)
        val = [(r["iteration"], r.get("val_f1")) for r in rows if r.get("val_f1") is not None]
        if val:
            axes[1].plot(*zip(*val, strict=True), "o-", label=name)
    axes[0].set(xlabel="iteration", ylabel="training loss (active task)", yscale="log")
    axes[1].set(xlabel="iteration", ylabel="validation detection F1")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def report(args, mach: dict, data: dict) -> str:
    mon = data["monuseg"]
    lines = [
        "## Weakly supervised from points (`benchmarks/weakly_points.py`)",
        "",
        f"Command: `python -m benchmarks.weakly_points --iterations {args.iterations} --crop "
        f"{args.crop} --batch {args.batch} --seed {args.seed}`. {machine_line(mach)}",
        "",
        f"Recipe `weakly-points` (ResNet-18 U-Net, width {data['width']}, one nucleus/background "
        f"softmax head, Ranger lr 1e-3, batch {args.batch}, {args.crop}² crops at object size "
        f"{data['object_size']} px ≈ the paper's 0.5 µm/px), {args.iterations} iterations per "
        "model (the paper: 60,900). MoNuSeg: 10 train / 3 val (seeded) / 14 test images; training "
        "reads points only (the folder has no masks/). Decoding tuned on val. Test split, "
        "per-image means (Table 1) and pooled detection at r 12 (Table 2):",
        "",
        "| combiner | train min | pixel acc | pixel F1 | object Dice | AJI | P | R | F1 | count CCC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in mon.items():
        lines.append(
            f"| {LABELS.get(key, key)} | {row['minutes']:.1f} | "
            + " | ".join(fmt(row.get(k)) for k in SEG_KEYS + ["precision", "recall", "f1", "ccc"])
            + " |"
        )
    for key, p in PAPER.items():
        lines.append(
            f"| paper: {LABELS[key]} (their IHC data) | — | "
            + " | ".join(fmt(p.get(k)) for k in SEG_KEYS + ["precision", "recall"])
            + f" | — | {fmt(p['ccc'])} |"
        )
    lines.append("")
    sched = mon.get("round_robin")
    if sched:
        hit = [
            f"{k} {sched[k]:.3f} {'≥' if sched[k] >= v else '<'} {v}" for k, v in TARGETS.items()
        ]
        met = all(sched[k] >= v for k, v in TARGETS.items())
        lines.append(
            f"Targets with the scheduler ({'all met' if met else 'not all met'}): "
            + "; ".join(hit)
            + "."
        )
    if sched and "sum" in mon:
        s = mon["sum"]
        better = [k for k in SEG_KEYS + ["precision", "recall", "ccc"] if sched[k] >= s[k]]
        lines.append(
            f"Scheduler ≥ naive sum on {len(better)} of 7 measures ({', '.join(better) or 'none'}): "
            + (
                "the paper's finding holds here."
                if len(better) >= 5
                else "the paper's finding does not hold at this budget."
            )
        )
    if sched and "masks" in mon:
        m = mon["masks"]
        lines.append(
            f"What points-only costs against full masks at the same budget: AJI {sched['aji']:.3f} vs "
            f"{m['aji']:.3f}, object Dice {sched['object_dice']:.3f} vs {m['object_dice']:.3f}, "
            f"detection F1 {sched['f1']:.3f} vs {m['f1']:.3f}."
        )
    crc = data.get("crchisto")
    if crc:
        lines += [
            "",
            f"CRCHisto, points only ({LABELS['round_robin']}, {crc['minutes']:.1f} min): test "
            f"P {crc['precision']:.3f}, R {crc['recall']:.3f}, F1 {crc['f1']:.3f} at r 6, count "
            f"CCC {crc['ccc']:.3f}.",
        ]
    lines += [
        "",
        "![](docs/weakly_points_panel.png)",
        "",
        "![](docs/weakly_points_curves.png)",
    ]
    return "\n".join(lines)


def cli() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--combiners", default="round_robin,sum,uncertainty")
    ap.add_argument("--skip-masks", action="store_true", help="no full-mask comparison")
    ap.add_argument("--skip-crchisto", action="store_true", help="no CRCHisto run")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from results/")
    return ap.parse_args()


def main() -> None:
    args = cli()
    if args.report_only:
        saved, args = read_results("weakly_points")
        update_benchmarks_md("weakly_points", report(args, saved["machine"], saved["data"]))
        return
    mach = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    truth = SHARED_DATA / "monuseg"
    rows = monuseg_splits(args.seed)
    points_only = link_dataset(truth, WORK / "monuseg_points", rows, ("images", "points"))
    with_masks = link_dataset(truth, WORK / "monuseg_masks", rows, ("images", "points", "masks"))
    data: dict = {"monuseg": {}, "val_ids": [r.split(",")[0] for r in rows if ",val," in r]}
    paths = {}
    for combine in args.combiners.split(","):
        recipe = recipe_for(args, combine)
        model, minutes = train_one(recipe, points_only, f"monuseg-{combine}")
        res = score_segmentation(model, points_only, truth, "test", 12.0)
        res.update(minutes=minutes, decode=model.decode)
        data["monuseg"][combine] = res
        paths[combine] = model.path
        print(
            combine,
            {k: round(res[k], 3) for k in SEG_KEYS + ["precision", "recall", "ccc"]},
            flush=True,
        )
        if combine == "round_robin":
            plot_panel(model, points_only, truth, Dataset(truth).ids("test")[0],
                       REPO / "docs" / "weakly_points_panel.png")  # fmt: skip
    if not args.skip_masks:
        recipe = masks_recipe(recipe_for(args, "round_robin"))
        model, minutes = train_one(recipe, with_masks, "monuseg-masks")
        res = score_segmentation(model, with_masks, truth, "test", 12.0)
        res.update(minutes=minutes, decode=model.decode)
        data["monuseg"]["masks"] = res
        paths["masks"] = model.path
    if not args.skip_crchisto:
        crc = SHARED_DATA / "crchisto"
        model, minutes = train_one(
            recipe_for(args, "round_robin", 6.0), crc, "crchisto-round_robin"
        )
        res = score_segmentation(model, crc, crc, "test", 6.0)
        res.update(minutes=minutes, decode=model.decode)
        data["crchisto"] = res
        paths["crchisto"] = model.path
    plot_curves(paths, REPO / "docs" / "weakly_points_curves.png")
    r = load_recipe("weakly-points")
    data.update(width=r["net"]["width"], object_size=r["training"]["object_size"])
    write_results("weakly_points", {"command": vars(args), "machine": mach, "data": data})
    update_benchmarks_md("weakly_points", report(args, mach, data))


if __name__ == "__main__":
    main()
