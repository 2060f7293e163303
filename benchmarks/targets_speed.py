"""Speed of every target map on a 1000×1000 image with 1,000 objects (issue: ≤ 1 s each).

Synthetic scene (seeded): 1,000 discs of radius 6–12 px at random centres, later discs
painted over earlier ones so that many cells touch; an RGB image with dark nuclei on a
light background plus noise; points = mask centroids, labelled with two classes.

    python -m benchmarks.targets_speed [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._common import (
    machine,
    machine_line,
    median_time,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io.masks import mask_centroids
from cellmaps.targets import TARGETS, Annotations, make_targets


def synthetic_scene(seed: int, size: int = 1000, n: int = 1000):
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i, (r, c, rad) in enumerate(
        zip(rng.uniform(0, size, n), rng.uniform(0, size, n), rng.uniform(6, 12, n), strict=True), 1
    ):
        r0, r1 = int(max(r - rad, 0)), int(min(r + rad + 1, size))
        c0, c1 = int(max(c - rad, 0)), int(min(c + rad + 1, size))
        win = (yy[r0:r1, c0:c1] - r) ** 2 + (xx[r0:r1, c0:c1] - c) ** 2 <= rad**2
        mask[r0:r1, c0:c1][win] = i
    img = np.where(mask[..., None] > 0, [70, 40, 120], [225, 200, 215]).astype(float)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    pts, ids = mask_centroids(mask)
    labels = np.where(ids % 2 == 0, "positive", "negative").astype(object)
    roi = (np.arange(size)[None, :] // 250 % 3).repeat(size, 0).astype(np.uint8)
    return Annotations(img, pts, labels, mask, roi, "synthetic")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    a = synthetic_scene(args.seed)
    n_obj = len(np.unique(a.mask)) - 1
    rows = []
    for name in TARGETS:
        seconds, _ = median_time(lambda name=name: make_targets([name], a), args.repeats)
        rows.append({"map": name, "seconds": seconds})
        print(rows[-1])
    mach = machine()
    write_results(
        "targets_speed",
        {"machine": mach, "seed": args.seed, "shape": [1000, 1000], "objects": n_obj, "rows": rows},
    )
    lines = [
        "## Target map speed (`benchmarks/targets_speed.py`)",
        "",
        f"`python -m benchmarks.targets_speed --repeats {args.repeats} --seed {args.seed}`: "
        f"1000×1000 synthetic RGB image, {n_obj} visible objects (of 1,000 painted discs), "
        f"median of {args.repeats}. {machine_line(mach)} Target: ≤ 1 s per map.",
        "",
        "| map | seconds |",
        "|---|---|",
    ]
    lines += [f"| `{r['map']}` | {r['seconds']:.3f} |" for r in rows]
    update_benchmarks_md("targets_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
