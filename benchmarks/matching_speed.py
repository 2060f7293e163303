"""Speed of Hungarian point matching on 100k × 100k points (issue: ≤ 2 s on this machine).

Truth points are uniform at a nucleus density taken from the data (CRCHisto: ~300 nuclei
per 500×500 image at 20×; "dense" = 4× that). Predictions are the truth jittered by a
Gaussian (sd 2 px), with 10 % dropped and 10 % false detections added; radius 6 px.

    python -m benchmarks.matching_speed [--repeats 3] [--seed 0]
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
from cellmaps.metrics import match_hungarian, match_one_to_one


def make_points(n: int, density: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    side = np.sqrt(n / density)
    truth = rng.uniform(0, side, size=(n, 2))
    pred = truth + rng.normal(0, 2.0, size=truth.shape)
    keep = rng.random(n) > 0.1
    fps = rng.uniform(0, side, size=(n - keep.sum(), 2))
    pred = np.concatenate([pred[keep], fps])
    return truth, pred[rng.permutation(len(pred))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=100_000)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    base = 300 / 500**2
    rows = []
    for name, density in (("crchisto-like", base), ("dense (4x)", 4 * base)):
        truth, pred = make_points(args.n, density, rng)
        t_h, m = median_time(lambda t=truth, p=pred: match_hungarian(t, p, 6.0), args.repeats)
        t_o, m1 = median_time(lambda t=truth, p=pred: match_one_to_one(t, p, 6.0), args.repeats)
        rows.append(
            {
                "case": name,
                "n_truth": len(truth),
                "n_pred": len(pred),
                "hungarian_seconds": t_h,
                "hungarian_tp": m.tp,
                "one_to_one_seconds": t_o,
                "one_to_one_tp": m1.tp,
            }
        )
        print(rows[-1])
    mach = machine()
    write_results(
        "matching_speed", {"machine": mach, "seed": args.seed, "radius": 6.0, "rows": rows}
    )
    lines = [
        "## Point matching speed (`benchmarks/matching_speed.py`)",
        "",
        f"`python -m benchmarks.matching_speed --repeats {args.repeats} --seed {args.seed}` "
        f"(median of {args.repeats}; single process). {machine_line(mach)}",
        "Target: Hungarian matching of 100k vs 100k points in ≤ 2 s.",
        "",
        "| case | truth | pred | Hungarian s | Hungarian TP | one-to-one s | one-to-one TP |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['n_truth']:,} | {r['n_pred']:,} | {r['hungarian_seconds']:.2f} | "
            f"{r['hungarian_tp']:,} | {r['one_to_one_seconds']:.2f} | {r['one_to_one_tp']:,} |"
        )
    update_benchmarks_md("matching_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
