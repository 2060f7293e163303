"""The ``cellmaps`` command line: a thin shell over the Python API."""

from __future__ import annotations

import argparse
import json
import sys

from cellmaps.errors import CellmapsInputError


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from cellmaps.io._atomic import write_text_atomic
    from cellmaps.metrics.evaluate import evaluate, format_table, json_ready, plot_evaluation

    result = evaluate(
        args.truth,
        args.pred,
        split=args.split,
        group=args.group,
        protocol=args.protocol,
        radius=args.radius,
        iou=args.iou,
        progress=not args.quiet,
    )
    print(format_table(result))
    if args.json:
        write_text_atomic(args.json, json.dumps(json_ready(result), indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_evaluation(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from cellmaps.targets.panel import draw_target_panel, load_annotations

    if not (args.points or args.mask or args.roi):
        raise CellmapsInputError("give --points, --mask and/or --roi with the image")
    a = load_annotations(args.image, args.points, args.mask, args.roi)
    names = draw_target_panel(a, args.out, args.maps.split(",") if args.maps else None)
    print(f"wrote {args.out}: image + {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellmaps",
        description="Find, outline and classify cells and nuclei with multi-task FCNs.",
    )
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
    ev.add_argument("--protocol", default="hungarian", choices=["hungarian", "one-to-one", "iou"])
    ev.add_argument("--radius", type=float, default=6.0, help="matching radius in px (default 6)")
    ev.add_argument(
        "--iou", type=float, default=0.5, help="IoU threshold for instance matching (default 0.5)"
    )
    ev.add_argument("--json", help="write the full result (summary, per_group, per_image) here")
    ev.add_argument("--plot", help="write a PNG with the PR curve, per-image F1 and counts")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CellmapsInputError as exc:
        print(f"cellmaps {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
