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
import time
from pathlib import Path

import numpy as np

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    cached_train,
    link_dataset,
    machine,
    machine_line,
    read_results,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset
from cellmaps.metrics.counts import concordance_correlation
from cellmaps.metrics.detection import nan_mean, pool_detection
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
        out.update({k: nan_mean(r[k] for r in per_image) for k in SEG_KEYS})
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
    # the label maps as training computes them: at the training scale (object size)
    from cellmaps.targets.build import Annotations
    from cellmaps.training.data import rescaled_annotations

    factor = model.training["train_radius"] / model.training["data_object_size"]
    small = rescaled_annotations(
        Annotations(image=img_c, points=p_c, labels=None, mask=None, roi=None, source=image_id),
        factor,
    )
    vor = voronoi_labels(small.points, small.image.shape[:2])
    opts = next(t for t in model.recipe["tasks"] if t["target"] == "cluster_labels")
    clu = cluster_labels(small.image, small.points, **opts["target_options"])
    rep = filtered_repel(small.image, small.points, clusters=clu)
    maps = model.predict_maps(img)
    prob = np.asarray(maps[model.decode["task"]][model.decode["channel"]])
    if maps.rescaled:
        from cellmaps.postprocess.segment import resize_map_to

        prob = resize_map_to(prob, maps.input_shape)
    found, mask = segment_image(model, img, maps=maps)
    truth_mask = tr.mask(image_id)[crop]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.8))
    axes[0].imshow(img_c)
    axes[0].plot(p_c[:, 1], p_c[:, 0], "g.", ms=3)
    axes[0].set_title("image + points (the only labels)", fontsize=10)
    shown = np.where(vor == 255, 0.5, vor.astype(float))
    axes[1].imshow(shown, cmap="RdYlGn", vmin=0, vmax=1)
    axes[1].set_title("Voronoi: edges 0, points 1, rest ignored", fontsize=10)
    axes[2].imshow(np.where(clu == 255, 0.5, clu.astype(float)), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("local k-means: nucleus / ignored / background", fontsize=10)
    axes[3].imshow(rep, cmap="magma")
    axes[3].set_title("filtered repel code", fontsize=10)
    axes[4].imshow(img_c)
    axes[4].imshow(np.ma.masked_less(prob[crop], 0.5), cmap="viridis", alpha=0.35)
    yy, xx = np.nonzero(find_boundaries(mask[crop]))
    axes[4].plot(xx, yy, ",", color="yellow")
    yy, xx = np.nonzero(find_boundaries(truth_mask))
    axes[4].plot(xx, yy, ",", color="cyan")
    f = found.coords
    f = f[(f[:, 0] < 400) & (f[:, 1] < 400)]
    axes[4].plot(f[:, 1], f[:, 0], "r+", ms=4)
    axes[4].set_title("prediction (yellow), truth (cyan), detections (+)", fontsize=10)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(
        f"weakly-points on MoNuSeg test {image_id} (top-left 400 x 400; label maps at the "
        f"training scale, x{factor:.2f})"
    )
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


def redraw_panel() -> None:
    """The panel again from the newest cached recipe (round robin) model, if there is one."""
    models = sorted(WORK.glob("monuseg-round_robin-*.safetensors"), key=lambda p: p.stat().st_mtime)
    if models:
        truth = SHARED_DATA / "monuseg"
        plot_panel(Model.load(models[-1]), WORK / "monuseg_points", truth,
                   Dataset(truth).ids("test")[0], REPO / "docs" / "weakly_points_panel.png")  # fmt: skip


def validation_curve(name: str) -> list[tuple[int, float]]:
    """(iteration, validation F1) of the newest cached run called ``name`` (its log)."""
    from benchmarks._common import training_log

    models = sorted(WORK.glob(f"{name}-*.safetensors"), key=lambda p: p.stat().st_mtime)
    if not models:
        return []
    rows = training_log(models[-1])
    return [(int(r["iteration"]), r["val_f1"]) for r in rows if r.get("val_f1") is not None]


def limits_lines(data: dict) -> list[str]:
    """What limits the scores, computed from the runs: the full-mask model at the same
    budget against the targets, and whether validation F1 was still rising at the end."""
    mon, out = data["monuseg"], []
    if "masks" in mon:
        m = mon["masks"]
        below = [k for k in ("aji", "object_dice") if m[k] < TARGETS[k]]
        out.append(
            "Even with full masks the same budget gives AJI "
            f"{m['aji']:.3f} and object Dice {m['object_dice']:.3f}"
            + (
                f": {' and '.join(below)} below the target, so the training budget, not only "
                "the point labels, limits these scores."
                if below
                else ": the targets are reachable with masks at this budget; the point labels "
                "cost the difference."
            )
        )
    for key in ("round_robin", "masks"):
        curve = data.get("curves", {}).get(key) or []
        if len(curve) >= 2:
            (_, f0), (i1, f1) = curve[-2], curve[-1]
            trend = "still rising" if f1 > f0 else "no longer rising"
            out.append(
                f"Validation F1 of the {LABELS[key].split(' (')[0]} run: "
                + " → ".join(f"{f:.3f}" for _, f in curve)
                + f" (iterations {curve[0][0]}–{i1}): {trend} at the end."
            )
    return out


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
    lines += limits_lines(data)
    quality = data.get("cluster_quality") or []
    if quality:
        best = max(quality, key=lambda q: q["f1"])
        lines += [
            "",
            "How the cluster labels were chosen (validation images, training scale; the masks "
            "are used for this choice only): pixel F1 of the nucleus / background labels against "
            "the true nucleus pixels, on the pixels they label.",
            "",
            "| k | distance clip (px) | label pixel F1 | share ignored |",
            "|---|---|---|---|",
            *[
                f"| {q['k']} | {q['clip']:g} | {q['f1']:.3f} | {q['ignored']:.2f} |"
                for q in quality
            ],
            "",
            f"Best: k {best['k']}, clip {best['clip']:g} (F1 {best['f1']:.3f}).",
        ]
    abl = data.get("ablation") or {}
    if abl and sched:
        lines += [
            "",
            "Ablation (round robin, same budget; chosen by validation F1, test shown beside):",
            "",
            "| run | val F1 | test AJI | test object Dice | test P | test R | test CCC |",
            "|---|---|---|---|---|---|---|",
            f"| recipe (k 3, clip 10, lr 1e-3) | {fmt(sched.get('val_f1'))} | {sched['aji']:.3f} | "
            f"{sched['object_dice']:.3f} | {sched['precision']:.3f} | {sched['recall']:.3f} | "
            f"{sched['ccc']:.3f} |",
        ]
        for key, row in abl.items():
            lines.append(
                f"| {VARIANTS[key][0]} | {fmt(row.get('val_f1'))} | {row['aji']:.3f} | "
                f"{row['object_dice']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | "
                f"{row['ccc']:.3f} |"
            )
        best = max([("recipe", sched), *abl.items()], key=lambda kv: kv[1].get("val_f1") or 0)
        name = "the recipe" if best[0] == "recipe" else VARIANTS[best[0]][0]
        lines += ["", f"Best on validation: {name}."]
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


def cluster_label_quality(folder: Path, ids: list[str], object_size: float) -> list[dict]:
    """Pixel F1 (on the pixels they label) of the local k-means labels against the true
    nucleus pixels of the validation images, at the training scale, for each of
    CLUSTER_SETTINGS: how the recipe's k and distance clip were chosen (masks used for this
    choice only, never for training)."""
    from cellmaps.targets.build import Annotations
    from cellmaps.targets.weak import cluster_labels
    from cellmaps.training.data import measure_object_size, rescaled_annotations

    ds = Dataset(folder)
    radius, _ = measure_object_size(ds, ds.ids("train"), use_masks=False)
    anns = []
    for i in ids:
        a = Annotations(image=ds.image(i), points=ds.points(i).coords, labels=None,
                        mask=ds.mask(i), roi=None, source=i)  # fmt: skip
        anns.append(rescaled_annotations(a, object_size / radius))
    out = []
    for k, clip in CLUSTER_SETTINGS:
        f1s, ignored = [], []
        for a in anns:
            truth = a.mask > 0
            lab = cluster_labels(a.image, a.points, k=k, clip=clip)
            keep = lab != 255
            tp = int(((lab == 1) & truth & keep).sum())
            fp = int(((lab == 1) & ~truth & keep).sum())
            fn = int(((lab == 0) & truth & keep).sum())
            f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
            ignored.append(1.0 - float(keep.mean()))
        out.append({"k": k, "clip": clip, "f1": float(np.mean(f1s)),
                    "ignored": float(np.mean(ignored))})  # fmt: skip
    return out


CLUSTER_SETTINGS = [(2, 20.0), (2, 10.0), (3, 20.0), (3, 10.0)]
VARIANTS = {  # round-robin runs that differ from the recipe in one choice (ablation)
    "paper_clusters": ("clusters k 2, clip 20 (Eq. 1 literally)", {"k": 2, "clip": 20.0}, None),
    "lr3e-3": ("learning rate 3e-3", None, 3e-3),
}


def variant_recipe(args, name: str) -> dict:
    _, clusters, lr = VARIANTS[name]
    r = recipe_for(args, "round_robin")
    for t in r["tasks"]:
        if clusters and t["target"] in ("cluster_labels", "filtered_repel"):
            t["target_options"] = {**t["target_options"], **clusters}
    if lr:
        r["optimizer"]["lr"] = lr
    return r


def cli() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--combiners", default="round_robin,sum,uncertainty")
    ap.add_argument("--variants", default="paper_clusters",
                    help=f"ablation runs (round robin), of {sorted(VARIANTS)}; '' = none")  # fmt: skip
    ap.add_argument("--skip-masks", action="store_true", help="no full-mask comparison")
    ap.add_argument("--skip-crchisto", action="store_true", help="no CRCHisto run")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from results/")
    return ap.parse_args()


def main() -> None:
    args = cli()
    if args.report_only:
        redraw_panel()
        saved, args = read_results("weakly_points")
        data = saved["data"]
        data.setdefault("curves", {k: validation_curve(f"monuseg-{k}") for k in data["monuseg"]})
        write_results("weakly_points", saved)
        update_benchmarks_md("weakly_points", report(args, saved["machine"], data))
        return
    mach = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    truth = SHARED_DATA / "monuseg"
    rows = monuseg_splits(args.seed)
    points_only = link_dataset(truth, WORK / "monuseg_points", rows, ("images", "points"))
    with_masks = link_dataset(truth, WORK / "monuseg_masks", rows, ("images", "points", "masks"))
    recipe = load_recipe("weakly-points")
    val_ids = [r.split(",")[0] for r in rows if ",val," in r]
    data: dict = {
        "monuseg": {},
        "ablation": {},
        "val_ids": val_ids,
        "width": recipe["net"]["width"],
        "object_size": recipe["training"]["train_radius"],
        "cluster_quality": cluster_label_quality(
            with_masks, val_ids, recipe["training"]["train_radius"]
        ),
    }
    paths = {}
    curves = data["curves"] = {}

    def save() -> None:  # after every model: a stopped run keeps what it measured
        write_results("weakly_points", {"command": vars(args), "machine": mach, "data": data})
        update_benchmarks_md("weakly_points", report(args, mach, data))

    def run(key: str, recipe: dict, folder: Path, truth_folder: Path, radius: float) -> Model:
        model, minutes = train_one(recipe, folder, key)
        res = score_segmentation(model, folder, truth_folder, "test", radius)
        res.update(minutes=minutes, decode=model.decode, val_f1=model.training.get("tuned_f1"))
        paths[key] = model.path
        curves[key.split("-", 1)[1]] = validation_curve(key)
        print(key, {k: round(v, 3) for k, v in res.items() if isinstance(v, float)}, flush=True)
        return model, res

    combiners = [c for c in args.combiners.split(",") if c]
    first = [c for c in combiners if c == "round_robin"]  # the recipe itself first, then
    jobs = [("monuseg", c, recipe_for(args, c)) for c in first]  # its ablation, then the rest
    jobs += [("ablation", v, variant_recipe(args, v)) for v in args.variants.split(",") if v]
    jobs += [("monuseg", c, recipe_for(args, c)) for c in combiners if c not in first]
    for group, key, rec in jobs:
        model, res = run(f"monuseg-{key}", rec, points_only, truth, 12.0)
        data[group][key] = res
        if key == "round_robin":
            plot_panel(model, points_only, truth, Dataset(truth).ids("test")[0],
                       REPO / "docs" / "weakly_points_panel.png")  # fmt: skip
        save()
    if not args.skip_masks:
        rec = masks_recipe(recipe_for(args, "round_robin"))
        _, data["monuseg"]["masks"] = run("monuseg-masks", rec, with_masks, truth, 12.0)
        save()
    if not args.skip_crchisto:
        crc = SHARED_DATA / "crchisto"
        rec = recipe_for(args, "round_robin", 6.0)
        _, data["crchisto"] = run("crchisto-round_robin", rec, crc, crc, 6.0)
        save()
    plot_curves(paths, REPO / "docs" / "weakly_points_curves.png")
    save()


if __name__ == "__main__":
    main()
