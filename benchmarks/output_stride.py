"""Output stride ablation (#36): the default model's recipe at head stride 1, 2 and 4.

    python -m benchmarks.output_stride [--strides 1,2,4] [--iterations 1500] [--seed 0]
        [--repeats 3] [--report-only]

Each stride trains the bundled default model's recipe from scratch with the same data, seed
and iterations (MicroNet, base 12, stain / acquisition augmentation, CRCHisto + MoNuSeg + MBM
at a common nucleus radius of 6 px, the cell-pixel head for outlines:
:mod:`benchmarks.train_default_model` ``--robust --object-size 6 --mbm --schedule cosine
--outlines``), only ``net.output_stride`` differs. A model trained by an earlier run of the
same recipe, data and code is reused (:func:`benchmarks._common.cached_train`).

Measured per stride, on the default model's validation images (fixed before its outlines
lineage: crchisto/val, the MoNuSeg train images :func:`~benchmarks.train_default_model.monuseg_with_val`
holds out with seed 0, mbm_bonemarrow/val; the test splits are not read):

- pooled detection F1 (ξ, peak distance and evidence floor tuned on those images, as for
  the bundled model) and per source;
- outlines: the best mean AJI over the outline settings of the default model's rule 2
  (:data:`~benchmarks.train_default_model.OUTLINE_GRID`) on the MoNuSeg val images, with its
  Dice and PQ;
- training seconds per iteration (the whole run, validation included);
- inference on a 2048² mosaic of MoNuSeg train tiles (the peers' speed image), fp32, 2
  threads, the object size given as the training radius (scale 1: the net on the image's
  own pixels, like for like with ``benchmarks/peers_speed.py``): ``Model.detect`` end to end
  and its net's share, median of ``--repeats`` interleaved rounds after a warm-up.

Selection rule (written 2026-12-07, before the first run): the head stride of the bundled
models' next retraining is the largest stride whose pooled val F1 is at least stride 1's
minus 0.01 **and** whose best mean MoNuSeg val AJI is at least stride 1's minus 0.01; stride
1 when none is. Speed decides nothing beyond "largest".

Writes results/output_stride.json and the 'output_stride' section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._common import (
    REPO,
    RESULTS,
    cached_train,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from benchmarks.train_default_model import (
    CRCHISTO_PIXEL_SIZE,
    ROBUST_AUGMENT,
    choose_outlines,
    model_object_sizes,
    repeat_masked_sources,
    train_object_size,
    training_sources,
    val_scores,
    with_outlines,
)
from cellmaps.model import Model
from cellmaps.recipes import load_recipe, validate_recipe

NAMES = ("crchisto", "monuseg", "mbm_bonemarrow")
TRAIN_RADIUS = 6.0
SPEED_SIZE = 2048
TRAIN_STEPS = 20  # timed training steps per stride (median)
# the selection rule's tolerances against stride 1 (see the module docstring)
F1_TOLERANCE = 0.01
AJI_TOLERANCE = 0.01


def saved_results() -> dict:
    """results/output_stride.json (its ``command`` is the command line, a string)."""
    return json.loads((RESULTS / "output_stride.json").read_text())


def recipe_at(stride: int, iterations: int, seed: int) -> dict:
    """The default model's recipe (``train_default_model --robust --object-size 6 --mbm
    --schedule cosine --outlines``) with heads at ``stride``."""
    recipe = load_recipe("micronet")
    recipe["net"].update(base=12, output_stride=stride)
    recipe["training"].update(iterations=iterations, seed=seed, train_radius=TRAIN_RADIUS)
    recipe["optimizer"]["schedule"] = "cosine"
    recipe["augment"].update(ROBUST_AUGMENT)
    with_outlines(recipe)
    return validate_recipe(recipe, f"micronet + outlines, output stride {stride}")


def train_at(stride: int, iterations: int, seed: int) -> Model:
    """Train (or reuse) the stride's model; the data as the default model's outlines lineage."""
    sources, val_sources, val_radii = training_sources(seed, NAMES)
    sources = repeat_masked_sources(sources, NAMES)
    sizes = [train_object_size(Path(f).name.replace("monuseg_val", "monuseg"))
             for f, _, _ in sources]  # fmt: skip
    return cached_train(
        recipe_at(stride, iterations, seed),
        sources,
        val_sources,
        REPO / "runs" / "output_stride",
        f"stride{stride}",
        progress=True,
        val_radii=val_radii,
        pixel_size=CRCHISTO_PIXEL_SIZE,
        object_sizes=sizes,
    )


def validation_figures(model: Model, seed: int) -> dict:
    """Pooled / per-source val F1 and the best outline row (rule 2 of the default model)."""
    _, val_sources, val_radii = training_sources(seed, NAMES)
    det = val_scores(model, val_sources, val_radii, model_object_sizes(model, NAMES))
    rows = choose_outlines(model, seed)
    best = max(rows, key=lambda r: (r["aji"], -rows.index(r)))
    return {"detection": det, "outlines_best": best, "outlines_grid": rows}


def speed_image(size: int) -> np.ndarray:
    """The peers' speed image: a ``size``² mosaic of MoNuSeg train tiles."""
    from benchmarks.peers_speed import write_mosaics
    from cellmaps.io import read_image

    with tempfile.TemporaryDirectory() as tmp:
        path = write_mosaics([size], Path(tmp))[size][0]
        return read_image(path)


def fp32_detector(model: Model):
    """``detect`` of ``model`` in fp32 at scale 1, and a list collecting its net seconds."""
    model.recipe["training"]["precision"] = "fp32"
    net_seconds = [0.0]
    forward = model.forward

    def timed_forward(x):
        t = time.perf_counter()
        out = forward(x)
        net_seconds[0] += time.perf_counter() - t
        return out

    model.forward = timed_forward

    def run(image: np.ndarray) -> tuple[float, float, int]:
        net_seconds[0] = 0.0
        t = time.perf_counter()
        n = len(model.detect(image, object_size=model.train_radius))
        return time.perf_counter() - t, net_seconds[0], n

    return run


def time_models(models: dict[int, Model], repeats: int) -> dict[int, dict]:
    """End-to-end and net seconds per stride on :func:`speed_image`, interleaved rounds
    after one warm-up round (so a slow spell of the machine hits every stride alike)."""
    torch.set_num_threads(2)
    image = speed_image(SPEED_SIZE)
    runs = {s: fp32_detector(m) for s, m in models.items()}
    for run in runs.values():
        run(image)
    rounds = {s: [] for s in runs}
    for _ in range(repeats):
        for s, run in runs.items():
            rounds[s].append(run(image))
    mpx = image.shape[0] * image.shape[1] / 1e6
    out = {}
    for s, rs in rounds.items():
        total = float(np.median([r[0] for r in rs]))
        net = float(np.median([r[1] for r in rs]))
        step = train_step_seconds(models[s], TRAIN_STEPS)
        out[s] = {"end_to_end_s": round(total, 3), "net_s": round(net, 3),
                  "s_per_mpx": round(total / mpx, 4), "detections": rs[-1][2],
                  "train_step_s": round(step, 4)}  # fmt: skip
    return out


def train_step_seconds(model: Model, steps: int) -> float:
    """Median seconds of one training step of ``model``'s net on a random batch of its
    recipe's size (batch × crop², forward in the recipe's precision with channels_last,
    backward, SGD step): the net's share of training, timed when the machine is quiet —
    the runs' own minutes include validation and anything else the machine did."""
    from cellmaps.model import autocast, net_from_recipe

    tr = model.recipe["training"]
    net = net_from_recipe(model.recipe, model.in_channels)
    net = net.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(tr["batch"], model.in_channels, tr["crop"], tr["crop"])
    x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(tr["precision"]):
            out = net(x)
        loss = sum(o.float().square().mean() for o in out.values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def choose_stride(rows: list[dict]) -> int:
    """The selection rule: the largest stride within the tolerances of stride 1."""
    by = {r["stride"]: r for r in rows}
    if 1 not in by:
        raise SystemExit("the rule compares with stride 1: run it too (--strides 1,...)")
    f1 = by[1]["val"]["detection"]["pooled_f1"]
    aji = by[1]["val"]["outlines_best"]["aji"]
    ok = [
        r["stride"]
        for r in rows
        if r["val"]["detection"]["pooled_f1"] >= f1 - F1_TOLERANCE
        and r["val"]["outlines_best"]["aji"] >= aji - AJI_TOLERANCE
    ]
    return max(ok)


def earlier_speedups(base: dict, row: dict) -> list[float]:
    """End-to-end speed-up of ``row`` over ``base`` (stride 1) in each earlier timing run."""
    return [
        b["end_to_end_s"] / r["end_to_end_s"]
        for b, r in zip(base["earlier_speed"], row["earlier_speed"], strict=True)
    ]


def report(res: dict) -> None:
    rows = res["rows"]
    base = next(r for r in rows if r["stride"] == 1)
    lines = [
        "## Output stride (`benchmarks/output_stride.py`)",
        "",
        f"`{res['command']}`. {machine_line(res['machine'])} The bundled default model's "
        "recipe (MicroNet base 12, CRCHisto + MoNuSeg + MBM at a nucleus radius of 6 px, "
        "stain / acquisition augmentation, the cell-pixel head for outlines) trained from "
        f"scratch at each head stride for {res['iterations']} iterations, seed {res['seed']}; "
        "only `net.output_stride` differs. Validation images only (the default model's: "
        "crchisto/val, 3 held-out MoNuSeg train images, mbm_bonemarrow/val); test splits not "
        f"read. Speed: `Model.detect` on a {SPEED_SIZE}² mosaic of MoNuSeg train tiles, fp32, "
        f"2 threads, scale 1, median of {res['repeats']} interleaved rounds after a warm-up; "
        f"training step: the net's forward (recipe precision), backward and SGD step on a "
        f"random batch of the recipe's size, median of {TRAIN_STEPS}, timed after the runs "
        "(the runs' minutes include validation and whatever else the machine did).",
        "",
        "| stride | run (min) | training step (s) | val F1 (pooled) | per source | val AJI | "
        f"Dice | PQ | {SPEED_SIZE}² end to end (s) | net (s) | s / Mpx | speed-up vs stride 1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, o, t = r["val"]["detection"], r["val"]["outlines_best"], r["speed"]
        per = ", ".join(f"{k} {v:.3f}" for k, v in d["per_source"].items())
        up = base["speed"]["end_to_end_s"] / t["end_to_end_s"]
        lines.append(
            f"| {r['stride']} | {r['train_seconds'] / 60:.1f} | "
            f"{t['train_step_s']:.3f} | {d['pooled_f1']:.3f} | {per} | "
            f"{o['aji']:.3f} | {o['dice']:.3f} | {o['pq']:.3f} | {t['end_to_end_s']:.2f} | "
            f"{t['net_s']:.2f} | {t['s_per_mpx']:.3f} | {up:.2f}× |"
        )
    chosen = res["chosen_stride"]
    c = next(r for r in rows if r["stride"] == chosen)
    verdict = (
        f"Rule (in the script, written before the run): the largest stride with pooled val F1 "
        f"≥ stride 1's − {F1_TOLERANCE} and val AJI ≥ stride 1's − {AJI_TOLERANCE}: "
        f"**stride {chosen}** (F1 {c['val']['detection']['pooled_f1']:.3f} vs "
        f"{base['val']['detection']['pooled_f1']:.3f}, AJI {c['val']['outlines_best']['aji']:.3f}"
        f" vs {base['val']['outlines_best']['aji']:.3f}; "
        f"{base['speed']['end_to_end_s'] / c['speed']['end_to_end_s']:.2f}× faster end to end, "
        f"{base['speed']['train_step_s'] / c['speed']['train_step_s']:.2f}× per training step)."
    )
    lines += ["", verdict]
    if "earlier_speed" in base:
        lines.append(
            "Earlier timing runs of the same models (end-to-end speed-up vs stride 1): "
            + "; ".join(
                f"stride {r['stride']}: "
                + ", ".join(f"{x:.2f}×" for x in earlier_speedups(base, r))
                for r in rows
                if r["stride"] != 1
            )
            + " — the machine's absolute speed drifts between runs; the ratios are the result."
        )
    for r in rows:
        if r["stride"] == chosen or r["stride"] == 1:
            continue
        d = r["val"]["detection"]["pooled_f1"] - base["val"]["detection"]["pooled_f1"]
        a = r["val"]["outlines_best"]["aji"] - base["val"]["outlines_best"]["aji"]
        lines.append(f"Stride {r['stride']} against stride 1: F1 {d:+.3f}, AJI {a:+.3f}.")
    update_benchmarks_md("output_stride", "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--strides", default="1,2,4")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--speed-only",
        action="store_true",
        help="time the models of the last run again (inference and training steps; nothing "
        "else running) and rewrite the results",
    )
    args = ap.parse_args()
    if args.report_only:
        report(saved_results())
        return
    if args.speed_only:
        res = saved_results()
        models = {r["stride"]: Model.load(REPO / r["model"]) for r in res["rows"]}
        speed = time_models(models, args.repeats)
        for r in res["rows"]:  # earlier timings kept: the machine's speed drifts
            r.setdefault("earlier_speed", []).append(r["speed"])
            r["speed"] = speed[r["stride"]]
        res.update(speed_machine=machine(), repeats=args.repeats)
        write_results("output_stride", res)
        report(res)
        return
    mach = machine()
    strides = [int(s) for s in args.strides.split(",")]
    models, rows = {}, []
    for s in strides:
        model = train_at(s, args.iterations, args.seed)
        models[s] = model
        rows.append({"stride": s, "model": str(model.path.relative_to(REPO)),
                     "train_seconds": round(model.training["elapsed_seconds"], 1),
                     "trained_at_commit": model.training.get("code", {}).get("commit"),
                     "val": validation_figures(model, args.seed)})  # fmt: skip
        print(f"stride {s}: val F1 {rows[-1]['val']['detection']['pooled_f1']:.3f}, "
              f"AJI {rows[-1]['val']['outlines_best']['aji']:.3f}", flush=True)  # fmt: skip
    speed = time_models(models, args.repeats)
    for r in rows:
        r["speed"] = speed[r["stride"]]
    res = {
        "machine": mach,
        "command": "python -m benchmarks.output_stride "
        f"--strides {args.strides} --iterations {args.iterations} --seed {args.seed} "
        f"--repeats {args.repeats}",
        "iterations": args.iterations,
        "seed": args.seed,
        "repeats": args.repeats,
        "rows": rows,
        "chosen_stride": choose_stride(rows),
    }
    write_results("output_stride", res)
    report(res)


if __name__ == "__main__":
    main()
