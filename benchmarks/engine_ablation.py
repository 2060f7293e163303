"""Which change of the training engine moves a system's validation score: old engine →
schedule → object scale → both, same budget, scored on the validation split only.

    python -m benchmarks.engine_ablation --system deepdistance [--iterations 800]
    python -m benchmarks.engine_ablation --system micronet [--iterations 2000]

Variants (each a short run of the system's recipe at the given budget, seed 0):
- ``old``: the recipe as benchmarked before this engine (constant / plateau LR, data scale);
- ``schedule``: linear warm-up (5 %) then cosine decay to 1 % of the LR, gradient-norm clip 5;
- ``scale``: trained at the canonical object size (8 px radius for DeepDistance's usiigaci
  cells of 25 px: images and annotations resampled ×0.32) on 128² crops (400² of the
  original, more than the old 256² crops, at a quarter of the cost per step), the inner
  distance back at the paper's α 0.1 (the usiigaci α 0.01 only compensated for 25-px cells);
- ``both``: schedule + scale; ``schedule-ema`` / ``scale-ema`` / ``both-ema``: + EMA of the
  weights (decay 0.998); ``both-hi``: both with a 3× higher peak learning rate.

The score is the validation F at the decoding threshold tuned on validation (what training
stores as ``tuned_f1``); test splits are never touched. Writes results/engine_ablation_<system>.json
and the 'engine_ablation_<system>' section of BENCHMARKS.md. Models go to runs/ablation/,
keyed by recipe, data and code version (a model from other code is retrained).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from types import SimpleNamespace

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    cached_train,
    machine,
    machine_line,
    read_results,
    update_benchmarks_md,
    write_results,
)
from cellmaps.recipes import load_recipe

WORK = REPO / "runs" / "ablation"
VARIANTS = ("old", "schedule", "schedule-ema", "scale", "scale-ema", "both", "both-ema", "both-hi")


def system_setup(system: str, iterations: int) -> tuple[dict, Path, dict]:
    """(old-engine recipe, dataset folder, options) of a system."""
    if system == "deepdistance":
        from benchmarks.deepdistance import WORK as DD_WORK
        from benchmarks.deepdistance import median_cell_radius, recipe_for, usiigaci_split

        root = usiigaci_split(SHARED_DATA / "usiigaci_phc", DD_WORK / "usiigaci")
        radius = median_cell_radius(root)
        args = SimpleNamespace(
            base=16, iterations=iterations, seed=0, crop=256, optimizer="adam", lr=1e-3
        )
        recipe = recipe_for("deepdistance-extended", args, radius, alpha=0.01)
        recipe["optimizer"]["schedule"] = "constant"  # the old benchmark: Adam, no schedule
        recipe["training"]["train_radius"] = None  # ... at the data's scale
        return recipe, root, {"object_size": 8.0, "alpha_at_scale": 0.1, "crop_at_scale": 128}
    if system == "micronet":
        recipe = load_recipe("micronet")
        recipe["training"]["iterations"] = iterations
        recipe["optimizer"]["schedule"] = "plateau"
        return recipe, SHARED_DATA / "crchisto", {"object_size": None}
    raise SystemExit(f"unknown system {system!r}")


def variant_recipe(base: dict, variant: str, opts: dict) -> dict | None:
    r = copy.deepcopy(base)
    if variant in ("schedule", "schedule-ema", "both", "both-ema", "both-hi"):
        r["optimizer"].update(schedule="cosine", warmup=0.05, final_lr=0.01, grad_clip=5.0)
    if variant == "both-hi":  # the decay lowers the mean rate: start 3x higher
        r["optimizer"]["lr"] *= 3
    if variant in ("scale", "scale-ema", "both", "both-ema", "both-hi"):
        if opts.get("object_size") is None:
            return None  # the system's objects are already at a size the net handles
        r["training"]["train_radius"] = opts["object_size"]
        if opts.get("crop_at_scale"):  # the same cells fit a smaller crop: cheaper steps
            crop = opts["crop_at_scale"]
            r["training"].update(crop=crop, tile_stride=crop // 2)
        for t in r["tasks"]:
            if t["target"] == "inner_distance" and opts.get("alpha_at_scale"):
                t["target_options"]["alpha"] = opts["alpha_at_scale"]
    if variant.endswith("-ema"):
        r["training"]["ema"] = 0.998
    return r


def code_tag(code: dict | None) -> str:
    """'abc1234' (+ '*' when the tree had uncommitted changes) of a run's code version."""
    if not code or not code.get("commit"):
        return "?"
    return code["commit"][:7] + ("*" if code.get("dirty") else "")


def merged_rows(name: str, rows: list[dict], iterations: int) -> list[dict]:
    """This run's rows plus the earlier run's rows of other variants at the same budget
    (each row keeps the code version it was trained with), in VARIANTS order."""
    import json

    from benchmarks._common import RESULTS

    path = RESULTS / f"{name}.json"
    done = {r["variant"] for r in rows}
    if path.is_file():
        old = json.loads(path.read_text())
        if old["command"]["iterations"] == iterations:
            rows = rows + [r for r in old["rows"] if r["variant"] not in done]
    return sorted(rows, key=lambda r: VARIANTS.index(r["variant"]))


def report(args, mach: dict, rows: list[dict]) -> str:
    best = max(rows, key=lambda r: r["val_f1"])
    old = next((r for r in rows if r["variant"] == "old"), None)
    lines = [
        f"## Engine ablation: {args.system} (`benchmarks/engine_ablation.py`)",
        "",
        f"`python -m benchmarks.engine_ablation --system {args.system} --iterations "
        f"{args.iterations}`. {machine_line(mach)} Seed 0; each variant trained for "
        f"{args.iterations} iterations; score = validation F at the threshold tuned on "
        "validation (test never used). Code: the commit each run started from (* = with "
        "uncommitted changes).",
        "",
        "| variant | schedule | peak lr | object size (px, net) | crop | EMA | val F | minutes | stop | code |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['schedule']} | {r.get('lr', '?')} | {r['object_size'] or 'data scale'} "
            f"({r['factor']:.2f}×) | {r.get('crop', '')} | {r['ema'] or 'off'} | "
            f"{r['val_f1']:.3f} | {r['minutes']:.1f} | {r['stop']} | {code_tag(r.get('code'))} |"
        )
    lines += [
        "",
        f"Best on validation: **{best['variant']}** (F {best['val_f1']:.3f}"
        + (
            f"; old engine {old['val_f1']:.3f}, {best['val_f1'] - old['val_f1']:+.3f}"
            if old
            else ""
        )
        + ").",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--system", choices=["deepdistance", "micronet"], required=True)
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    name = f"engine_ablation_{args.system}"
    if args.report_only:
        saved, run_args = read_results(name)
        update_benchmarks_md(name, report(run_args, saved["machine"], saved["rows"]))
        return
    base, root, opts = system_setup(args.system, args.iterations)
    rows = []
    for variant in args.variants.split(","):
        recipe = variant_recipe(base, variant, opts)
        if recipe is None:
            print(f"{variant}: not applicable to {args.system}", flush=True)
            continue
        t0 = time.time()
        model = cached_train(
            recipe,
            [(str(root), "train", 1.0)],
            [(str(root), "val")],
            WORK,
            f"{args.system}-{variant}",
        )
        sizes = model.training.get("object_sizes") or [{}]
        rows.append(
            {
                "variant": variant,
                "schedule": recipe["optimizer"]["schedule"],
                "object_size": recipe["training"]["train_radius"],
                "factor": sizes[0].get("factor", 1.0),
                "ema": recipe["training"]["ema"],
                "crop": recipe["training"]["crop"],
                "lr": recipe["optimizer"]["lr"],
                "val_f1": model.training["tuned_f1"],
                "tuned_param": model.training.get("tuned_param"),
                "decode": model.decode,
                "minutes": model.training["elapsed_seconds"] / 60,
                "stop": model.training.get("stop_reason"),
                "code": model.training.get("code"),
                "wall_minutes": (time.time() - t0) / 60,
            }
        )
        print(variant, round(rows[-1]["val_f1"], 4), flush=True)
    rows = merged_rows(name, rows, args.iterations)
    mach = machine()
    write_results(name, {"machine": mach, "command": vars(args), "rows": rows})
    text = report(args, mach, rows)
    update_benchmarks_md(name, text)
    print(text)


if __name__ == "__main__":
    main()
