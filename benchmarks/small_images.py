"""Small images as one tile (#36): the bundled models on their validation images with the
grid of tiles (before) and with one tile of the padded image (after), and the automatic
scale estimate (which predicts a small crop at 16 factors) on a 2048² mosaic.

    python -m benchmarks.small_images [--repeats 1]

Rule, written before the run: one tile stays the default if detection F1 on every
validation set below is within 0.005 of the grid's (the tolerance the tiling itself was
chosen with, ``benchmarks/inference_plan.py``). Test splits are not used. Time is the wall
time of ``Model.detect`` over the whole split (each model's own inference policy: the
default model estimates the scale per image), median of ``--repeats`` after a warm-up
image; the first image's shape decides the tiling shown (dsb images vary in size).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import (
    SHARED_DATA,
    machine,
    machine_line,
    train_mosaic,
    update_benchmarks_md,
    write_results,
)
from cellmaps.inference import tiles
from cellmaps.io import Dataset
from cellmaps.model import Model, bundled_model_path
from cellmaps.tune import score_split

TOLERANCE = 0.005
SETS = [("default", "crchisto"), ("default", "mbm_bonemarrow"), ("ki67", "bcdata_ki67"),
        ("fluo-nuclei", "dsb2018_fluo")]  # fmt: skip
MODES = {"grid of tiles": 0.0, "one tile": tiles.SINGLE_TILE_MAX}


def with_mode(limit: float) -> None:
    tiles.SINGLE_TILE_MAX = limit


def scored_and_timed(model: Model, data: str, repeats: int) -> tuple[dict, float]:
    """score_split on the val split, timed (it reads each image, detects, matches: the
    detection is nearly all of it), median of ``repeats`` after a warm-up image."""
    ds = Dataset(SHARED_DATA / data)
    model.detect(ds.image(ds.ids("val")[0]))
    times, res = [], {}
    for _ in range(repeats):
        t = time.perf_counter()
        res = score_split(model, SHARED_DATA / data, "val")
        times.append(time.perf_counter() - t)
    return res, float(np.median(times))


def auto_scale_time(model: Model, image: np.ndarray, repeats: int) -> tuple[float, float]:
    times, factor = [], 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        factor = model.input_scale("auto", None, image)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(factor)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    models = {name: Model.load(bundled_model_path(name)) for name, _ in SETS}
    rows = []
    for name, data in SETS:
        ds = Dataset(SHARED_DATA / data)
        first = ds.image(ds.ids("val")[0])
        model = models[name]
        inf = tiles.TiledInferer.from_recipe(model.recipe)
        row = {"model": name, "data": data, "split": "val", "n_images": len(ds.ids("val")),
               "shape": list(first.shape[:2]), "modes": {}}  # fmt: skip
        for mode, limit in MODES.items():
            with_mode(limit)
            h, w = first.shape[:2]
            used = inf.for_shape(h, w)
            res, seconds = scored_and_timed(model, data, args.repeats)
            row["modes"][mode] = {
                "f1": res["f1"],
                "seconds": seconds,
                "tiles": used.tiles_over(h, w),
                "tile": used.tile,
            }
        with_mode(MODES["one tile"])
        rows.append(row)
        print(row, flush=True)
    mosaic = train_mosaic("monuseg")
    scale = {}
    for mode, limit in MODES.items():
        with_mode(limit)
        s, f = auto_scale_time(models["default"], mosaic, args.repeats)
        scale[mode] = {"seconds": s, "factor": f}
    with_mode(MODES["one tile"])
    print(scale, flush=True)
    kept = all(
        r["modes"]["one tile"]["f1"] >= r["modes"]["grid of tiles"]["f1"] - TOLERANCE for r in rows
    )
    payload = {"machine": machine(), "repeats": args.repeats, "rows": rows, "auto_scale": scale,
               "single_tile_max": MODES["one tile"], "kept": kept}  # fmt: skip
    write_results("small_images", payload)
    update_benchmarks_md("small_images", section_text(payload))


def section_text(d: dict) -> str:
    lines = [
        "## Small images as one tile (`benchmarks/small_images.py`)",
        "",
        f"`python -m benchmarks.small_images --repeats {d['repeats']}`. {machine_line(d['machine'])} "
        "Validation splits only; time = `Model.detect` over the whole split (each model's own "
        f"inference policy), median of {d['repeats']} after a warm-up. Rule (before the run): "
        f"one tile stays the default if F1 on every set is within {TOLERANCE} of the grid's.",
        "",
        "| model | val set (images, size) | grid: tiles × side | F1 | s | one tile: side | F1 | s "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in d["rows"]:
        g, o = r["modes"]["grid of tiles"], r["modes"]["one tile"]
        lines.append(
            f"| {r['model']} | {r['data']} ({r['n_images']}, {r['shape'][0]}×{r['shape'][1]}) | "
            f"{g['tiles']} × {g['tile']}² | {g['f1']:.4f} | {g['seconds']:.2f} | "
            f"{o['tile']}² | {o['f1']:.4f} | {o['seconds']:.2f} | "
            f"{g['seconds'] / o['seconds']:.2f}× |"
        )
    a = d["auto_scale"]
    g, o = a["grid of tiles"], a["one tile"]
    worst = min(r["modes"]["one tile"]["f1"] - r["modes"]["grid of tiles"]["f1"] for r in d["rows"])
    lines += [
        "",
        f"Automatic scale estimate of the default model on a 2048² monuseg mosaic (16 factors, "
        f"a 384²-net-px crop each): {g['seconds']:.2f} s with the grid, {o['seconds']:.2f} s "
        f"with one tile ({g['seconds'] / o['seconds']:.2f}×); factor {g['factor']:.4f} → "
        f"{o['factor']:.4f}.",
        "",
        f"Largest F1 change: {worst:+.4f}; one tile "
        + ("**kept** as the default (rule met)." if d["kept"] else "**not kept** (rule not met)."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
