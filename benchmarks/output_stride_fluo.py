"""Output stride for the fluorescence nuclei model (#36): the ``fluo-nuclei`` recipe (DeepSplit,
U-Net with two decoders and cross connections) at head stride 1 and 2.

    python -m benchmarks.output_stride_fluo [--strides 1,2] [--iterations 1500] [--repeats 3]
        [--report-only]

Each stride trains the bundled ``fluo-nuclei`` model's recipe and settings
(:func:`benchmarks.train_fluo_model.settings`: DeepSplit cumulative, base 16, radius 8 px,
128² crops, Adam 0.001 cosine, batch 4, seed 0) from scratch on ``dsb2018_fluo`` train for
``--iterations``; only ``net.output_stride`` differs. A model trained by an earlier run of the
same recipe, data and code is reused (:func:`benchmarks._common.cached_train`).

Measured per stride on ``dsb2018_fluo`` val only (the test split is not read): CDS and AJI
after the post-processing is chosen on val (:func:`cellmaps.tune.tune_split`, from the
recipe's defaults, as the bundled model's); the training step (median of 20 on a random
batch of the recipe's size, timed after the runs); and ``Model.detect`` in fp32 over the val
images and on a 1024² mosaic of them (median of ``--repeats`` interleaved rounds after a
warm-up).

Selection rule (written 2026-12-07, before the first run): the head stride of the
``fluo-nuclei`` model's next retraining is 2 if its val CDS is at least stride 1's minus
0.01 **and** its val AJI at least stride 1's minus 0.01; else 1. (The separation head marks
the thin gaps between touching nuclei, which a half-resolution head may blur: the rule lets
validation say.)

Writes results/output_stride_fluo.json and the 'output_stride_fluo' section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchmarks._common import (
    REPO,
    RESULTS,
    SHARED_DATA,
    cached_train,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from benchmarks.deepsplit import choose_split_on_val, recipe_for
from benchmarks.output_stride import train_step_seconds
from benchmarks.train_fluo_model import settings
from cellmaps.io import Dataset
from cellmaps.model import Model
from cellmaps.recipes import validate_recipe

ROOT = SHARED_DATA / "dsb2018_fluo"
WORK = REPO / "runs" / "output_stride_fluo"
CDS_TOLERANCE = 0.01
AJI_TOLERANCE = 0.01
TRAIN_STEPS = 20
MOSAIC = 1024


def recipe_at(stride: int, iterations: int) -> dict:
    recipe = recipe_for("deepsplit", "cumulative", settings(iterations), "dsb")
    recipe["net"]["output_stride"] = stride
    return validate_recipe(recipe, f"deepsplit (fluo-nuclei), output stride {stride}")


def train_at(stride: int, iterations: int) -> Model:
    return cached_train(recipe_at(stride, iterations), [(str(ROOT), "train", 1.0)],
                        [(str(ROOT), "val")], WORK, f"stride{stride}", progress=True)  # fmt: skip


def val_figures(model: Model) -> dict:
    """CDS and AJI on val after the post-processing is chosen there."""
    choice = choose_split_on_val(model, ROOT)
    return {k: v for k, v in choice.items() if k != "curve"}


def val_mosaic(side: int) -> np.ndarray:
    """A ``side``² mosaic of the val images (each cut or repeated to fill its cell)."""
    ds = Dataset(ROOT)
    images = [ds.image(i) for i in ds.ids("val")]
    out = np.zeros((side, side, *images[0].shape[2:]), images[0].dtype)
    cell, k = 256, 0
    for r in range(0, side, cell):
        for c in range(0, side, cell):
            img = images[k % len(images)]
            k += 1
            h, w = min(cell, img.shape[0], side - r), min(cell, img.shape[1], side - c)
            if img.ndim == out.ndim:
                out[r : r + h, c : c + w] = img[:h, :w]
    return out


def time_models(models: dict[int, Model], repeats: int) -> dict[int, dict]:
    """fp32 ``detect`` seconds over the val images and on a mosaic, interleaved rounds after
    a warm-up, and the training step."""
    torch.set_num_threads(2)
    ds = Dataset(ROOT)
    images = [ds.image(i) for i in ds.ids("val")]
    mosaic = val_mosaic(MOSAIC)
    for m in models.values():
        m.recipe["training"]["precision"] = "fp32"
        m.detect(images[0])
    rounds = {s: {"val": [], "mosaic": []} for s in models}
    for _ in range(repeats):
        for s, m in models.items():
            t = time.perf_counter()
            for img in images:
                m.detect(img)
            rounds[s]["val"].append(time.perf_counter() - t)
            t = time.perf_counter()
            m.detect(mosaic)
            rounds[s]["mosaic"].append(time.perf_counter() - t)
    return {
        s: {
            "val_images_s": float(np.median(r["val"])),
            "mosaic_s": float(np.median(r["mosaic"])),
            "train_step_s": train_step_seconds(models[s], TRAIN_STEPS),
        }  # fmt: skip
        for s, r in rounds.items()
    }


def choose_stride(rows: list[dict]) -> int:
    by = {r["stride"]: r for r in rows}
    if 1 not in by:
        raise SystemExit("the rule compares with stride 1: run it too (--strides 1,...)")
    cds, aji = by[1]["val"]["cds"], by[1]["val"]["aji"]
    ok = [r["stride"] for r in rows
          if r["val"]["cds"] >= cds - CDS_TOLERANCE and r["val"]["aji"] >= aji - AJI_TOLERANCE]  # fmt: skip
    return max(ok)


def report(res: dict) -> None:
    rows = res["rows"]
    base = next(r for r in rows if r["stride"] == 1)
    lines = [
        "## Output stride: fluorescence nuclei (`benchmarks/output_stride_fluo.py`)",
        "",
        f"`{res['command_line']}`. {machine_line(res['machine'])} The `fluo-nuclei` recipe "
        "(DeepSplit cumulative, base 16, radius 8 px, seed 0) trained from scratch on "
        f"dsb2018_fluo train for {res['iterations']} iterations at each head stride; only "
        "`net.output_stride` differs. Validation only (post-processing chosen on val; test not "
        "read). Speed: fp32 `Model.detect`, median of interleaved rounds; training step: median "
        f"of {TRAIN_STEPS} on a random batch of the recipe's size.",
        "",
        "| stride | run (min) | training step (s) | val CDS | val AJI | val images (s) | "
        f"{MOSAIC}² mosaic (s) | speed-up (mosaic) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sp = r["speed"]
        lines.append(
            f"| {r['stride']} | {r['train_minutes']:.1f} | {sp['train_step_s']:.3f} | "
            f"{r['val']['cds']:.3f} | {r['val']['aji']:.3f} | {sp['val_images_s']:.2f} | "
            f"{sp['mosaic_s']:.2f} | {base['speed']['mosaic_s'] / sp['mosaic_s']:.2f}× |"
        )
    chosen = res["chosen"]
    two = next((r for r in rows if r["stride"] == 2), base)
    lines += [
        "",
        f"Rule (in the script, written before the run): stride 2 if its val CDS and AJI are "
        f"within {CDS_TOLERANCE} of stride 1's: **stride {chosen}** (stride 2: CDS "
        f"{two['val']['cds']:.3f} vs {base['val']['cds']:.3f}, AJI {two['val']['aji']:.3f} vs "
        f"{base['val']['aji']:.3f}; {1 - two['train_minutes'] / base['train_minutes']:.0%} less "
        f"training time, {base['speed']['mosaic_s'] / two['speed']['mosaic_s']:.2f}× faster on "
        "the mosaic).",
    ]
    update_benchmarks_md("output_stride_fluo", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--strides", default="1,2")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        report(json.loads((RESULTS / "output_stride_fluo.json").read_text()))
        return
    strides = [int(s) for s in args.strides.split(",")]
    models, rows = {}, []
    for s in strides:
        m = train_at(s, args.iterations)
        models[s] = m
        rows.append({"stride": s, "train_minutes": m.training["elapsed_seconds"] / 60.0,
                     "val": val_figures(m)})  # fmt: skip
        print(rows[-1], flush=True)
    speed = time_models(models, args.repeats)
    for r in rows:
        r["speed"] = speed[r["stride"]]
    res = {"machine": machine(), "iterations": args.iterations, "rows": rows,
           "chosen": choose_stride(rows),
           "command_line": f"python -m benchmarks.output_stride_fluo --strides {args.strides} "
                           f"--iterations {args.iterations} --repeats {args.repeats}"}  # fmt: skip
    write_results("output_stride_fluo", res)
    report(res)


if __name__ == "__main__":
    main()
