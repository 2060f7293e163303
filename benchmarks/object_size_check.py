"""How well the object size measured from points alone matches the mask radius.

    python -m benchmarks.object_size_check

On the train split of every shared dataset with instance masks, the median equivalent-disc
radius of the masks is compared with the estimate cellmaps uses for points-only data (half
the lower quartile of the nearest-neighbour spacing of the mask centroids) and with half the
median spacing. Writes results/object_size_check.json and the 'object_size_check' section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._common import (
    SHARED_DATA,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset, mask_centroids
from cellmaps.io.scale import (
    POINT_SPACING_PERCENTILE,
    median_object_radius,
    nearest_neighbour_distances,
)

DATASETS = ("monuseg", "dsb2018_fluo", "usiigaci_phc")


def check(name: str) -> dict:
    ds = Dataset(SHARED_DATA / name)
    masks = [ds.mask(i) for i in ds.ids("train")]
    cents = [mask_centroids(m)[0] for m in masks]
    mask_r, _ = median_object_radius(masks=masks)
    points_r, _ = median_object_radius(points=cents)
    nn = np.concatenate([nearest_neighbour_distances(c) for c in cents])
    return {
        "dataset": name,
        "n_images": len(masks),
        "mask_radius": mask_r,
        "points_estimate": points_r,
        "half_median_spacing": float(np.median(nn) / 2),
    }


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    rows = [check(n) for n in DATASETS]
    mach = machine()
    write_results("object_size_check", {"machine": mach, "rows": rows})
    lines = [
        "## Object size from points (`benchmarks/object_size_check.py`)",
        "",
        f"`python -m benchmarks.object_size_check`. {machine_line(mach)} Train splits; the "
        f"points estimate is half the {POINT_SPACING_PERCENTILE:g}th percentile of the mask "
        "centroids' nearest-neighbour spacing (what cellmaps uses when a dataset has only points).",
        "",
        "| dataset | images | mask radius (px) | points estimate (px) | error | half median spacing (px) | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e1 = r["points_estimate"] / r["mask_radius"] - 1
        e2 = r["half_median_spacing"] / r["mask_radius"] - 1
        lines.append(
            f"| {r['dataset']} | {r['n_images']} | {r['mask_radius']:.1f} | "
            f"{r['points_estimate']:.1f} | {e1:+.0%} | {r['half_median_spacing']:.1f} | {e2:+.0%} |"
        )
    update_benchmarks_md("object_size_check", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
