"""Small images stacked into one batch of the net (#36): the bundled models on their
validation images one by one (``Model.detect``) and in groups whose tiles share forward
passes (``Model.detect_many``, what ``cellmaps predict`` runs on a folder of small images).

    python -m benchmarks.stacked_images [--repeats 3] [--stacks 2,4,8]

Rule, written before the run: the default group size (``STACK_IMAGES`` in
``cellmaps.predict`` and ``STACK_TILES`` in ``cellmaps.model``, 4 when this script was
written) becomes the size with the smallest total time over the sets below, among sizes
whose detections equal the one-by-one detections on every image (same count, coordinates
within 0.01 px). (As first written the rule listed only the stacked sizes; one by one, size
1, is the baseline every size is compared with and is a candidate too — added after the run,
which found it the fastest.) Validation splits only, nothing is scored (the points are those of
``detect``). Each model at a given object size (the training radius: scale 1, the net on the
images' own pixels) and, for the default model, also with its own policy (scale estimated
per image; its crops are stacked too); the fluorescence model also with ``--masks``
(``predict_maps_many``, then each image segmented). Time: wall time over the whole split, median of
``--repeats`` interleaved rounds after a warm-up image.

Also the automatic scale estimate alone (``estimate_input_scale``, the default model) on the
first validation images of crchisto and mbm_bonemarrow and on a 2048² mosaic of MoNuSeg train
tiles: the crops of the factors predicted one by one vs stacked
(``Model.predict_maps_many``); the factor must be the same.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np

from benchmarks._common import (
    RESULTS,
    SHARED_DATA,
    machine,
    machine_line,
    train_mosaic,
    update_benchmarks_md,
    write_results,
)
from cellmaps.inference.scale import estimate_input_scale
from cellmaps.io import Dataset
from cellmaps.model import STACK_TILES, Model, bundled_model_path, segment_image

SETS = [("default", "crchisto", "scale 1"), ("default", "crchisto", "auto"),
        ("default", "mbm_bonemarrow", "scale 1"), ("ki67", "bcdata_ki67", "scale 1"),
        ("fluo-nuclei", "dsb2018_fluo", "scale 1"), ("fluo-nuclei", "dsb2018_fluo", "masks")]  # fmt: skip
TOLERANCE_PX = 0.01


def object_size(model: Model, policy: str):
    """The object size a run passes: the training radius (scale 1, masks) or the model's
    policy (auto)."""
    return None if policy == "auto" else model.train_radius


def one_by_one(model: Model, images: list, size, masks: bool = False) -> list:
    if masks:  # cellmaps predict --masks: maps, then the model's segmentation
        return [segment_image(model, img, object_size=size)[0] for img in images]
    return [model.detect(img, object_size=size) for img in images]


def in_groups(model: Model, images: list, size, stack: int, masks: bool = False) -> list:
    found = []
    for k in range(0, len(images), stack):
        group = images[k : k + stack]
        if masks:
            factors = [model.input_scale(size, None, img) for img in group]
            maps = model.predict_maps_many(group, factors, stack=stack)
            found += [segment_image(model, i, maps=m)[0] for i, m in zip(group, maps, strict=True)]
        else:
            found += model.detect_many(group, object_size=size, stack=stack)
    return found


def same_points(a: list, b: list) -> tuple[bool, float]:
    """Whether every image has the same detections (count, coordinates within the
    tolerance), and the largest coordinate difference."""
    worst = 0.0
    for p, q in zip(a, b, strict=True):
        if len(p) != len(q):
            return False, float("inf")
        if len(p):
            worst = max(worst, float(np.abs(p.coords - q.coords).max()))
    return worst <= TOLERANCE_PX, worst


def scale_estimates(model: Model, repeats: int) -> list[dict]:
    """The scale estimate with the factors' crops predicted one by one vs stacked: median
    seconds of interleaved rounds, and the factors (which must agree)."""
    stacked = model.predict_maps_many

    def one_by_one_maps(images, scales):
        return [model.predict_maps(i, scale=f) for i, f in zip(images, scales, strict=True)]

    cases = [(d, Dataset(SHARED_DATA / d)) for d in ("crchisto", "mbm_bonemarrow")]
    images = [(f"{d} val {ds.ids('val')[0]}", ds.image(ds.ids("val")[0])) for d, ds in cases]
    images.append(("monuseg train mosaic 2048²", train_mosaic("monuseg")))
    rows = []
    for name, image in images:
        times: dict[str, list[float]] = {"one by one": [], "stacked": []}
        factors = {}
        for _ in range(repeats):
            for mode, many in (("one by one", one_by_one_maps), ("stacked", stacked)):
                model.predict_maps_many = many
                t = time.perf_counter()
                factors[mode] = estimate_input_scale(model, image)
                times[mode].append(time.perf_counter() - t)
        model.predict_maps_many = stacked
        rows.append({"image": name, "shape": list(image.shape[:2]),
                     **{f"{k} s": float(np.median(v)) for k, v in times.items()},
                     **{f"{k} factor": f for k, f in factors.items()}})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stacks", default="2,4,8")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.report_only:
        d = json.loads((RESULTS / "stacked_images.json").read_text())
        d.update(choice(d["rows"], d["stacks"]))
        write_results("stacked_images", d)
        update_benchmarks_md("stacked_images", section_text(d))
        return
    stacks = [int(s) for s in args.stacks.split(",")]
    models = {name: Model.load(bundled_model_path(name)) for name, _, _ in SETS}
    rows = []
    for name, data, policy in SETS:
        ds = Dataset(SHARED_DATA / data)
        images = [ds.image(i) for i in ds.ids("val")]
        model = models[name]
        size = object_size(model, policy)
        model.detect(images[0], object_size=size)  # warm-up
        masks = policy == "masks"
        runs = {"one by one": partial(one_by_one, model, images, size, masks)}
        for s in stacks:
            runs[f"stack {s}"] = partial(in_groups, model, images, size, s, masks)
        times: dict[str, list[float]] = {k: [] for k in runs}
        found: dict[str, list] = {}
        for _ in range(args.repeats):  # interleaved rounds: drift hits every mode alike
            for mode, run in runs.items():
                t = time.perf_counter()
                found[mode] = run()
                times[mode].append(time.perf_counter() - t)
        row = {"model": name, "data": data, "policy": policy, "n_images": len(images),
               "shape": list(images[0].shape[:2]), "modes": {}}  # fmt: skip
        for mode in runs:
            same, worst = same_points(found["one by one"], found[mode])
            row["modes"][mode] = {"seconds": float(np.median(times[mode])), "same": same,
                                  "max_coord_diff": worst,
                                  "detections": int(sum(len(p) for p in found[mode]))}  # fmt: skip
        rows.append(row)
        print(row, flush=True)
    scale = scale_estimates(models["default"], args.repeats)
    payload = {"machine": machine(), "repeats": args.repeats, "stacks": stacks, "rows": rows,

               "default_when_run": STACK_TILES, "scale": scale}  # fmt: skip
    payload.update(choice(rows, stacks))
    write_results("stacked_images", payload)
    update_benchmarks_md("stacked_images", section_text(payload))


def choice(rows: list[dict], stacks: list[int]) -> dict:
    """Total seconds per size (1 = one by one) and the rule's choice."""
    total = {s: sum(r["modes"][f"stack {s}"]["seconds"] for r in rows) for s in stacks}
    total[1] = sum(r["modes"]["one by one"]["seconds"] for r in rows)
    eligible = [1] + [s for s in stacks if all(r["modes"][f"stack {s}"]["same"] for r in rows)]
    return {"total_seconds": {str(s): t for s, t in total.items()},
            "one_by_one_total": total[1], "chosen": min(eligible, key=total.get)}  # fmt: skip


def section_text(d: dict) -> str:
    stacks = d["stacks"]
    lines = [
        "## Small images stacked (`benchmarks/stacked_images.py`)",
        "",
        f"`python -m benchmarks.stacked_images --repeats {d['repeats']} --stacks "
        f"{','.join(map(str, stacks))}`. {machine_line(d['machine'])} Validation splits only; "
        "time = wall time over the whole split, `Model.detect` one by one vs "
        "`Model.detect_many` in groups of k images whose tiles share forward passes, median of "
        f"{d['repeats']} interleaved rounds after a warm-up. Scale 1: the object size given as "
        "the training radius; auto: the default model's own policy (scale estimated per image); "
        "masks: `--masks` (maps stacked with `Model.predict_maps_many`, each image segmented "
        "on its own; its detections are compared).",
        "",
        "| model | val set (images, size) | scale | one by one (s) | "
        + " | ".join(f"stack {s} (s)" for s in stacks)
        + " | same points |",
        "|---|---|---|---|" + "---|" * len(stacks) + "---|",
    ]
    for r in d["rows"]:
        base = r["modes"]["one by one"]["seconds"]
        cells = [
            f"{r['modes'][f'stack {s}']['seconds']:.2f} ({base / r['modes'][f'stack {s}']['seconds']:.2f}×)"
            for s in stacks
        ]
        same = all(r["modes"][f"stack {s}"]["same"] for s in stacks)
        worst = max(r["modes"][f"stack {s}"]["max_coord_diff"] for s in stacks)
        lines.append(
            f"| {r['model']} | {r['data']} ({r['n_images']}, {r['shape'][0]}×{r['shape'][1]}) | "
            f"{r['policy']} | {base:.2f} | "
            + " | ".join(cells)
            + " | "
            + (f"yes (≤ {worst:.1e} px)" if same else "**no**")
            + " |"
        )
    lines += [
        "",
        "Automatic scale estimate of the default model (`estimate_input_scale`), the factors' "
        "crops predicted one by one vs stacked (median s):",
        "",
        "| image | one by one (s) | stacked (s) | speed-up | factor (one by one → stacked) |",
        "|---|---|---|---|---|",
    ]
    for r in d["scale"]:
        lines.append(
            f"| {r['image']} | {r['one by one s']:.2f} | {r['stacked s']:.2f} | "
            f"{r['one by one s'] / r['stacked s']:.2f}× | {r['one by one factor']:.4f} → "
            f"{r['stacked factor']:.4f} |"
        )
    tot = d["total_seconds"]
    lines += [
        "",
        f"Total over the sets: one by one {d['one_by_one_total']:.1f} s; "
        + ", ".join(
            f"stack {s} {tot[str(s)]:.1f} s ({d['one_by_one_total'] / tot[str(s)]:.2f}×)"
            for s in stacks
        )  # fmt: skip
        + ".",
        "",
        "Rule (before the run; one by one, size 1, added as a candidate after it): the "
        "fastest group size whose points equal the one-by-one points on every image: "
        f"**{d['chosen']}**"
        + (" (one by one: stacking stays off by default)." if d["chosen"] == 1 else "."),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
