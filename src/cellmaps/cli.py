"""The ``cellmaps`` command line: a thin shell over the Python API (argument parsing, one
call per command, printing).

Each command imports the modules it runs inside its own function: most of them load torch,
which takes seconds, and ``cellmaps --help``, ``recipes`` or ``evaluate`` need none of it.
Longer than ~500 lines because every option's help text lives here, next to its parser.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path

from cellmaps.errors import CellmapsInputError
from cellmaps.version import __version__

# kept here (not imported from cellmaps.optim) so `cellmaps --help` needs no torch
SCHEDULE_CHOICES = ("plateau", "constant", "cosine", "onecycle")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cellmaps.io._atomic import write_text_atomic
    from cellmaps.metrics.evaluate import evaluate, format_table, json_ready, plot_evaluation

    for option, path in (("--json", args.json), ("--plot", args.plot), ("--report", args.report)):
        if path and Path(path).is_dir():  # checked before the evaluation runs
            raise CellmapsInputError(f"{option} takes a file name, but a folder is there", path)
    result = evaluate(
        args.truth,
        args.pred,
        split=args.split,
        group=args.group,
        protocol=args.protocol,
        radius=args.radius,
        iou=args.iou,
        progress=not args.quiet,
        labels=[c.strip() for c in args.labels.split(",") if c.strip()] if args.labels else None,
        strict=args.strict,
    )
    print(format_table(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(json_ready(result), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_evaluation(result, args.plot)
        print(f"wrote {args.plot}")
    if args.report:
        from cellmaps.metrics.report import write_report

        write_report(args.report, result, args.truth, args.pred)
        print(f"wrote {args.report}")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from cellmaps.targets.panel import draw_target_panel, load_annotations

    if not (args.points or args.mask or args.roi):
        raise CellmapsInputError("give --points, --mask and/or --roi with the image")
    a = load_annotations(args.image, args.points, args.mask, args.roi)
    names = draw_target_panel(a, args.out, args.maps.split(",") if args.maps else None)
    print(f"wrote {args.out}: image + {', '.join(names)}")
    return 0


def _data_sources(args: argparse.Namespace) -> list[tuple[str, str | None, float, float]]:
    """(folder, split, loss weight, share of its images) per training source: the --data
    folders (weights from --weight, or all --gamma with --aux; share --fraction), then the
    --aux folders (weight 1, share --aux-fraction) — MicroNet's L = γ·L_target + L_aux."""
    weights = args.weight or []
    if len(weights) > len(args.data):
        raise CellmapsInputError("more --weight values than --data folders")
    if args.gamma is not None and weights:
        raise CellmapsInputError("give --gamma (with --aux) or --weight, not both")
    if args.gamma is not None and not args.aux:
        raise CellmapsInputError("--gamma weighs the target data against --aux data; give --aux")
    default = args.gamma if args.gamma is not None else 1.0
    weights = weights + [default] * (len(args.data) - len(weights))
    out = [(d, args.split, w, args.fraction) for d, w in zip(args.data, weights, strict=True)]
    out += [(a, args.split, 1.0, args.aux_fraction) for a in args.aux or []]
    return out


def check_model_output(out: str, overwrite: bool, resume: bool) -> None:
    """Refuse, before any training, a ``--out`` that cannot take the model: a folder, a
    folder that does not exist or cannot be written, or an existing model (unless
    ``--overwrite`` or ``--resume``)."""
    path = Path(out)
    if path.is_dir():
        raise CellmapsInputError("is a folder; give a model file name (.safetensors)", path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CellmapsInputError(f"folder {parent} does not exist", path)
    if not os.access(parent, os.W_OK):
        raise CellmapsInputError(f"cannot write into {parent}", path)
    if path.exists() and not (overwrite or resume):
        raise CellmapsInputError(
            "a model is already there; pass --overwrite to replace it (or --resume)", path
        )


def _cmd_train(args: argparse.Namespace) -> int:
    from cellmaps.recipes import TRAINING_OVERRIDES, load_recipe, with_overrides
    from cellmaps.training import train

    check_model_output(args.out, args.overwrite, args.resume)
    if args.recipe:
        recipe = load_recipe(args.recipe)
    elif args.init:  # fine-tuning: the initial model's own recipe (its net fits its weights)
        from cellmaps.model import Model

        recipe = Model.load(args.init).recipe  # with_overrides below works on a copy
    else:
        raise CellmapsInputError("give --recipe (or --init MODEL to reuse that model's recipe)")
    recipe = with_overrides(
        recipe,
        **{k: getattr(args, k) for k in TRAINING_OVERRIDES},
        schedule=args.schedule,
        combine=args.combine,
        per_image_scale=args.per_image_scale,
        encoder_weights=args.encoder_weights,
    )
    val = [(d, args.val_split) for d in (args.val_data or args.data)] if args.val_split else None
    sources = _data_sources(args)
    model = train(
        recipe,
        sources,
        args.out,
        val,
        args.resume,
        args.init,
        args.freeze,
        not args.quiet,
        object_sizes=[args.object_size] * len(sources) if args.object_size else None,
        pixel_size=args.pixel_size,
    )
    print(
        f"wrote {args.out} ({model.training.get('iterations')} iterations, "
        f"stop: {model.training.get('stop_reason')}, decode {dict(model.decode)})"
    )
    return 0


def _cmd_crosseval(args: argparse.Namespace) -> int:
    from cellmaps.crosseval import cross_evaluate, group_folders
    from cellmaps.recipes import load_recipe, with_overrides

    folders, skipped = list(args.data), {}
    if args.by_group:
        folders, skipped = group_folders(args.data, args.out)
    elif len(args.data) < 2:
        raise CellmapsInputError(
            "give at least two --data folders to cross-evaluate (or --by-group: one model per "
            "group of splits.csv)"
        )
    recipe = with_overrides(load_recipe(args.recipe), iterations=args.iterations, seed=args.seed)
    r = cross_evaluate(
        recipe, folders, args.out, args.radius, progress=not args.quiet, skipped=skipped
    )
    for name, why in skipped.items():
        print(f"group {name} left out: {why}")
    width = max(len(n) for n in r["datasets"])
    print(f"{'train/test':>{width}}  " + "  ".join(r["datasets"]))
    for name, row in zip(r["datasets"], r["f1"], strict=True):
        print(f"{name:>{width}}  " + "  ".join(f"{v:.3f}" for v in row))
    print(
        f"same source {r['same_source_mean']:.3f}, other sources {r['other_source_mean']:.3f}; "
        f"wrote {Path(args.out) / 'crosseval.json'} (.csv, .png)"
    )
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from cellmaps.model import Model
    from cellmaps.tune import FLOOR_SAFETY, FLOOR_TOLERANCE, tune_model

    model = Model.load(args.model)
    splits = [x.strip() for x in args.split.split(",") if x.strip()]
    sources = [(d, sp) for d in args.data for sp in splits]
    found = tune_model(
        model,
        sources,
        class_gain=args.class_gain,
        object_size=args.object_size,
        pixel_size=args.pixel_size,
        progress=not args.quiet,
        model_path=args.model,
    )
    best, cut, keys = found["decoding"], found["split"], found["split_keys"]
    for row in best["curve"]:
        print(
            f"{best['param']} = {row[best['param']]:.2f}, min distance {row['min_distance']}: "
            f"P {row['precision']:.4f} R {row['recall']:.4f} F1 {row['f1']:.4f}"
        )
    border = ""
    if cut is not None:
        for row in cut["curve"]:
            print(
                ", ".join(f"{k} {row[k]}" for k in keys)
                + f": CDS {row['cds']:.4f} AJI {row['aji']:.4f}"
            )
        border = "; " + ", ".join(f"{k} = {cut[k]}" for k in keys) + f" (CDS {cut['cds']:.4f})"
    if found["class_gain"] is not None:
        gain = found["class_gain"]
        border += (
            f"; positive class gain {gain['gain']:g} (index MAE {gain['mae']:.4f}, "
            f"{gain['mae_at_1']:.4f} at 1)"
        )
    model.save(args.out or args.model)
    print(
        f"best {best['param']} = {best[best['param']]} (F1 {best['f1']:.4f}); evidence floor "
        f"{best['min_score']:.3g} ({FLOOR_SAFETY} × {best['floor_edge']:.3g}, the highest "
        f"keeping F1 within {FLOOR_TOLERANCE} of the best){border}; "
        f"wrote {args.out or args.model}"
    )
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cellmaps.predict import predict_paths, sample_image_path

    model, paths = _split_model_arg(args.inputs)
    if args.sample:
        paths.append(str(sample_image_path()))
    if not paths:
        raise CellmapsInputError("give images or folders to predict on (or --sample)")
    summary = predict_paths(
        model,
        paths,
        args.out,
        masks=args.masks,
        stain_norm=args.stain_norm,
        stain_reference=args.stain_reference,
        **_prediction_options(args),
    )
    print(
        f"wrote predictions for {len(summary)} image(s) to {Path(args.out)} "
        "(points/, measurements/, geojson/, overlays/, counts.csv)"
    )
    _maybe_report(args)
    return 0


def _maybe_report(args: argparse.Namespace) -> None:
    """``--report``: OUT/report.html from the run's tables and overlays."""
    if args.report:
        from cellmaps.outputs import write_prediction_report

        path = write_prediction_report(Path(args.out))
        print(f"wrote {path}")


def _prediction_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of predict_paths / score_ki67 from :func:`_add_prediction_args`."""
    return {
        "xi": args.xi,
        "min_score": args.min_score,
        "tile": args.tile,
        "stride": args.stride,
        "batch": args.batch,
        "progress": not args.quiet,
        "split": args.split,
        "object_size": args.object_size,
        "pixel_size": args.pixel_size,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "skip_bad": args.skip_bad,
        "channels": args.channels,
        "workers": args.workers,
        "scheduler": args.scheduler,
        "stream_above": args.stream_above,
        "tissue": not args.no_tissue,
        "magnification": args.magnification,
        "parquet": args.parquet,
        "regions": args.regions,
        "page": args.page,
        "project": args.project,
    }


def _split_model_arg(inputs: list[str]) -> tuple[str | None, list[str]]:
    """``[MODEL.safetensors | BUNDLED_NAME] IMAGES...`` → (model or None, images)."""
    paths = list(inputs)
    if paths and Path(paths[0]).suffix.lower() in TORCH_SUFFIXES:
        raise CellmapsInputError(
            "PyTorch files are not read as models (loading them can run code); give a "
            "cellmaps model file (.safetensors, written by `cellmaps train`)",
            paths[0],
        )
    from cellmaps.bundled import is_bundled_name

    is_model = bool(paths) and (
        Path(paths[0]).suffix.lower() == ".safetensors" or is_bundled_name(paths[0])
    )
    model = paths.pop(0) if is_model else None
    return model, paths


def _cmd_models(args: argparse.Namespace) -> int:
    from cellmaps.bundled import format_card, model_card, model_cards

    if args.name:
        print(format_card(args.name, model_card(args.name)))
        return 0
    for name, card in model_cards().items():
        print(f"{name:12s} {card['modality']:12s} {card['what']}")
    return 0


def _cmd_ki67(args: argparse.Namespace) -> int:
    from cellmaps.ki67 import format_index, score_ki67

    model, paths = _split_model_arg(args.inputs)
    if not paths:
        raise CellmapsInputError("give Ki67 images or folders to score")
    table = score_ki67(model, paths, args.out, **_prediction_options(args))
    pooled = table[-1]
    print(
        f"{len(table) - 1} image(s): {pooled['positive']} positive, {pooled['negative']} "
        f"negative tumour nuclei, pooled Ki67 index {format_index(pooled['index'])}; "
        f"wrote {Path(args.out) / 'ki67.csv'} (and points/, geojson/, overlays/)"
    )
    _maybe_report(args)
    return 0


def _cmd_weak_roi(args: argparse.Namespace) -> int:
    from cellmaps.weak_roi import derive_weak_roi_dataset

    s = derive_weak_roi_dataset(
        args.dataset,
        args.out,
        [c.strip() for c in args.tumour.split(",") if c.strip()],
        keep=args.keep,
        sigma=args.sigma,
        points_share=args.points_share,
        seed=args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
        other_nuclei=args.other_nuclei,
        min_gap=args.min_gap,
    )
    if args.other_nuclei:
        print(
            f"added {s['non_tumour_added']} non-tumour nuclei (detected by "
            f"{Path(args.other_nuclei).name}, > {s['non_tumour_rule']['min_gap']:.1f} px from "
            f"every annotated point; {s['non_tumour_detections']} detections in all) to "
            f"{s['non_tumour_images']} non-test image(s); the rule is in DERIVED.md"
        )
    print(
        f"wrote weak ROIs for {s['images']} image(s) to {Path(args.out)} "
        f"({s['annotated_share']:.0%} of pixels annotated; points kept for "
        f"{s['train_with_points']} of {s['train_images']} train images); see DERIVED.md"
    )
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from cellmaps.recipes import describe_recipes

    for name, desc in describe_recipes():
        print(f"{name:32s} {desc}")
    return 0


def _add_prediction_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by the commands that run a model on images."""
    p.add_argument("inputs", nargs="*", help="[model file] then image files or folders")
    p.add_argument("--out", required=True, help="output folder (prediction layout)")
    p.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/report.html: counts per image (and the Ki67 index) with "
        "thumbnails of the overlays, one self-contained file",
    )
    p.add_argument("--split", help="for dataset folders: only this split of splits.csv")
    p.add_argument("--xi", type=_unit_interval, help="override the tuned threshold ξ (0..1)")
    p.add_argument(
        "--min-score",
        type=_non_negative,
        help="override the model's absolute evidence floor (map value a detection needs; 0 = none)",
    )
    p.add_argument("--tile", type=_positive_int, help="inference tile size (default: the model's)")
    p.add_argument("--stride", type=_positive_int, help="inference tile stride")
    p.add_argument("--batch", type=_positive_int, help="tiles per forward pass")
    _add_scale_args(p, "the input images", auto=True, shared=True)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a run stopped in OUT (same model and options): finished images are skipped",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="OUT holds another run: remove its outputs (points/, geojson/, overlays/, "
        "masks/, the tables) and start again",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="go on past images that cannot be read or processed; they are listed at the "
        "end and in OUT/skipped.csv",
    )
    p.add_argument(
        "--channels",
        type=_channel_list,
        help="image channels to use, counted from 0 and in the model's order (e.g. 0,2); "
        "default: all (grey is repeated, colour averaged when the model wants 1 channel)",
    )
    p.add_argument(
        "--page",
        type=_non_negative_int,
        help="for multi-page TIFFs: read this page (counted from 0) as the image",
    )
    p.add_argument(
        "--project",
        choices=["max"],
        help="for multi-page TIFFs: the pixel-wise maximum of their pages of one size",
    )
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        help="largest PNG/JPEG (H × W) to read into memory (default 268435456; also "
        "$CELLMAPS_MAX_PIXELS)",
    )
    slides = p.add_argument_group("large images, whole slides and clusters")
    slides.add_argument(
        "--stream-above",
        type=_positive_int,
        help="read TIFFs larger than this many pixels (H × W) region by region, at memory "
        "bounded by their width (default 67108864; pyramidal TIFFs and slides always)",
    )
    slides.add_argument(
        "--no-tissue",
        action="store_true",
        help="for images read by region: run every tile (default: tiles over background "
        "— no tissue on a low-resolution copy — are left out)",
    )
    slides.add_argument(
        "--magnification",
        type=_positive,
        help="objective power of the slides (pixel size 10/M µm, e.g. 40 → 0.25 µm), to "
        "pick the pyramid level for models that know their object size in µm",
    )
    slides.add_argument(
        "--parquet", action="store_true", help="also write points/<id>.parquet (pyarrow)"
    )
    slides.add_argument(
        "--regions",
        help="GeoJSON region polygons (QuPath annotations): a folder of <id>.geojson, or one "
        "file for every image; writes OUT/regions.csv with counts (and Ki67 index) per region",
    )
    slides.add_argument(
        "--workers",
        type=_positive_int,
        help="run on a local Dask cluster of this many worker processes (images, or row "
        "bands of a slide, in parallel; needs cellmaps[cluster])",
    )
    slides.add_argument(
        "--scheduler",
        help="run on a running Dask cluster at this address (tcp://HOST:8786; start it with "
        "`dask scheduler` and `dask worker ADDRESS`)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _channel_list(text: str) -> list[int]:
    from cellmaps.io.images import parse_channels

    try:
        return parse_channels(text)
    except CellmapsInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checked_number(convert, ok, want: str, kind: str = "number"):
    """An argparse type: ``convert`` the text, refuse it unless ``ok`` (one line naming
    what is wanted)."""

    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind}: {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return v

    return parse


_positive = _checked_number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
_non_negative = _checked_number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
_fraction = _checked_number(float, lambda v: 0 < v <= 1, "a share in (0, 1]")
_unit_interval = _checked_number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")  # ξ, IoU
# tile, stride, batch, iterations, ...
_positive_int = _checked_number(int, lambda v: v >= 1, "at least 1", kind="whole number")
_non_negative_int = _checked_number(int, lambda v: v >= 0, "0 or more", kind="whole number")


def _positive_or_words(*words: str):
    """An --object-size type: a positive number of px, or one of ``words`` (any case)."""
    quoted = [f"'{w}'" for w in words]
    kinds = ", ".join(["a positive number of px", *quoted[:-1]]) + f" or {quoted[-1]}"

    def parse(text: str) -> float | str:
        if text.strip().lower() in words:
            return text.strip().lower()
        try:
            return _positive(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be {kinds}, got {text!r}") from None

    return parse


_positive_or_auto = _positive_or_words("auto")  # tuning
_positive_auto_or_shared = _positive_or_words("auto", "shared")  # prediction


def _add_scale_args(
    p: argparse.ArgumentParser, what: str, auto: bool = False, shared: bool = False
) -> None:
    kind = _positive_auto_or_shared if shared else _positive_or_auto if auto else _positive
    p.add_argument(
        "--object-size",
        type=kind,
        help=f"median object (nucleus/cell) radius in px of {what}; the image is resampled "
        "so its objects match the model's and results are mapped back to input pixels"
        + (
            "; 'auto' estimates it per image (the scale at which the model answers most "
            "strongly; peak-decoding models; default of models whose recipe says "
            "inference.object_size: auto)"
            if auto
            else ""
        )
        + (
            "; 'shared' estimates it once for the run, from up to 8 images spread over it "
            "(the median of their estimates), for a folder imaged at one magnification"
            if shared
            else ""
        ),
    )
    p.add_argument(
        "--pixel-size",
        type=_positive,
        help=f"µm per pixel of {what} (models trained with --pixel-size know their object "
        "size in µm)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellmaps",
        description="Find, outline and classify cells and nuclei with multi-task FCNs.",
    )
    parser.add_argument("--version", action="version", version=f"cellmaps {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "evaluate",
        help="score a prediction folder against a dataset folder",
        description="Match predictions to truth and print detection, classification, "
        "segmentation and count scores (see README, 'Evaluate').",
    )
    ev.add_argument(
        "--truth", required=True, help="dataset folder (images/, points/, masks/, splits.csv)"
    )
    ev.add_argument("--pred", required=True, help="prediction folder (points/ and/or masks/)")
    ev.add_argument("--split", help="only images of this split (train/val/test)")
    ev.add_argument("--group", help="only images of this group")
    ev.add_argument(
        "--protocol",
        default="hungarian",
        choices=["hungarian", "one-to-one", "iou"],
        help="matching: hungarian (optimal assignment within --radius, default), one-to-one "
        "(DeepDistance: each the other's only partner within --radius) or iou (instance "
        "masks, --iou)",
    )
    ev.add_argument(
        "--radius", type=_positive, default=6.0, help="matching radius in px (default 6)"
    )
    ev.add_argument(
        "--iou",
        type=_unit_interval,
        default=0.5,
        help="IoU threshold for instance matching (default 0.5)",
    )
    ev.add_argument(
        "--labels",
        help="comma-separated labels: score only points with these, e.g. positive,negative",
    )
    ev.add_argument(
        "--strict",
        action="store_true",
        help="refuse when an image of the split has no prediction (default: score the others "
        "and warn)",
    )
    ev.add_argument("--json", help="write the full result (summary, per_group, per_image) here")
    ev.add_argument("--plot", help="write a PNG with the PR curve, per-image F1 and counts")
    ev.add_argument(
        "--report",
        help="write one self-contained HTML file: metrics, the figure, per-image table and "
        "overlays of found / extra / missed objects, the worst images first",
    )
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    tg = sub.add_parser(
        "targets",
        help="draw an image and every target map its annotations allow",
        description="Compute the training target maps of the five systems for one image and "
        "draw them, labelled, in one PNG (see README, 'Target maps').",
    )
    tg.add_argument("image", help="image file (PNG, JPEG, TIFF)")
    tg.add_argument("--points", help="points CSV (x,y,label)")
    tg.add_argument("--mask", help="instance label image (TIFF/PNG)")
    tg.add_argument("--roi", help="ROI class mask (0 = unlabelled, 1..K = classes)")
    tg.add_argument("--maps", help="comma-separated map names (default: all available)")
    tg.add_argument("--out", required=True, help="output PNG")
    tg.set_defaults(func=_cmd_targets)

    mo = sub.add_parser(
        "models",
        help="list the bundled models, or print one's model card",
        description="cellmaps models [NAME]: the bundled models (name, modality, what they "
        "find); with NAME, its card: training data and licence, scale, validation and test "
        "figures, the command that trained it. Use a NAME in place of a model file, e.g. "
        "`cellmaps predict fluo-nuclei images/ --out pred/`.",
    )
    mo.add_argument("name", nargs="?", help="a bundled model's name")
    mo.set_defaults(func=_cmd_models)

    rc = sub.add_parser("recipes", help="list the bundled recipes")
    rc.set_defaults(func=_cmd_recipes)

    tr = sub.add_parser("train", help="train a recipe on one or more dataset folders")
    tr.add_argument(
        "--recipe",
        help="recipe name (see `cellmaps recipes`) or YAML file; with --init and no "
        "--recipe, the initial model's own recipe",
    )
    tr.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    tr.add_argument(
        "--weight", action="append", type=_positive, help="loss weight of the matching --data"
    )
    tr.add_argument("--split", default="train", help="split to train on (default train)")
    tr.add_argument(
        "--fraction",
        type=_fraction,
        default=1.0,
        help="train on a seeded share of the --data images, in (0, 1] (fine-tuning studies)",
    )
    tr.add_argument(
        "--aux",
        action="append",
        help="auxiliary dataset folder mixed into training (repeatable; loss weight 1)",
    )
    tr.add_argument(
        "--aux-fraction",
        type=_fraction,
        default=1.0,
        help="seeded share of the --aux images used, in (0, 1]",
    )
    tr.add_argument(
        "--gamma",
        type=_positive,
        help="loss weight of the --data images against the --aux ones (L = γ·L_target + L_aux)",
    )
    tr.add_argument(
        "--val-split",
        default="val",
        help="split for validation and tuning (default val; '' = none)",
    )
    tr.add_argument(
        "--val-data", action="append", help="validation folder(s) (default: the --data folders)"
    )
    tr.add_argument("--out", required=True, help="model file to write (.safetensors)")
    tr.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing OUT model")
    tr.add_argument("--init", help="start from this model's weights (fine-tuning)")
    tr.add_argument(
        "--combine",
        choices=["sum", "round_robin", "uncertainty"],
        help="how the task losses combine: sum, round_robin (one task per iteration, the "
        "weakly-points scheduler) or uncertainty (learned task weights); default: the recipe's",
    )
    tr.add_argument(
        "--encoder-weights",
        help="ResNet weights (torchvision-style state dict, .safetensors or .pth) for the "
        "encoder of a ResNet U-Net recipe; never downloaded (ImageNet weights need net.width 64)",
    )
    tr.add_argument(
        "--freeze",
        type=_checked_number(int, lambda v: v >= 0, "0 or more", kind="whole number"),
        default=0,
        help="freeze the first K numbered blocks",
    )
    tr.add_argument(
        "--iterations", type=_positive_int, help="training steps (default: the recipe's)"
    )
    tr.add_argument("--batch", type=_positive_int, help="crops per step (default: the recipe's)")
    tr.add_argument(
        "--crop", type=_positive_int, help="training crop side in px (default: the recipe's)"
    )
    tr.add_argument(
        "--val-every",
        type=_positive_int,
        help="validate (F1 on the validation split) every N steps",
    )
    tr.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        help="write OUT.ckpt every N steps (what --resume continues from)",
    )
    tr.add_argument("--seed", type=int, help="random seed (same seed, same data: same model)")
    tr.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        help="auto = bf16 where the CPU supports it natively, else fp32",
    )
    tr.add_argument(
        "--schedule",
        choices=list(SCHEDULE_CHOICES),
        help="learning-rate schedule (default: the recipe's optimizer.schedule)",
    )
    tr.add_argument(
        "--train-radius",
        "--train-object-size",  # its older name, kept so existing scripts keep working
        dest="train_radius",
        type=_positive,
        help="resample the training images so their median object radius becomes this many "
        "px (default: the recipe's training.train_radius; none = train at the data's scale)",
    )
    tr.add_argument(
        "--per-image-scale",
        action="store_true",
        help="with --train-radius: bring each image (not each dataset) to that radius, "
        "for sets of mixed magnifications; the model then estimates each input's scale "
        "(training.object_scale: image, inference.object_size: auto)",
    )
    _add_scale_args(tr, "the training images (default: measured from masks or points)")
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_cmd_train)

    cx = sub.add_parser(
        "crosseval",
        help="train one model per dataset and test each on every dataset (MicroNet Fig. 4)",
        description="Train RECIPE on each --data folder's train split (ξ tuned on its val "
        "split, or train when it has none), score every model on every folder's test split "
        "and write OUT/crosseval.json, .csv and a heat-map .png (F1; same- vs other-source "
        "means). Models are kept in OUT/models/ and reused when the command runs again.",
    )
    cx.add_argument("--recipe", required=True, help="recipe name or YAML file")
    cx.add_argument("--data", action="append", required=True, help="dataset folder (2 or more)")
    cx.add_argument("--out", required=True, help="output folder")
    cx.add_argument("--iterations", type=_positive_int, help="training steps per model")
    cx.add_argument("--seed", type=int, help="random seed")
    cx.add_argument(
        "--radius",
        type=_positive,
        action="append",
        help="matching radius in px: once for all test sets, or once per --data in the same "
        "order (datasets at different magnifications); default: the recipe's",
    )
    cx.add_argument(
        "--by-group",
        action="store_true",
        help="one model per group of splits.csv (e.g. MoNuSeg organs) instead of per folder; "
        "groups without train and test images are left out",
    )
    cx.add_argument("--quiet", action="store_true", help="no progress bars")
    cx.set_defaults(func=_cmd_crosseval)

    tu = sub.add_parser(
        "tune", help="choose the decoding threshold by best F1 and store it in the model"
    )
    tu.add_argument("model", help="model file (.safetensors) to tune")
    tu.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    tu.add_argument(
        "--split",
        default="val",
        help="split(s) to tune on, comma-separated (default val; never the test split)",
    )
    tu.add_argument("--out", help="write the tuned model here (default: overwrite MODEL)")
    tu.add_argument(
        "--class-gain",
        action="store_true",
        help="Ki67 models: also choose the positive map's factor in the class decision by the "
        "lowest per-image index MAE on the tuning images (decode.class_gain)",
    )
    _add_scale_args(tu, "the tuning images", auto=True)
    tu.add_argument("--quiet", action="store_true", help="no progress bars")
    tu.set_defaults(func=_cmd_tune)

    pr = sub.add_parser(
        "predict",
        help="detect objects in images",
        description="cellmaps predict [MODEL.safetensors] IMAGES_OR_DIRS... --out DIR. Without a "
        "model, the bundled default nucleus detector is used.",
    )
    _add_prediction_args(pr)
    pr.add_argument(
        "--sample", action="store_true", help="also run on scikit-image's IHC sample image"
    )
    pr.add_argument(
        "--stain-norm",
        choices=["macenko", "reinhard"],
        help="bring each RGB brightfield image to a reference stain appearance before the "
        "model: macenko (H&E; Macenko's reference unless --stain-reference) or reinhard "
        "(L*a*b* mean/std of --stain-reference); images without stained tissue (blank, "
        "flat) are left as they are",
    )
    pr.add_argument(
        "--stain-reference",
        help="RGB image whose stain appearance --stain-norm matches (e.g. a training image)",
    )
    pr.add_argument(
        "--masks",
        action="store_true",
        help="also write instance masks masks/<id>.tif (deepdistance-extended: region "
        "growing; deepsplit / unet / branch-net / double-unet: border-limited watershed; "
        "weakly-points: argmax + watershed); geojson/<id>.geojson then holds one QuPath "
        "polygon per cell instead of points",
    )
    pr.set_defaults(func=_cmd_predict)

    ki = sub.add_parser(
        "ki67",
        help="Ki67 labelling index of IHC images",
        description="cellmaps ki67 [MODEL.safetensors] IMAGES_OR_DIRS... --out DIR. Detects "
        "Ki67-positive and -negative tumour nuclei (bundled Ki67 model unless a model is "
        "given) and writes DIR/ki67.csv (id,positive,negative,index per image and pooled), "
        "points/, geojson/ (QuPath), overlays/.",
    )
    _add_prediction_args(ki)
    ki.set_defaults(func=_cmd_ki67)

    wr = sub.add_parser(
        "weak-roi",
        help="derive weak tumour / non-tumour ROIs from classified points (KiNet)",
        description="Write DATASET's copy to --out with rois/ derived from the density of "
        "tumour-class points vs other classified points, only part of each image annotated "
        "(KiNet Fig. 3). Images, masks and points are linked, not copied; DERIVED.md says how.",
    )
    wr.add_argument("dataset", help="dataset folder with points/ carrying class labels")
    wr.add_argument("--out", required=True, help="new dataset folder")
    wr.add_argument(
        "--tumour", required=True, help="comma-separated tumour class labels, e.g. epithelial"
    )
    wr.add_argument("--keep", type=float, default=0.5, help="share of 64-px blocks annotated")
    wr.add_argument("--sigma", type=float, default=20.0, help="density smoothing (px)")
    wr.add_argument(
        "--points-share",
        type=float,
        default=1.0,
        help="keep points for only this share of the train split (others: ROI only)",
    )
    wr.add_argument("--seed", type=int, default=0, help="seed of the block and image choice")
    wr.add_argument(
        "--other-nuclei",
        metavar="MODEL",
        help="add the nuclei this detector finds away from every annotated point as class "
        "'non_tumour' (train/val images; only for data that annotates every tumour cell)",
    )
    wr.add_argument(
        "--min-gap",
        type=float,
        default=None,
        help="a detection closer than this (px) to an annotated point is that nucleus "
        "(default: 1.5 median nucleus radii, measured from the train/val points)",
    )
    wr.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    wr.add_argument("--quiet", action="store_true", help="no progress bar")
    wr.set_defaults(func=_cmd_weak_roi)
    for command in sub.choices.values():
        command.add_argument(
            "--debug", action="store_true", help="show the traceback of an unexpected error"
        )
    return parser


@contextlib.contextmanager
def _pixel_limit(limit: int | None):
    """``--max-pixels`` for the length of one command (then the environment as it was)."""
    if limit is None:
        yield
        return
    from cellmaps.io.images import MAX_PIXELS_VARIABLE as name

    before = os.environ.get(name)
    os.environ[name] = str(limit)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 1, 2, 130


def _error(args: argparse.Namespace, message: str) -> None:
    """One line on stderr (messages from libraries can hold line breaks)."""
    print(f"cellmaps {args.command}: error: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def _plain_warnings(command: str):
    """Warnings as one line a user reads — ``cellmaps <command>: warning: …`` — instead of
    Python's source file, line number and code line."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"cellmaps {command}: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit codes: 0 done, 2 bad input (one line naming the file and the
    problem), 1 internal error (one line; ``--debug`` shows the traceback), 130 stopped by
    Ctrl-C."""
    from cellmaps.batch import BatchInterrupted

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _pixel_limit(getattr(args, "max_pixels", None)), _plain_warnings(args.command):
            return args.func(args)
    except CellmapsInputError as exc:
        _error(args, str(exc))
        return EXIT_INPUT
    except BatchInterrupted as exc:
        _error(args, str(exc))
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _error(args, "interrupted (files already written are complete)")
        return EXIT_INTERRUPTED
    except MemoryError:
        if args.debug:
            raise
        _error(args, "out of memory; try a smaller --tile/--batch or a smaller image")
        return EXIT_INPUT
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        _error(args, f"{where}{exc.strerror or exc}")
        return EXIT_INPUT
    except Exception as exc:  # one line for a user; the traceback with --debug
        if args.debug:
            raise
        _error(
            args,
            f"internal error ({type(exc).__name__}: {exc}); run again with --debug for "
            "the traceback and report it",
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
