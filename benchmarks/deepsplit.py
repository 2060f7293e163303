"""DeepSplit (seeds/deepsplit.md) at CPU scale: Table 1 (cumulative) and Table 2
(simultaneous) layouts on fluorescent nuclei and phase-contrast cells, before and after
post-processing, side by side with StarDist trained from scratch on the same split within
the same CPU time.

    python -m benchmarks.deepsplit [--iterations 500] [--schedule cosine] [--base 16]
        [--crop 128] [--lr 1e-3] [--object-size 8 | dsb=8,usiigaci=12] [--seed 0]
        [--datasets dsb,usiigaci] [--models all] [--stardist dsb] [--name deepsplit]
        [--report-only | --rescore]

Datasets (nothing copied; symlinks under runs/ where the split is ours):
- dsb: dsb2018_fluo with its own seeded train / val / test split (166 / 38 / 38 images,
  every size group).
- usiigaci: usiigaci_phc's train ids sorted by name, every 5th → test (9), the rest train
  (36); its 5 val images stay val (as benchmarks/deepdistance.py).

Models (``--models``): unet (Ronneberger weight map, one output), and deepsplit,
branch-net, double-unet each trained cumulatively (stage 1 segmentation only with the
separation layers frozen, stage 2 segmentation 0.3 / separation 1.0; the recipes' stages
stretched to --iterations) and simultaneously (0.3 / 1.0 from the first step). Every net
is trained on the train split with the val images for model selection, at the object
scale --object-size (images resampled so cells have that radius), Adam at --lr, each image
stretched between its own 1st and 99.8th percentiles (the recipes' ``training.intensity``).
Ablation rows: ``cumulative-histeq`` (the paper's histogram equalisation instead),
``cumulative-range`` (neither: 8-bit values / 255), ``cumulative-robust`` (gamma, blur and
noise jitter and 10 % empty crops added), ``cumulative-perimage`` (each training image
resampled from its own median radius, ``training.object_scale: image``, and each val/test
image's scale estimated from the model's own instances, ``inference.object_size: auto``),
``cumulative-wide`` (twice --base), ``cumulative-wide4`` (four times: the paper's 64),
``cumulative-gap3`` (separation target and its weights at 3 px from two cells instead of 2:
a wider gap to learn).

Post-processing: "before" = connected components of segmentation > 0.5 minus
separation > 0.5 (the raw output); "after" = :func:`cellmaps.postprocess.split.split_instances`
(holes filled, small objects removed, seeded watershed that only cuts along borders
shorter than ``decode.max_border``). The cell and separation probability thresholds and
max_border are chosen on the val images by CDS (ties → AJI) by
:func:`cellmaps.tune.tune_split` (as ``cellmaps tune`` does) and kept in the model file;
"before" uses 0.5 for both. ``--rescore`` repeats the choice and the test scoring with the
current code on the trained models of results/<name>.json.

Scores on the test images (cellmaps.metrics.segmentation): DSC = Dice of the binary cell
masks, mean over images; CDS = 2TP/(2TP+FP+FN) with cells matched one-to-one at IoU ≥ 0.5
(position and area both enter the IoU), TP/FP/FN pooled over the test images — CDS is
the instance F1 at IoU 0.5; AJI, mean over images.

StarDist (``--stardist``; benchmarks/peers/stardist_train.py in its own venv, made by
``bash benchmarks/peers/setup.sh stardist``) trains from scratch on the same train images
for the wall time the cumulative DeepSplit model took, with the same val images and the
same object scale, then both predict the test images one after the other in this run;
end-to-end time per image = read + normalise + net + post-processing to a label image.

Writes results/<name>.json, docs/deepsplit_panel.png and the <name> section of
BENCHMARKS.md. Finished models in runs/deepsplit/ are reused when recipe, data and code
match.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
from benchmarks.deepdistance import usiigaci_split
from cellmaps.io import Dataset, read_image
from cellmaps.metrics import nan_mean, prf
from cellmaps.metrics.segmentation import (
    INSTANCE_ERROR_KINDS,
    aji,
    dice,
    instance_errors,
    instance_scores,
)
from cellmaps.model import Model, segment_image
from cellmaps.postprocess.segment import split_probabilities
from cellmaps.recipes import load_recipe
from cellmaps.tune import SPLIT_DECODE_KEYS, tune_split

WORK = REPO / "runs" / "deepsplit"
PEERS = REPO / "benchmarks" / "peers"
# (row label, recipe, training mode); unet has one task, so one mode
MODELS = [
    ("U-Net", "unet", "single"),
    ("DeepSplit", "deepsplit", "cumulative"),
    ("Branch-Net", "branch-net", "cumulative"),
    ("Double-U-Net", "double-unet", "cumulative"),
    ("DeepSplit", "deepsplit", "simultaneous"),
    ("Branch-Net", "branch-net", "simultaneous"),
    ("Double-U-Net", "double-unet", "simultaneous"),
    # ablations of the input normalisation (the recipes stretch each image between its own
    # 1st and 99.8th percentiles): the paper's histogram equalisation, and neither (8-bit /255)
    ("DeepSplit", "deepsplit", "cumulative-histeq"),
    ("DeepSplit", "deepsplit", "cumulative-range"),
    # ablation: acquisition jitter and empty-image negatives
    ("DeepSplit", "deepsplit", "cumulative-robust"),
    # ablation: every image (not the whole set) brought to the object size, and each test
    # image's scale estimated from the model's own instances (inference.object_size: auto)
    ("DeepSplit", "deepsplit", "cumulative-perimage"),
    # ablation: twice the width (the paper's net is 4x ours)
    ("DeepSplit", "deepsplit", "cumulative-wide"),
    # ablation: four times the width (64 at --base 16: the paper's)
    ("DeepSplit", "deepsplit", "cumulative-wide4"),
    # ablation: a wider gap to learn (separation pixels within 3 px of two cells, not 2)
    ("DeepSplit", "deepsplit", "cumulative-gap3"),
]
# "-robust" modes: microscope and camera variation (gamma, blur, noise on the normalised
# image, each on half the crops) and 10 % empty crops (flat or noise: nothing to find)
ROBUST_AUGMENT = {"gamma": 0.3, "blur": 1.0, "noise": 0.05, "empty": 0.1}
GAP3 = 3.0  # "-gap3" modes: separation pixels within this many px of two cells (recipe: 2)
TARGET_DSC, TARGET_CDS = 0.91, 0.91  # dsb, DeepSplit cumulative
TARGET_USIIGACI_DSC, TARGET_USIIGACI_CDS = 0.91, 0.85
TARGET_F1_MARGIN = 0.02  # DeepSplit F1@0.5 ≥ StarDist's + 0.02
PAPER = {  # the paper's own data (GFP cells), post-processed DSC / CDS
    ("DeepSplit", "simultaneous"): (0.812, 0.770),
    ("Branch-Net", "simultaneous"): (0.689, 0.706),
    ("Double-U-Net", "simultaneous"): (0.802, 0.742),
}


def model_key(label: str, mode: str) -> str:
    return f"{label.lower()}_{mode}"


# -- data ---------------------------------------------------------------------------------
def dataset_root(key: str) -> Path:
    if key == "dsb":
        return SHARED_DATA / "dsb2018_fluo"
    if key == "usiigaci":
        return usiigaci_split(SHARED_DATA / "usiigaci_phc", WORK / "usiigaci")
    raise SystemExit(f"unknown dataset {key!r} (dsb, usiigaci)")


# -- training -----------------------------------------------------------------------------
def object_size_for(args, key: str) -> float:
    """The cell radius (px) the dataset ``key`` is trained at: ``--object-size`` is one
    number for every dataset, or per dataset as ``dsb=8,usiigaci=16``."""
    text = str(args.object_size)
    if "=" not in text:
        return float(text)
    sizes = dict(part.split("=", 1) for part in text.split(","))
    if key not in sizes:
        raise SystemExit(f"--object-size {text} gives no size for dataset {key!r}")
    return float(sizes[key])


def recipe_for(name: str, mode: str, args, key: str = "dsb") -> dict:
    """The bundled recipe at the benchmark's size, in the given training mode."""
    r = load_recipe(name)
    r["net"]["base"] = args.base
    r["training"].update(
        iterations=args.iterations,
        seed=args.seed,
        crop=args.crop,
        tile_stride=args.crop // 2,
        train_radius=object_size_for(args, key),
        val_every=max(50, args.iterations // 5),
        checkpoint_every=max(50, args.iterations // 5),
    )
    r["optimizer"] = {**r["optimizer"], "lr": args.lr}
    r["inference"].update(tile=args.crop * 2, stride=args.crop * 3 // 2)
    if mode.endswith("-histeq"):  # the paper's pre-processing
        r["training"].update(hist_eq=True, intensity="range")
    if mode.endswith("-range"):  # no per-image normalisation at all
        r["training"].update(hist_eq=False, intensity="range")
    if mode.endswith("-robust"):  # acquisition jitter and empty-image negatives as well
        r["augment"].update(ROBUST_AUGMENT)
    if mode.endswith("-perimage"):  # per-image object scale, estimated again at prediction
        r["training"]["object_scale"] = "image"
        r["inference"]["object_size"] = "auto"
    if mode.endswith("-wide"):
        r["net"]["base"] = 2 * args.base
    if mode.endswith("-wide4"):
        r["net"]["base"] = 4 * args.base
    if mode.endswith("-gap3"):
        for t in r["tasks"]:
            if t["target"] == "separation":
                t["target_options"] = {**(t.get("target_options") or {}), "distance": GAP3}
                t["weights_map_options"] = {
                    **(t.get("weights_map_options") or {}),
                    "distance": GAP3,
                }
    if args.schedule:
        r["optimizer"]["schedule"] = args.schedule
    if mode.startswith("simultaneous"):  # both losses from the first step, the paper's 0.3 / 1.0
        r["combine"] = {
            **r["combine"],  # the validated defaults (e.g. correlation_eta) stay
            "kind": "staged",
            "stages": [
                {"iterations": args.iterations, "weights": {"segmentation": 0.3, "separation": 1.0}}
            ],
        }
    return r


# -- post-processing and scores ------------------------------------------------------------
def raw_labels(seg: np.ndarray, sep: np.ndarray | None) -> np.ndarray:
    """Before post-processing: 4-connected components of segmentation > 0.5 minus
    separation > 0.5."""
    from skimage.measure import label

    cells = seg > 0.5
    if sep is not None:
        cells &= ~(sep > 0.5)
    return label(cells, connectivity=1).astype(np.int32)


def summarise(rows: list[dict]) -> dict:
    """DSC and AJI as means over images, CDS (= F1 at IoU 0.5) from pooled TP/FP/FN."""
    tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn"))
    pooled = prf(tp, fp, fn)
    return {
        "dsc": nan_mean(r["dsc"] for r in rows),
        "aji": nan_mean(r["aji"] for r in rows),
        "cds": pooled["f1"],
        "precision": pooled["precision"],
        "recall": pooled["recall"],
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_images": len(rows),
    }


def image_scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    inst = instance_scores(truth, labels, 0.5)
    return {
        "dsc": dice(truth, labels),
        "aji": aji(truth, labels),
        **{k: inst[k] for k in ("tp", "fp", "fn")},
    }


def score_test(model: Model, root: Path) -> dict:
    """Before / after post-processing scores on the test images, and the end-to-end
    seconds per image (read, net, post-processing to labels)."""
    ds = Dataset(root)
    before, after, seconds = [], [], []
    errors = dict.fromkeys((*INSTANCE_ERROR_KINDS, "spurious"), 0)
    by_group: dict[str, list[dict]] = {}
    for i in ds.ids("test"):
        t0 = time.perf_counter()
        image = read_image(ds.image_path(i))
        maps = model.predict_maps(image)
        _, labels = segment_image(model, None, maps=maps)
        seconds.append(time.perf_counter() - t0)
        seg, sep, _ = split_probabilities(model.decode, maps)
        truth = ds.mask(i)
        before.append(image_scores(truth, raw_labels(seg, sep)))
        after.append(image_scores(truth, labels))
        for k, n in instance_errors(truth, labels).items():
            errors[k] += n
        by_group.setdefault(ds.splits.get(i, ("", ""))[1] or "all", []).append(after[-1])
    return {
        "before": summarise(before),
        "after": summarise(after),
        "errors": errors,
        "groups": {g: summarise(rows) for g, rows in sorted(by_group.items())},
        "predict_s_per_image": float(np.mean(seconds)),
        "predict_s_total": float(np.sum(seconds)),
    }


def run_model(label: str, name: str, mode: str, root: Path, key: str, args) -> dict:
    recipe = recipe_for(name, mode, args, key)
    sources = [(str(root), "train", 1.0)]
    model = cached_train(
        recipe, sources, [(str(root), "val")], WORK, f"{key}_{model_key(label, mode)}"
    )
    return {
        "label": label,
        "recipe": name,
        "mode": mode,
        "model": str(model.path),
        "train_minutes": model.training["elapsed_seconds"] / 60.0,
        "iterations": model.training["iterations"],
        "stop_reason": model.training.get("stop_reason"),
        "trained_by": model.training["code"],
        **postprocess_and_score(model, root),
    }


def choose_split_on_val(model: Model, root: Path) -> dict:
    """Cell / separation thresholds, seed distance and border limit chosen on ``root``'s val
    split (:func:`cellmaps.tune.tune_split`), starting from the recipe's defaults; the choice
    is left in ``model.decode``."""
    defaults = load_recipe(model.recipe["name"])["decode"]
    model.decode = model.decode.replace(**{k: defaults.get(k) for k in SPLIT_DECODE_KEYS})
    return tune_split(model, [(str(root), "val")], progress=False)


def postprocess_and_score(model: Model, root: Path) -> dict:
    """Cell / separation thresholds and border limit chosen on val
    (:func:`cellmaps.tune.tune_split`, from the recipe's defaults), then the test scores;
    the code that did it is recorded."""
    from cellmaps.provenance import code_version

    choice = choose_split_on_val(model, root)
    model.training["split_choice"] = {k: v for k, v in choice.items() if k != "curve"}
    model.save(model.path)
    return {"split_choice": choice, "test": score_test(model, root), "scored_by": code_version()}


def best_deepsplit_on_val(v: dict) -> str | None:
    """The deepsplit-recipe row with the best validation CDS (for the README panel)."""
    rows = [(r["split_choice"]["cds"], k) for k, r in v["models"].items()
            if r["recipe"] == "deepsplit" and r.get("split_choice")]  # fmt: skip
    return max(rows)[1] if rows else None


def rescore(name: str, wanted: set[str] | None = None) -> None:
    """--rescore: post-processing chosen and test scored again with the current code on the
    models the results file lists (their training is not repeated; ``trained_by`` keeps the
    code that trained each); ``wanted`` (``--models``) limits it to those rows, e.g. the
    rows a code change affects, and each row keeps the code that scored it."""
    from cellmaps.provenance import code_version

    current = code_version()["source_hash"]
    saved, run_args = read_results(name)
    for key, v in saved["data"].items():
        root = Path(v["root"])
        for k, r in v["models"].items():
            if (r.get("scored_by") or {}).get("source_hash") == current:
                continue  # already chosen and scored by this code
            if wanted is not None and k not in wanted:
                continue
            model = Model.load(r["model"])
            model.path = Path(r["model"])  # postprocess_and_score saves the choice into it
            r.setdefault("trained_by", model.training.get("code"))
            r.update(postprocess_and_score(model, root))
            a = r["test"]["after"]
            print(
                f"{key} {k}: test DSC {a['dsc']:.3f} CDS {a['cds']:.3f} AJI {a['aji']:.3f}",
                flush=True,
            )
            write_results(name, saved)
        shown = best_deepsplit_on_val(v)
        if shown and key == "dsb":
            v["panel_model"] = shown
            model = Model.load(v["models"][shown]["model"])
            plot_panel(
                model, root, Dataset(root).ids("test")[0], REPO / "docs" / "deepsplit_panel.png"
            )
    write_results(name, saved)
    update_benchmarks_md(name, report(run_args, saved["machine"], saved["data"]))


# -- StarDist -----------------------------------------------------------------------------
def run_stardist(root: Path, key: str, minutes: float, scale: float, args) -> dict:
    """StarDist trained within ``minutes`` on the same split, its test label images scored
    by the same metrics."""
    python = PEERS / "stardist" / ".venv" / "bin" / "python"
    if not python.is_file():
        raise SystemExit("no StarDist venv: run  bash benchmarks/peers/setup.sh stardist")
    ds = Dataset(root)
    out = WORK / f"stardist_{key}"
    labels_dir = out / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)

    def pairs(split: str) -> list[list[str]]:
        return [[str(ds.image_path(i)), str(ds.file_path("mask", i))] for i in ds.ids(split)]

    test_ids = ds.ids("test")
    job = {
        "train": pairs("train"),
        "val": pairs("val"),
        "test": [[str(ds.image_path(i)), str(labels_dir / f"{i}.tif")] for i in test_ids],
        "minutes": minutes,
        "patch": args.crop,
        "batch": 4,
        "scale": scale,
        "outdir": str(out / f"model_{time.strftime('%Y%m%d%H%M%S')}"),
        "seed": args.seed,
    }
    job_path = out / "job.json"
    job_path.write_text(json.dumps(job))
    log = out / "train.log"
    with log.open("w") as fh:
        proc = subprocess.run(
            [str(python), str(PEERS / "stardist_train.py"), str(job_path)],
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
        )
    if proc.returncode:
        raise SystemExit(f"StarDist training failed (exit {proc.returncode}); see {log}")
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    import tifffile

    rows = [image_scores(ds.mask(i), tifffile.imread(labels_dir / f"{i}.tif")) for i in test_ids]
    return {
        "train_minutes": timing["train_s"] / 60.0,
        "budget_minutes": minutes,
        "train_steps": timing["train_steps"],
        "thresholds": timing["thresholds"],
        "thresholds_minutes": timing["thresholds_s"] / 60.0,
        "scale": scale,
        "test": {
            "after": summarise(rows),
            "predict_s_per_image": float(np.mean(timing["predict_s"])),
            "predict_s_total": float(np.sum(timing["predict_s"])),
        },
    }


def stardist_beside(v: dict, key: str, root: Path, args) -> dict:
    """StarDist on the dataset, for the training minutes of the model ``--stardist-budget``
    names (default the cumulative DeepSplit model), at that model's object scale."""
    budget_from = v["models"][args.stardist_budget]
    model = Model.load(v["models"]["deepsplit_cumulative"]["model"])
    scale = model.input_scale()
    scale = float(np.mean(scale)) if np.ndim(scale) else float(scale)
    minutes = budget_from["train_minutes"]
    print(f"[{time.strftime('%H:%M:%S')}] {key} StarDist for {minutes:.1f} min", flush=True)
    sd = run_stardist(root, key, minutes, scale, args)
    sd["budget_from"] = args.stardist_budget
    print(f"  StarDist CDS {sd['test']['after']['cds']:.3f}", flush=True)
    return sd


def stardist_only(args) -> None:
    """--stardist-only: StarDist beside the models already in results/<name>.json."""
    saved, run_args = read_results(args.name)
    for key in [d for d in args.stardist.split(",") if d]:
        v = saved["data"][key]
        v["stardist"] = stardist_beside(v, key, Path(v["root"]), args)
        write_results(args.name, saved)
    update_benchmarks_md(args.name, report(run_args, saved["machine"], saved["data"]))


# -- figure -------------------------------------------------------------------------------
def plot_panel(model: Model, root: Path, image_id: str, path: Path) -> None:
    """One test image: the image with the true outlines, the segmentation and separation
    probabilities, and the final instances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    ds = Dataset(root)
    image, truth = ds.image(image_id), ds.mask(image_id)
    maps = model.predict_maps(image)
    _, labels = segment_image(model, None, maps=maps)
    seg, sep, _ = split_probabilities(model.decode, maps)
    gray = image if image.ndim == 2 else image[..., 0]
    gray = (gray - gray.min()) / max(float(np.ptp(gray)), 1e-6)
    shown = np.dstack([gray] * 3)
    shown[find_boundaries(truth, mode="inner")] = (0.0, 1.0, 0.0)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    panels = [
        (shown, f"{image_id}: truth outlines ({truth.max()} cells)", None),
        (seg, "segmentation probability", "magma"),
        (sep, "separation probability", "magma"),
        (label2rgb(labels, gray, alpha=0.35, bg_label=0), f"instances ({labels.max()})", None),
    ]
    for ax, (im, title, cmap) in zip(axes, panels, strict=True):
        ax.imshow(im, cmap=cmap, vmin=0 if cmap else None, vmax=1 if cmap else None)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


# -- report -------------------------------------------------------------------------------
def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def table(rows: dict, mode_keys: list[str], stardist: dict | None) -> list[str]:
    out = [
        "| model | mode | DSC | CDS | post-processed DSC | post-processed CDS (= F1@IoU 0.5) | AJI | cell / separation threshold, seed distance, max_border (val) | train min | predict s/image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in mode_keys:
        r = rows.get(k)
        if not r:
            continue
        b, a = r["test"]["before"], r["test"]["after"]
        out.append(
            f"| {r['label']} | {r['mode']} | {fmt(b['dsc'])} | {fmt(b['cds'])} | {fmt(a['dsc'])} | "
            f"{fmt(a['cds'])} | {fmt(a['aji'])} | {choice_text(r)} | "
            f"{r['train_minutes']:.1f} | {r['test']['predict_s_per_image']:.2f} |"
        )
    if stardist:
        a = stardist["test"]["after"]
        out.append(
            f"| StarDist (peer) | from scratch, {stardist['train_steps']} steps | – | – | "
            f"{fmt(a['dsc'])} | {fmt(a['cds'])} | {fmt(a['aji'])} | – | "
            f"{stardist['train_minutes']:.1f} (+{stardist['thresholds_minutes']:.1f} thresholds) | "
            f"{stardist['test']['predict_s_per_image']:.2f} |"
        )
    return out


def code_lines(v: dict) -> str:
    """Which code trained the dataset's models and which chose their post-processing and
    scored them (short commits, '+' when the tree had uncommitted changes)."""

    def short(c: dict | None) -> str | None:
        if not c or not c.get("commit"):
            return None
        return c["commit"][:7] + ("+" if c.get("dirty") else "")

    trained = sorted({short(r.get("trained_by")) or "?" for r in v["models"].values()})
    scored = sorted({short(r.get("scored_by")) or "?" for r in v["models"].values()})
    return f"Models trained by code {', '.join(trained)}; post-processing chosen and test scored by code {', '.join(scored)}."


def choice_text(r: dict) -> str:
    """'0.7 / 0.5, 9, 12' from a row's post-processing choice (the seed distance only where
    it was chosen)."""
    c = r.get("split_choice") or {"max_border": r["max_border"]["max_border"]}
    th = lambda k: "–" if c.get(k) is None else f"{c[k]:g}"  # noqa: E731
    seed = f", {c['min_distance']}" if "min_distance" in c else ""
    return f"{th('cell_threshold')} / {th('separation_threshold')}{seed}, {c['max_border']}"


def ablation(v: dict) -> list[str]:
    """Every trained row with its validation CDS / AJI (from the post-processing choice,
    the numbers choices are made on) beside its test CDS, training minutes and end-to-end
    seconds for the test images, best validation first."""
    rows = [(k, r) for k, r in v["models"].items() if r.get("split_choice")]
    if len(rows) < 2:
        return []
    rows.sort(key=lambda kr: -kr[1]["split_choice"]["cds"])
    out = [
        "",
        "All runs by validation score (val CDS / AJI at the post-processing chosen on val; "
        "choices are made on this column, never on test):",
        "",
        "| run | val CDS | val AJI | test CDS | test DSC | test AJI | train min | test s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, r in rows:
        c, a = r["split_choice"], r["test"]["after"]
        out.append(
            f"| {k} | {c['cds']:.3f} | {c['aji']:.3f} | {a['cds']:.3f} | {a['dsc']:.3f} | "
            f"{a['aji']:.3f} | {r['train_minutes']:.1f} | {r['test']['predict_s_total']:.1f} |"
        )
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "not met"


def limits_text(test: dict) -> str:
    """What the DeepSplit cumulative model's test errors are made of
    (:func:`cellmaps.metrics.instance_errors`) and its weakest image group."""
    e = test["errors"]
    n = sum(e[k] for k in INSTANCE_ERROR_KINDS)
    parts = ", ".join(f"{k} {e[k]} ({e[k] / max(n, 1):.0%})" for k in INSTANCE_ERROR_KINDS)
    text = (
        f"What limits it (DeepSplit cumulative, test): of {n} true cells {parts}; "
        f"{e['spurious']} predictions lie mostly on background."
    )
    groups = test.get("groups") or {}
    if len(groups) > 1:
        shown = sorted(groups.items(), key=lambda gv: gv[1]["cds"])
        text += (
            " CDS / DSC by image group: "
            + "; ".join(
                f"{g} ({r['n_images']} images) {r['cds']:.3f} / {r['dsc']:.3f}" for g, r in shown
            )
            + "."
        )
    return text


def ablation_deltas(rows: dict) -> list[tuple[str, float]]:
    """(mode, val CDS − deepsplit_cumulative's) of every DeepSplit ablation row, best first."""
    cum = rows.get("deepsplit_cumulative")
    if not cum or not cum.get("split_choice"):
        return []
    base = cum["split_choice"]["cds"]
    out = [
        (r["mode"].removeprefix("cumulative-"), r["split_choice"]["cds"] - base)
        for k, r in rows.items()
        if k.startswith("deepsplit_cumulative-") and r.get("split_choice")
    ]
    return sorted(out, key=lambda md: -md[1])


def findings(key: str, v: dict) -> list[str]:
    """Target and ordering statements computed from the run's figures."""
    rows, lines = v["models"], []
    cum = rows.get("deepsplit_cumulative")
    if cum:
        a = cum["test"]["after"]
        t_dsc, t_cds = (
            (TARGET_DSC, TARGET_CDS) if key == "dsb" else (TARGET_USIIGACI_DSC, TARGET_USIIGACI_CDS)
        )
        lines.append(
            f"- DeepSplit cumulative, post-processed: DSC {a['dsc']:.3f} (target ≥ {t_dsc}: "
            f"{verdict(a['dsc'] >= t_dsc)}), CDS {a['cds']:.3f} (target ≥ {t_cds}: "
            f"{verdict(a['cds'] >= t_cds)})."
        )
    if cum and cum["test"].get("errors"):
        lines.append(f"- {limits_text(cum['test'])}")
    pairs = []
    for label in ("DeepSplit", "Branch-Net", "Double-U-Net"):
        c = rows.get(model_key(label, "cumulative"))
        s = rows.get(model_key(label, "simultaneous"))
        if c and s:
            pairs.append((label, c["test"]["after"]["cds"], s["test"]["after"]["cds"]))
    if pairs:
        held = [p for p in pairs if p[1] >= p[2]]
        detail = "; ".join(f"{lab} {c:.3f} vs {s:.3f}" for lab, c, s in pairs)
        lines.append(
            f"- Cumulative ≥ simultaneous (post-processed CDS) holds for {len(held)} of "
            f"{len(pairs)} architectures ({detail})."
        )
    unet = rows.get("u-net_single")
    if unet and cum:
        d = cum["test"]["after"]["cds"] - unet["test"]["after"]["cds"]
        lines.append(f"- DeepSplit cumulative − U-Net, post-processed CDS: {d:+.3f}.")
    deltas = ablation_deltas(rows)
    if deltas:
        lines.append(
            f"- Changes to DeepSplit cumulative, by validation CDS (recipe as bundled "
            f"{cum['split_choice']['cds']:.3f}): "
            + ", ".join(f"{mode} {d:+.3f}" for mode, d in deltas)
            + "."
        )
    best = best_deepsplit_on_val(v)
    if best and best != "deepsplit_cumulative":
        b, c = rows[best], cum or rows[best]
        lines.append(
            f"- Best DeepSplit run on validation: {best} (val CDS "
            f"{b['split_choice']['cds']:.3f} vs {c['split_choice']['cds']:.3f} for "
            f"{'deepsplit_cumulative' if cum else best}); its test DSC "
            f"{b['test']['after']['dsc']:.3f}, CDS {b['test']['after']['cds']:.3f}, AJI "
            f"{b['test']['after']['aji']:.3f}."
        )
    sd = v.get("stardist")
    if sd and best:
        ds_cds, sd_cds = rows[best]["test"]["after"]["cds"], sd["test"]["after"]["cds"]
        ds_min, sd_min = rows[best]["train_minutes"], sd["train_minutes"]
        if sd_cds <= ds_cds:
            verdict_text = "DeepSplit is ahead."
        elif sd_min <= ds_min + 0.5:
            verdict_text = (
                "in no more training minutes another method gets further, so the CPU budget "
                "alone does not explain the gap to the targets."
            )
        else:
            verdict_text = "StarDist is ahead, with more training minutes."
        lines.append(
            f"- StarDist in {sd_min:.1f} training minutes reaches test CDS {sd_cds:.3f}; the "
            f"best DeepSplit run on val {ds_cds:.3f} in {ds_min:.1f} min (difference "
            f"{ds_cds - sd_cds:+.3f}): {verdict_text}"
        )
    if sd and cum:
        f_ds, f_sd = cum["test"]["after"]["cds"], sd["test"]["after"]["cds"]
        t_ds, t_sd = cum["test"]["predict_s_total"], sd["test"]["predict_s_total"]
        lines.append(
            f"- F1 at IoU 0.5: DeepSplit {f_ds:.3f}, StarDist {f_sd:.3f}, difference "
            f"{f_ds - f_sd:+.3f} (target ≥ +{TARGET_F1_MARGIN}: "
            f"{verdict(f_ds - f_sd >= TARGET_F1_MARGIN)}); end-to-end prediction of the "
            f"{cum['test']['after']['n_images']} test images: DeepSplit {t_ds:.1f} s, "
            f"StarDist {t_sd:.1f} s (target DeepSplit ≤ StarDist: {verdict(t_ds <= t_sd)}). "
            f"Training: DeepSplit cumulative {cum['train_minutes']:.1f} min, StarDist "
            f"{sd['train_minutes']:.1f} min ({sd['train_steps']} steps of batch 4; its budget: "
            f"the training minutes of {sd.get('budget_from', 'deepsplit_cumulative')})."
        )
    return lines


def report(args, mach: dict, data: dict) -> str:
    lines = [
        "## DeepSplit: Tables 1 and 2 at CPU scale, and StarDist side by side",
        "",
        machine_line(mach),
        "",
        f"Command: `python -m benchmarks.deepsplit --iterations {args.iterations} "
        + (f"--schedule {args.schedule} " if getattr(args, "schedule", None) else "")
        + f"--base {args.base} --crop {args.crop} --lr {args.lr} --object-size {args.object_size} "
        f"--seed {args.seed} --datasets D --models M --stardist S` per dataset (below; then "
        "`--report-only`). CPU budget: "
        f"{args.iterations} iterations of batch 4 per model (minutes in the tables), "
        "StarDist given the training minutes of the DeepSplit row named below. Nets at base "
        f"width {args.base} (paper 64), Adam lr {args.lr} (paper 1e-4: chosen for the short "
        f"budget), learning rate {getattr(args, 'schedule', None) or 'constant'}, images "
        f"resampled to a cell radius of {args.object_size} px (per dataset where named).",
        "",
        "DSC: Dice of the binary cell masks (mean over test images). CDS: 2TP/(2TP+FP+FN) "
        "with cells matched one-to-one at IoU ≥ 0.5 (position and area), pooled over the "
        "test images — the same number as the instance F1 at IoU 0.5. 'Before' = connected "
        "components of segmentation > 0.5 minus separation > 0.5; 'post-processed' = the "
        "cell / separation thresholds chosen on val, holes filled, small objects removed, "
        "seeded watershed cutting only borders shorter than max_border (thresholds, seed "
        "distance and max_border chosen on val by CDS, `cellmaps.tune.tune_split`). `--rescore` redid the choice and the "
        "scoring with the code named per dataset ('scored by'); training is by the code "
        "named 'trained by'.",
    ]
    modes = {
        "Table 1 (cumulative learning)": [
            "u-net_single",
            "deepsplit_cumulative",
            "branch-net_cumulative",
            "double-u-net_cumulative",
        ],
        "Table 2 (simultaneous learning)": [
            "u-net_single",
            "deepsplit_simultaneous",
            "branch-net_simultaneous",
            "double-u-net_simultaneous",
        ],
    }
    for key, v in data.items():
        lines += [
            "",
            f"### {key} ({v['n_test']} test images, {v['n_train']} train, {v['n_val']} val)",
            "",
            code_lines(v),
        ]
        for title, keys in modes.items():
            sd = v.get("stardist") if title.startswith("Table 1") else None
            lines += ["", f"{title}:", "", *table(v["models"], keys, sd)]
        lines += ablation(v)
        lines += ["", *findings(key, v)]
    if any(v.get("stardist") for v in data.values()):
        lines += [
            "",
            "StarDist: its 2D training notebook's pipeline (1–99.8 percentile normalisation, "
            "flips / rotations / intensity augmentation, 32 rays, grid 2×2, default U-Net, "
            f"{args.crop}² patches, batch 4), stopped when the budget was spent, best-val "
            "weights, probability / NMS thresholds optimised on val; run from its own venv "
            "(`benchmarks/peers/stardist_train.py`).",
        ]
    shown = data.get("dsb", {}).get("panel_model")
    if shown:
        lines += ["", f"One dsb test image by {shown} (the DeepSplit run best on val):"]
    lines += ["", "![DeepSplit test image](docs/deepsplit_panel.png)"]
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------
SETTINGS = ("iterations", "base", "crop", "lr", "object_size", "seed", "schedule")


def earlier_data(args) -> dict:
    """The datasets / models of an earlier run of the same name at the same settings (so
    the datasets can be run one invocation at a time); empty otherwise."""
    try:
        saved, run_args = read_results(args.name)
    except FileNotFoundError:
        return {}
    same = all(getattr(run_args, k, None) == getattr(args, k) for k in SETTINGS)
    return saved["data"] if same else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--object-size",
        default="8.0",
        help="cell radius (px) to train at: one number, or per dataset (dsb=8,usiigaci=16)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--schedule", default=None, help="learning-rate schedule (default: the recipe's constant)"
    )
    ap.add_argument("--datasets", default="dsb,usiigaci")
    ap.add_argument(
        "--models", default="all", help="all, or row keys e.g. u-net_single,deepsplit_cumulative"
    )
    ap.add_argument("--stardist", default="dsb", help="datasets to train StarDist on ('' for none)")
    ap.add_argument("--name", default="deepsplit")
    ap.add_argument(
        "--stardist-budget",
        default="deepsplit_cumulative",
        help="row whose training minutes StarDist gets (e.g. deepsplit_simultaneous: the same "
        "net and iterations)",
    )
    ap.add_argument(
        "--stardist-only",
        action="store_true",
        help="train and score StarDist beside the models of results/<name>.json",
    )
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="choose the post-processing and score the test images again with the current "
        "code on the models listed in results/<name>.json (no training)",
    )
    args = ap.parse_args()
    if args.stardist_only:
        stardist_only(args)
        return
    if args.rescore:
        rescore(args.name, None if args.models == "all" else set(args.models.split(",")))
        return
    if args.report_only:
        saved, run_args = read_results(args.name)
        update_benchmarks_md(args.name, report(run_args, saved["machine"], saved["data"]))
        return
    mach = machine()
    wanted = None if args.models == "all" else set(args.models.split(","))
    data = earlier_data(args)
    for key in [d for d in args.datasets.split(",") if d]:
        root = dataset_root(key)
        ds = Dataset(root)
        v = data.setdefault(
            key,
            {
                "root": str(root),
                "n_train": len(ds.ids("train")),
                "n_val": len(ds.ids("val")),
                "n_test": len(ds.ids("test")),
                "models": {},
            },
        )
        v.update(models_arg=args.models, stardist_arg=args.stardist, commit=mach["commit"])
        for label, name, mode in MODELS:
            k = model_key(label, mode)
            if wanted is not None and k not in wanted:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {key} {k}", flush=True)
            v["models"][k] = run_model(label, name, mode, root, key, args)
            a = v["models"][k]["test"]["after"]
            print(f"  test DSC {a['dsc']:.3f} CDS {a['cds']:.3f} AJI {a['aji']:.3f}", flush=True)
            write_results(args.name, {"command": vars(args), "machine": mach, "data": data})
        cum = v["models"].get("deepsplit_cumulative")
        if cum and key in args.stardist.split(","):
            v["stardist"] = stardist_beside(v, key, root, args)
        shown = best_deepsplit_on_val(v)
        if shown and key == "dsb":
            v["panel_model"] = shown
            model = Model.load(v["models"][shown]["model"])
            plot_panel(model, root, ds.ids("test")[0], REPO / "docs" / "deepsplit_panel.png")
        write_results(args.name, {"command": vars(args), "machine": mach, "data": data})
    update_benchmarks_md(args.name, report(args, mach, data))


if __name__ == "__main__":
    main()
