"""DeepDistance (seeds/deepdistance.md) at CPU scale: Table 2 on live cells and fluorescent
nuclei, region-growing segmentation (§4.7) and Fig. 6/7.

    python -m benchmarks.deepdistance [--iterations 1500] [--base 16] [--crop 256] [--seed 0]
                                      [--recipes all] [--datasets usiigaci,dsb]

Datasets and splits (symlinks under runs/, nothing copied):
- usiigaci: Usiigaci's repository gives train 45 / val 5 and no test set, so of the 45
  train ids sorted by name every 5th (the 1st, 6th, ...) is test (9 images), the rest
  train (36); the 5 val images stay val.
- dsb: dsb2018_fluo's group fluo_256x256 (84 train / 18 val / 18 test) is the dependent
  set; the test images of every other group (other sizes, i.e. other acquisitions) are the
  "independent" column, like the paper's unseen cell line.

Every recipe (deepdistance, deepdistance-extended and the five comparison systems) is
trained on the train split with early stopping on the val tiles, then h (or the component
area threshold) is chosen on train + val by F-score (§4.3), and the test images are scored
with the one-to-one rule (§4.2) at the dataset's median cell radius (from the train
masks). deepdistance-extended's maps are also segmented by marker-controlled region
growing and scored with Dice, AJI and CDS. Writes results/deepdistance.json,
docs/deepdistance_maps.png (Fig. 6/7), docs/deepdistance_segmentation.png and the
'deepdistance' section of BENCHMARKS.md. Finished models in runs/deepdistance/ are reused.
"""

from __future__ import annotations

import argparse
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
from cellmaps.metrics.detection import nan_mean
from cellmaps.metrics.segmentation import segmentation_scores
from cellmaps.model import Model, segment_image
from cellmaps.recipes import load_recipe
from cellmaps.tune import apply_tuning, score_split, tune_decoding

WORK = REPO / "runs" / "deepdistance"
RECIPES = [
    "deepdistance",
    "deepdistance-extended",
    "single-inner",
    "single-outer",
    "single-classification",
    "cascaded-classification-inner",
    "multi-classification-boundary",
]
DSB_GROUP = "fluo_256x256"


# -- splits -------------------------------------------------------------------------------
def usiigaci_split(src: Path, dst: Path) -> Path:
    """Every 5th of the sorted train ids becomes test."""
    ds = Dataset(src)
    train_ids = sorted(i for i in ds.ids() if ds.split_of(i) == "train")
    test = set(train_ids[::5])
    rows = [f"{i},{'test' if i in test else ds.split_of(i)},{ds.group_of(i)}" for i in ds.ids()]
    return link_dataset(src, dst, rows)


def dsb_split(src: Path, dst: Path) -> Path:
    """Group fluo_256x256 keeps its train/val/test; other groups' test images → 'indep'."""
    ds = Dataset(src)
    rows = []
    for i in ds.ids():
        split, group = ds.split_of(i), ds.group_of(i)
        if group == DSB_GROUP:
            rows.append(f"{i},{split},{group}")
        elif split == "test":
            rows.append(f"{i},indep,{group}")
    return link_dataset(src, dst, rows)


def median_cell_radius(root: Path) -> float:
    """Median sqrt(area/π) of the train masks' cells, rounded to a pixel."""
    ds = Dataset(root)
    areas = []
    for i in ds.ids("train"):
        counts = np.bincount(ds.mask(i).ravel())[1:]
        areas += counts[counts > 0].tolist()
    return float(np.round(np.median(np.sqrt(np.array(areas) / np.pi))))


# -- training and scoring -----------------------------------------------------------------
def recipe_for(
    name: str, args, radius: float, alpha: float | None = None, object_size: float | None = None
) -> dict:
    """The bundled recipe at the benchmark's size: base width, tiles, iterations, seed,
    matching radius; optional α, optimiser, schedule and canonical object size."""
    r = load_recipe(name)
    r["net"]["base"] = args.base
    r["training"].update(
        iterations=args.iterations, seed=args.seed, crop=args.crop, tile_stride=args.crop // 2
    )
    if object_size is not None:
        r["training"]["train_radius"] = object_size
    if getattr(args, "schedule", None):
        r["optimizer"]["schedule"] = args.schedule
    r["evaluate"]["radius"] = radius
    r["inference"].update(tile=args.crop, stride=args.crop // 2)
    for t in r["tasks"]:
        if t["target"] == "inner_distance" and alpha is not None:
            t["target_options"]["alpha"] = alpha
    if args.optimizer == "adam":
        r["optimizer"] = {**r["optimizer"], "kind": "adam", "lr": args.lr}
    elif args.optimizer == "adadelta":
        r["optimizer"] = {**r["optimizer"], "kind": "adadelta", "lr": 1.0}
    return r


def dataset_values(text: str) -> dict[str, float]:
    """``usiigaci=0.01,dsb=0.1`` → {dataset: value} (for --alpha and --object-size)."""
    return {k: float(v) for k, v in (x.split("=") for x in text.split(",") if x)}


def dataset_alphas(args) -> dict[str, float]:
    return dataset_values(args.alpha)


def draw_curves(data: dict) -> list[str]:
    """docs/deepdistance_curves_<dataset>.png: loss, validation loss and learning rate of
    deepdistance-extended's run on each dataset (from its log next to the cached model);
    returns report lines naming them with the run's LR summary."""
    from benchmarks._common import lr_summary, save_training_curves

    lines = []
    for key, v in data.items():
        r = v["recipes"].get("deepdistance-extended")
        if not r or "model" not in r:
            continue
        png = REPO / "docs" / f"deepdistance_curves_{key}.png"
        rows = save_training_curves(Path(r["model"]), png)
        if rows:
            vl = [x["val_loss"] for x in rows if x.get("val_loss") is not None]
            lines.append(
                f"- {key}: `docs/{png.name}` — {lr_summary(rows)}; validation loss "
                f"{vl[0]:.4f} → {vl[-1]:.4f} (best {min(vl):.4f})."
            )
    return lines


def segment_dataset(model: Model, root: Path, key: str, splits: list[str], figures: bool) -> dict:
    """Marker threshold chosen on val by AJI, then region-growing scores on each test split."""
    chosen = choose_outer_min(model, root)
    seg = {s: score_segmentation(model, root, s, chosen["outer_min"]) for s in splits}
    if key == "usiigaci" and figures:
        plot_segmentation(
            model,
            root,
            Dataset(root).ids("test")[0],
            REPO / "docs" / "deepdistance_segmentation.png",
            chosen["outer_min"],
        )
    return {"segmentation_choice": chosen, "segmentation": seg}


def rescore_segmentation(name: str) -> None:
    """--segmentation-only: region growing of the saved deepdistance-extended models again
    with the current code; the results JSON records the code that scored it."""
    from cellmaps.provenance import code_version

    saved, run_args = read_results(name)
    for key, v in saved["data"].items():
        r = v["recipes"].get("deepdistance-extended")
        if not r or "model" not in r:
            continue
        model = Model.load(r["model"])
        root = WORK / key
        v.update(segment_dataset(model, root, key, v["splits"], name == "deepdistance"))
        v["segmentation_code"] = code_version()
        print(key, "segmentation", v["segmentation"], flush=True)
    write_results(name, saved)
    update_benchmarks_md(name, report(run_args, saved["machine"], saved["data"]))


def redraw_maps(saved: dict) -> None:
    """Fig. 6/7 again from the finished usiigaci models (for --report-only)."""
    names = ["single-inner", "single-outer", "deepdistance", "deepdistance-extended"]
    recipes = saved["data"].get("usiigaci", {}).get("recipes", {})
    paths = {n: Path(recipes[n]["model"]) for n in names if "model" in recipes.get(n, {})}
    if len(paths) == len(names) and all(p.is_file() for p in paths.values()):
        root = WORK / "usiigaci"
        models = {n: Model.load(p) for n, p in paths.items()}
        plot_maps(
            models, root, Dataset(root).ids("test")[0], REPO / "docs" / "deepdistance_maps.png"
        )


def train_or_reuse(recipe: dict, root: Path, key: str, name: str) -> Model:
    """Train (or reuse the model trained from the same recipe, data and code), then choose
    h (or the area threshold) on train + val (§4.3)."""
    sources = [(str(root), "train", 1.0)]
    model = cached_train(recipe, sources, [(str(root), "val")], WORK, f"{key}_{name}")
    if "tuned_on_train_val" not in model.training:
        both = [(str(root), "train"), (str(root), "val")]
        best = tune_decoding(model, both, progress=False)
        apply_tuning(model, best, both)
        model.training["tuned_on_train_val"] = {"param": best["param"], "f1": best["f1"]}
        model.save(model.path)
    return model


OUTER_MIN_GRID = (0.5, 0.4, 0.3, 0.2, 0.1, 0.05)


def score_segmentation(model: Model, root: Path, split: str, outer_min: float) -> dict:
    """Mean Dice, AJI and CDS of region-growing masks over the split's images."""
    ds = Dataset(root)
    rows = []
    for i in ds.ids(split):
        _, mask = segment_image(model, ds.image(i), outer_min=outer_min)
        rows.append(segmentation_scores(ds.mask(i), mask))
    keys = ("dice", "aji", "cds", "object_dice")
    return {"outer_min": outer_min, **{k: nan_mean(r[k] for r in rows) for k in keys}}


def choose_outer_min(model: Model, root: Path) -> dict:
    """The marker threshold on the outer distance (paper: 0.5) with the best mean AJI on the
    val images, from OUTER_MIN_GRID (our nets underestimate the outer distance's peak)."""
    ds = Dataset(root)
    cached = [(ds.mask(i), model.predict_maps(ds.image(i))) for i in ds.ids("val")]
    scores = {}
    for t in OUTER_MIN_GRID:
        ajis = [
            segmentation_scores(truth, segment_image(model, None, outer_min=t, maps=m)[1])["aji"]
            for truth, m in cached
        ]
        scores[t] = nan_mean(ajis)
    best = max(OUTER_MIN_GRID, key=lambda t: scores[t])
    return {"outer_min": best, "val_aji": scores}


# -- figures ------------------------------------------------------------------------------
def plot_maps(models: dict[str, Model], root: Path, image_id: str, path: Path) -> None:
    """Fig. 6/7: true and estimated inner (top) and outer (bottom) distance maps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellmaps.targets import inner_distance, outer_distance

    ds = Dataset(root)
    img, mask = ds.image(image_id), ds.mask(image_id)
    alpha = next(
        t["target_options"].get("alpha", 0.1)
        for m in models.values()
        for t in m.recipe["tasks"]
        if t["target"] == "inner_distance"
    )
    rows = [
        (
            "inner",
            inner_distance(mask, alpha),
            ["single-inner", "deepdistance", "deepdistance-extended"],
        ),
        ("outer", outer_distance(mask), ["single-outer", "deepdistance", "deepdistance-extended"]),
    ]
    fig, axes = plt.subplots(2, 5, figsize=(17, 7))
    for (task, truth, names), ax_row in zip(rows, axes, strict=True):
        ax_row[0].imshow(img, cmap="gray")
        ax_row[0].set_title(image_id)
        ax_row[1].imshow(truth, cmap="magma", vmin=0, vmax=1)
        ax_row[1].set_title(
            f"{task} distance from the mask" + (f" (α {alpha:g})" if task == "inner" else "")
        )
        for ax, name in zip(ax_row[2:], names, strict=True):
            if name in models:
                est = models[name].predict_maps(img)[task][0]
                ax.imshow(est, cmap="magma", vmin=0, vmax=1)
                ax.set_title(f"{name}: estimated {task}\n(max {est.max():.2f})")
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


def plot_segmentation(
    model: Model, root: Path, image_id: str, path: Path, outer_min: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    ds = Dataset(root)
    img, truth = ds.image(image_id), ds.mask(image_id)
    pts, mask = segment_image(model, img, outer_min=outer_min)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    for ax, m, title in ((axes[0], truth, "annotated"), (axes[1], mask, "region growing")):
        ax.imshow(label2rgb(m, image=img if img.ndim == 2 else img[..., 0], bg_label=0, alpha=0.3))
        ax.contour(find_boundaries(m), levels=[0.5], colors="yellow", linewidths=0.5)
        ax.set_title(f"{title} ({len(np.unique(m)) - 1} cells)")
        ax.axis("off")
    axes[1].plot(pts.coords[:, 1], pts.coords[:, 0], "c+", ms=5)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)


# -- report -------------------------------------------------------------------------------
def cli_args(args) -> list[str]:
    out = []
    for k, v in vars(args).items():
        if k not in ("report_only", "segmentation_only") and v not in ("", None):
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


TARGET_USIIGACI_F = 0.85
PAPER_USIIGACI_F = 0.92
MULTI_TASK = ("deepdistance", "deepdistance-extended")
SINGLE_TASK = ("single-inner", "single-outer", "single-classification")


def ordering_lines(data: dict) -> list[str]:
    """Does the paper's ordering (multi-task ≥ single-task) hold in each test column?"""
    out = []
    for key, v in data.items():
        rec = v["recipes"]
        if not all(n in rec for n in MULTI_TASK + SINGLE_TASK):
            continue
        for split in v["splits"]:
            f = {n: rec[n]["test"][split]["f1"] for n in MULTI_TASK + SINGLE_TASK}
            best_multi = max(MULTI_TASK, key=f.get)
            best_single = max(SINGLE_TASK, key=f.get)
            holds = f[best_multi] >= f[best_single]
            out.append(
                f"- {key} {split}: best multi-task {best_multi} F {f[best_multi]:.3f} vs best "
                f"single-task {best_single} F {f[best_single]:.3f} — the paper's ordering "
                f"{'holds' if holds else 'does not hold'}"
                + (
                    ""
                    if f["deepdistance"] >= f[best_single]
                    else f" (two-task deepdistance alone: {f['deepdistance']:.3f})"
                )
                + "."
            )
    return out


def probe_lines() -> list[str]:
    """How α was chosen for usiigaci: the probe runs' train + val F (results/*probe*.json)."""
    import json

    from benchmarks._common import RESULTS

    rows = []
    for path in sorted(RESULTS.glob("deepdistance_probe_*.json")):
        d = json.loads(path.read_text())
        for key, v in d["data"].items():
            for name, r in v["recipes"].items():
                alpha = v.get("alpha") or d["command"].get("alpha") or 0.1
                opt = d["command"].get("optimizer", "adadelta")
                rows.append(
                    f"| {path.stem} | {key} | {name} | {alpha} | {opt} | "
                    f"{r['iterations']} | {r['tuned']['f1']:.3f} | {r['test']['test']['f1']:.3f} |"
                )
    if not rows:
        return []
    return [
        "Earlier probe runs (old engine, usiigaci at its own scale; `--name deepdistance_probe_*`, "
        "their own sections below; test F shown, never used) chose Adam over AdaDelta and an α "
        "of 0.01 for usiigaci's 25-px cells; training at an 8-px object size now gives the "
        "paper's α = 0.1 the same reach on every dataset:",
        "",
        "| probe | dataset | recipe | α | optimiser | iterations | train + val F | test F |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def report(args, mach: dict, data: dict) -> str:
    lines = [
        f"## DeepDistance: {args.name} (`benchmarks/deepdistance.py`)",
        "",
        f"`python -m benchmarks.deepdistance {' '.join(cli_args(args))}`. {machine_line(mach)}",
        f"U-Net base {args.base} (paper: 64), {args.crop}² tiles cut at stride {args.crop // 2} "
        f"(paper: 512² at 256), batch 2, "
        f"{'AdaDelta' if args.optimizer == 'adadelta' else f'Adam lr {args.lr:g} (paper: AdaDelta)'}"
        f", up to {args.iterations} iterations with early "
        "stopping on the val tiles; h (area threshold for multi-classification-boundary) chosen "
        "on train + val; one-to-one matching (§4.2) at the median cell radius of each dataset's "
        "train masks: " + ", ".join(f"{k} {v['radius']:g} px" for k, v in data.items()) + "; "
        "inner-distance α: "
        + ", ".join(f"{k} {v['alpha']:g}" for k, v in data.items())
        + "; trained at object size: "
        + ", ".join(
            f"{k} "
            + (
                f"{v['object_size']:g} px radius (images ×{next(iter(v['recipes'].values()))['factor']:.2f})"
                if v.get("object_size")
                else "data scale"
            )
            for k, v in data.items()
        )
        + f"; LR schedule {getattr(args, 'schedule', '') or 'the recipe’s'}.",
        "Splits: usiigaci 36 train / 5 val / 9 test (every 5th repository train id is test); dsb "
        f"= dsb2018_fluo group {DSB_GROUP} (train / val / test), 'independent' = the test images "
        "of every other dsb group.",
        "",
    ]
    commits = sorted(
        {
            (r.get("code") or {}).get("commit", "?")[:7]
            + ("*" if (r.get("code") or {}).get("dirty") else "")
            for v in data.values()
            for r in v["recipes"].values()
        }
    )
    lines += [f"Models trained from commit(s) {', '.join(commits)} (* = uncommitted changes).", ""]
    cols = [(k, s) for k, v in data.items() for s in v["splits"]]
    head = " | ".join(f"{k} {s} F (P / R)" for k, s in cols)
    lines += [f"| recipe | {head} | minutes |", "|---" * (len(cols) + 2) + "|"]
    for name in RECIPES:
        cells = []
        minutes = []
        for k, s in cols:
            r = data[k]["recipes"].get(name)
            if r is None:
                cells.append("—")
                continue
            t = r["test"][s]
            cells.append(f"{t['f1']:.3f} ({t['precision']:.3f} / {t['recall']:.3f})")
            minutes.append(f"{r['minutes']:.0f}")
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {' / '.join(dict.fromkeys(minutes))} |"
        )
    ext = data.get("usiigaci", {}).get("recipes", {}).get("deepdistance-extended")
    if ext:
        f = ext["test"]["test"]["f1"]
        reached = f >= TARGET_USIIGACI_F
        lines += [
            "",
            f"Target (issue): deepdistance-extended F ≥ {TARGET_USIIGACI_F} on usiigaci test "
            f"(paper {PAPER_USIIGACI_F}); measured {f:.3f}, "
            + ("reached." if reached else "not reached. ")
            + (
                ""
                if reached
                else f"What limits it: {ext['iterations']} iterations (~{ext['minutes']:.0f} min "
                f"on 2 cores) of a base-{args.base} U-Net on {args.crop}² tiles, against the "
                "paper's base-64 net trained to convergence on 512² tiles on a GPU; the "
                "estimated inner-distance peaks (Fig. 6/7 panel titles give each map's maximum) "
                "against the true peak of 1 show how far the fit is from the target."
            ),
        ]
    lines += ["", "Multi-task vs single-task (§4.6):", "", *ordering_lines(data)]
    lines += [
        "",
        *probe_lines(),
        "",
        "Region-growing segmentation (§4.7) of deepdistance-extended's maps, mean per image "
        "(marker threshold on the outer distance chosen on val by AJI, paper 0.5; maps of a "
        "model trained at another object size are brought back to the image's pixels first, "
        "so §4.7's sizes stay in image pixels):",
        "",
    ]
    lines += ["| test split | Dice | AJI | CDS | object Dice |", "|---|---|---|---|---|"]
    for k, v in data.items():
        for s, seg in v.get("segmentation", {}).items():
            lines.append(
                f"| {k} {s} | {seg['dice']:.3f} | {seg['aji']:.3f} | {seg['cds']:.3f} | "
                f"{seg['object_dice']:.3f} |"
            )
    curves = draw_curves(data)
    if curves:
        lines += ["", "Training curves of deepdistance-extended (loss, validation loss, LR):", ""]
        lines += curves
    lines += [
        "",
        "Figures: `docs/deepdistance_maps.png` (Fig. 6/7: true vs estimated inner and outer "
        "distance, single- vs multi-task, one usiigaci test image), "
        "`docs/deepdistance_segmentation.png`.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipes", default="all")
    ap.add_argument("--datasets", default="usiigaci,dsb")
    ap.add_argument(
        "--optimizer",
        choices=["", "adadelta", "adam"],
        default="",
        help="default: the recipe's (Adam); adadelta = the paper's; adam takes --lr",
    )
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate for --optimizer adam")
    ap.add_argument(
        "--alpha",
        default="",
        help="inner-distance decay α per dataset, e.g. usiigaci=0.01 (default: the recipe's, "
        "the paper's 0.1)",
    )
    ap.add_argument(
        "--object-size",
        default="",
        help="canonical object radius (px) to train at per dataset, e.g. usiigaci=8 (images "
        "and masks resampled; default: the data's own scale)",
    )
    ap.add_argument(
        "--schedule",
        default="",
        help="learning-rate schedule (default: the recipe's optimizer.schedule)",
    )
    ap.add_argument("--name", default="deepdistance", help="results/NAME.json and its section")
    ap.add_argument(
        "--segmentation-only",
        action="store_true",
        help="redo only the region-growing scores of results/NAME.json's deepdistance-extended "
        "models with the current code (the models are reused, not retrained)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite the BENCHMARKS.md section from results/NAME.json without running",
    )
    args = ap.parse_args()
    if args.segmentation_only:
        rescore_segmentation(args.name)
        return
    if args.report_only:
        saved, run_args = read_results(args.name)
        update_benchmarks_md(args.name, report(run_args, saved["machine"], saved["data"]))
        redraw_maps(saved)
        return
    names = RECIPES if args.recipes == "all" else args.recipes.split(",")
    figures = args.name == "deepdistance"  # probes (other names) leave the docs figures alone
    roots = {
        "usiigaci": (
            lambda: usiigaci_split(SHARED_DATA / "usiigaci_phc", WORK / "usiigaci"),
            ["test"],
        ),
        "dsb": (lambda: dsb_split(SHARED_DATA / "dsb2018_fluo", WORK / "dsb"), ["test", "indep"]),
    }
    alphas = dataset_alphas(args)
    sizes = dataset_values(args.object_size)
    data = {}
    models_for_fig = {}
    for key in args.datasets.split(","):
        make, splits = roots[key]
        root = make()
        radius = median_cell_radius(root)
        alpha = alphas.get(key)
        size = sizes.get(key)
        recipe_size = load_recipe("deepdistance-extended")["training"]["train_radius"]
        data[key] = {
            "radius": radius,
            "splits": splits,
            "recipes": {},
            "alpha": alpha or 0.1,
            "object_size": size if size is not None else recipe_size,
        }
        for name in names:
            model = train_or_reuse(recipe_for(name, args, radius, alpha, size), root, key, name)
            res = {
                "model": str(model.path),
                "code": model.training.get("code"),
                "factor": (model.training.get("object_sizes") or [{}])[0].get("factor", 1.0),
                "test": {s: score_split(model, root, s, radius, "one-to-one") for s in splits},
                "decode": model.decode,
                "tuned": model.training["tuned_on_train_val"],
                "iterations": model.training["iterations"],
                "stop": model.training.get("stop_reason"),
                "minutes": model.training["elapsed_seconds"] / 60,
            }
            data[key]["recipes"][name] = res
            print(key, name, {s: round(v["f1"], 4) for s, v in res["test"].items()}, flush=True)
            if key == "usiigaci":
                models_for_fig[name] = model
            if name == "deepdistance-extended":
                data[key].update(segment_dataset(model, root, key, splits, figures))
                print(key, "segmentation", data[key]["segmentation"], flush=True)
    if "usiigaci" in data and figures and len(models_for_fig) == len(RECIPES):
        root = WORK / "usiigaci"
        plot_maps(
            models_for_fig,
            root,
            Dataset(root).ids("test")[0],
            REPO / "docs" / "deepdistance_maps.png",
        )
    mach = machine()
    write_results(args.name, {"machine": mach, "command": vars(args), "data": data})
    text = report(args, mach, data)
    update_benchmarks_md(args.name, text)
    print(text)


if __name__ == "__main__":
    main()
