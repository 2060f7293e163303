"""DeepDistance recipes on live cells in phase contrast (Usiigaci) — first part of the
DeepDistance benchmark (the comparison recipes and DSB 2018 are still to come).

    python -m benchmarks.deepdistance [--recipe deepdistance-extended] [--iterations 3000] [--seed 0]

Split: Usiigaci's repository gives train 45 / val 5 and no test set, so this script makes a
deterministic one — of the 45 train ids sorted by name, every 5th (the 1st, 6th, ...) is test
(9 images), the rest train (36); the 5 val images stay val. The split is written with
symlinks to the shared files under runs/ (nothing is copied). h is chosen from {0.1..0.5} by
F-score on the val images; matching is DeepDistance's one-to-one rule with the threshold set
to the median cell radius of the training masks (sqrt(area/π), rounded).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset
from cellmaps.metrics import match_points, pool_detection
from cellmaps.recipes import load_recipe
from cellmaps.training import train
from cellmaps.tune import tune_decoding


def make_split(src: Path, dst: Path) -> Path:
    """A dataset folder of symlinks to ``src`` with the deterministic train/val/test split."""
    ds = Dataset(src)
    dst.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "masks", "points"):
        link = dst / sub
        if not link.exists():
            os.symlink((src / sub).resolve(), link)
    train_ids = sorted(i for i in ds.ids() if ds.split_of(i) == "train")
    test = set(train_ids[::5])
    rows = ["id,split,group"]
    for i in ds.ids():
        split = "test" if i in test else ds.split_of(i)
        rows.append(f"{i},{split},{ds.group_of(i)}")
    (dst / "splits.csv").write_text("\n".join(rows) + "\n")
    return dst


def median_cell_radius(root: Path) -> float:
    ds = Dataset(root)
    areas = []
    for i in ds.ids("train"):
        m = ds.mask(i)
        areas += np.bincount(m.ravel())[1:][np.bincount(m.ravel())[1:] > 0].tolist()
    return float(np.round(np.median(np.sqrt(np.array(areas) / np.pi))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recipe", default="deepdistance-extended")
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    root = make_split(SHARED_DATA / "usiigaci_phc", REPO / "runs" / "usiigaci_split")
    radius = median_cell_radius(root)
    recipe = load_recipe(args.recipe)
    recipe["training"].update(iterations=args.iterations, seed=args.seed)
    recipe["evaluate"]["radius"] = radius
    out = REPO / "runs" / f"{args.recipe}_usiigaci.safetensors"
    model = train(
        recipe, [(str(root), "train", 1.0)], out, [(str(root), "val")], resume=args.resume
    )
    best = tune_decoding(model, [(str(root), "val")], progress=False)
    model.decode["h"] = best["h"]
    model.save(out)
    ds = Dataset(root)
    ms = []
    for i in ds.ids("test"):
        pred = model.detect(ds.image(i))
        ms.append(match_points(ds.points(i).coords, pred.coords, radius, "one-to-one"))
    test = pool_detection(ms)
    mach = machine()
    key = f"deepdistance_usiigaci_{args.recipe}"
    write_results(
        key,
        {
            "machine": mach,
            "seed": args.seed,
            "recipe": recipe,
            "training": model.training,
            "radius": radius,
            "h": best["h"],
            "val_f1": best["f1"],
            "test": test,
            "split": "every 5th train id -> test",
        },
    )
    lines = [
        f"## DeepDistance on Usiigaci phase contrast: `{args.recipe}` (`benchmarks/deepdistance.py`)",
        "",
        f"`python -m benchmarks.deepdistance --recipe {args.recipe} --iterations {args.iterations} --seed {args.seed}`. "
        f"{machine_line(mach)}",
        f"Split 36 train / 5 val / 9 test (every 5th of the repository's train ids is test). Tiles "
        f"{recipe['training']['crop']}² at stride {recipe['training']['tile_stride']} (paper: 512² at 256), batch "
        f"{recipe['training']['batch']}, U-Net base {recipe['net']['base']}; {model.training['iterations']} iterations "
        f"({model.training['elapsed_seconds'] / 60:.1f} min, stop: {model.training.get('stop_reason')}). h = {best['h']} "
        f"chosen on val (F {best['f1']:.4f}); one-to-one matching at {radius:g} px (median cell radius).",
        "",
        "| test | TP | FP | FN | precision | recall | F |",
        "|---|---|---|---|---|---|---|",
        f"| {args.recipe} | {test['tp']} | {test['fp']} | {test['fn']} | {test['precision']:.4f} | {test['recall']:.4f} | **{test['f1']:.4f}** |",
        "",
        "Target (issue): F ≥ 0.92 for `deepdistance-extended`.",
    ]
    update_benchmarks_md(key, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
