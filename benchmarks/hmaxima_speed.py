"""Speed of h-maxima peak detection: cellmaps.postprocess.h_maxima_peaks against
scikit-image's h_maxima + labelling, on two 2048² maps, in the same run.

    python -m benchmarks.hmaxima_speed [--repeats 3] [--seed 0]

Maps (seeded): "inner distance" — 2,200 discs of radius 8–16 px drawn as DeepDistance inner
distance 1/(1+0.1·d²) (overlaps keep the maximum) plus smoothed Gaussian noise (sd 0.05)
inside the cells, zero background, what a trained DeepDistance net predicts; "smooth, noise
everywhere" — Gaussian-smoothed (σ 6) white noise plus noise of sd 0.001 on every pixel, no
flat background (the case the earlier region-wise method degenerated on). h is a share of
each map's range. Equality of the two results is checked on every run.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage
from skimage.measure import label, regionprops
from skimage.morphology import h_maxima

from benchmarks._common import (
    machine,
    machine_line,
    median_time,
    update_benchmarks_md,
    write_results,
)
from cellmaps.postprocess import h_maxima_peaks


def inner_distance_like_map(seed: int, size: int = 2048, n: int = 2200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[:size, :size]
    for (r, c), rad in zip(rng.uniform(0, size, (n, 2)), rng.uniform(8, 16, n), strict=True):
        r0, r1 = int(max(r - rad, 0)), int(min(r + rad + 1, size))
        c0, c1 = int(max(c - rad, 0)), int(min(c + rad + 1, size))
        d2 = (yy[r0:r1, c0:c1] - r) ** 2 + (xx[r0:r1, c0:c1] - c) ** 2
        f[r0:r1, c0:c1] = np.maximum(
            f[r0:r1, c0:c1], np.where(d2 <= rad * rad, 1 / (1 + 0.1 * d2), 0)
        )
    noise = ndimage.gaussian_filter(rng.normal(0, 0.05, (size, size)), 1.5).astype(np.float32)
    return np.where(f > 0, np.clip(f + noise, 0, None), 0).astype(np.float32)


def reference(f: np.ndarray, h: float) -> np.ndarray:
    m = h_maxima(f, h) > 0
    return np.array([r.centroid for r in regionprops(label(m, connectivity=2))]).reshape(-1, 2)


def smooth_noise_map(seed: int, size: int = 2048) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6)
    return (f + rng.normal(0, 1e-3, f.shape)).astype(np.float32)


def blobs_noise_rounded_map(seed: int, size: int = 2048, n: int = 2000) -> np.ndarray:
    """The independent worst case of the issue: n Gaussian blobs (σ 3 px, peak heights
    0.2–1.0 after filtering: impulses of 2πσ² × height) plus N(0, 0.01) noise on every
    pixel, rounded to 0.01 (plateaus and ties everywhere)."""
    rng = np.random.default_rng(seed)
    f = np.zeros((size, size), np.float64)
    rows, cols = rng.integers(0, size, n), rng.integers(0, size, n)
    np.add.at(f, (rows, cols), rng.uniform(0.2, 1.0, n) * 2 * np.pi * 9)
    f = ndimage.gaussian_filter(f, 3) + rng.normal(0, 0.01, f.shape)
    return np.round(f, 2).astype(np.float32)


BLOBS = "blobs, noise, rounded"
#: the independent case's h values (absolute: its blobs are 0.2–1.0 high)
BLOBS_H = (0.05, 0.2, 0.5)


def h_values(name: str, span: float) -> list[tuple[float, float]]:
    """(share of the map's range, h) of each case: shares of the range, or the independent
    case's absolute values."""
    if name == BLOBS:
        return [(round(h / span, 3), h) for h in BLOBS_H]
    return [(share, share * span) for share in (0.1, 0.2, 0.3, 0.5)]


def candidate_share(f: np.ndarray) -> float:
    """Share of the pixels the floods start from (3×3 maxima off the image's minimum): the
    figure the fallback rule compares with ``MAX_CANDIDATE_SHARE``."""
    from cellmaps.postprocess.hmaxima import flood_starts

    return flood_starts(f).size / f.size


def floods_only(f: np.ndarray, h: float) -> np.ndarray:
    """h_maxima_peaks with the fallback to scikit-image switched off (the ablation)."""
    from cellmaps.postprocess import hmaxima

    saved = hmaxima.MAX_CANDIDATE_SHARE, hmaxima.FLOOD_BUDGET_PER_PIXEL
    hmaxima.MAX_CANDIDATE_SHARE, hmaxima.FLOOD_BUDGET_PER_PIXEL = 1.0, 1e9
    try:
        return h_maxima_peaks(f, h)
    finally:
        hmaxima.MAX_CANDIDATE_SHARE, hmaxima.FLOOD_BUDGET_PER_PIXEL = saved


def without_block_proofs(f: np.ndarray, h: float) -> np.ndarray:
    """h_maxima_peaks with every candidate flooded on the pixels (no proofs on the 4 × 4
    grid: the method shipped before them; the ablation)."""
    from cellmaps.postprocess import hmaxima

    saved = hmaxima.PROOF_BLOCKS
    hmaxima.PROOF_BLOCKS = ()
    try:
        return h_maxima_peaks(f, h)
    finally:
        hmaxima.PROOF_BLOCKS = saved


TARGET = 10.0
# the goal: ≥ TARGET× on the smooth map with noise everywhere at these h shares
GOAL_MAP, GOAL_SHARES = "smooth, noise everywhere", (0.2, 0.3, 0.5)
ABLATION_SHARES = (0.1, 0.5)


def alternatives(f: np.ndarray, h: float, ref: np.ndarray, repeats: int) -> dict:
    """Time and check the exact methods tried before (benchmarks/_hmaxima_alternatives)."""
    from benchmarks._hmaxima_alternatives import max_tree_h_maxima_mask, regionwise_h_maxima_mask
    from cellmaps.postprocess.peaks import plateau_centroids

    out = {}
    for name, fn in (("region-wise reconstruction (previous)", regionwise_h_maxima_mask),
                     ("union-find max-tree, all pixels", max_tree_h_maxima_mask)):  # fmt: skip
        fn(f[:64, :64], h)  # compile
        t, peaks = median_time(lambda fn=fn: plateau_centroids(fn(f, h))[0], repeats)
        out[name] = {"s": t, "equal": bool(peaks.shape == ref.shape and np.allclose(peaks, ref))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    maps = {
        "inner distance": inner_distance_like_map(args.seed),
        "smooth, noise everywhere": smooth_noise_map(args.seed),
        BLOBS: blobs_noise_rounded_map(args.seed),
    }
    h_maxima_peaks(maps["inner distance"][:64, :64], 0.1)  # compile / load the kernels
    rows = []
    for name, f in maps.items():
        span = float(np.ptp(f))
        for share, h in h_values(name, span):
            t_ref, ref = median_time(lambda f=f, h=h: reference(f, h), args.repeats)
            t_fast, fast = median_time(lambda f=f, h=h: h_maxima_peaks(f, h), args.repeats)
            t_flood, flood = median_time(lambda f=f, h=h: floods_only(f, h), args.repeats)
            t_noproof, noproof = median_time(
                lambda f=f, h=h: without_block_proofs(f, h), args.repeats
            )
            equal = all(ref.shape == x.shape and np.allclose(ref, x)
                        for x in (fast, flood, noproof))  # fmt: skip
            rows.append({"map": name, "h_share": share, "h": h, "peaks": len(ref),
                         "candidate_share": candidate_share(f),
                         "skimage_s": t_ref, "cellmaps_s": t_fast, "floods_only_s": t_flood,
                         "no_block_proofs_s": t_noproof,
                         "speedup": t_ref / t_fast, "equal": bool(equal)})  # fmt: skip
            if name != BLOBS and share in ABLATION_SHARES:
                rows[-1]["alternatives"] = alternatives(f, h, ref, args.repeats)
            print(rows[-1], flush=True)
    mach = machine()
    write_results("hmaxima_speed", {"machine": mach, "seed": args.seed, "shape": [2048, 2048],
                                    "rows": rows})  # fmt: skip
    lines = [
        "## h-maxima peak detection speed (`benchmarks/hmaxima_speed.py`)",
        "",
        f"`python -m benchmarks.hmaxima_speed --repeats {args.repeats} --seed {args.seed}`: two "
        f"2048×2048 float32 maps (see the script), median of {args.repeats}, both methods in "
        f"the same run. {machine_line(mach)} Target: ≥ {TARGET:.0f}× faster than "
        "scikit-image with the same maxima.",
        "",
        "| map | h (share of range) | h | flood starts: 3×3 maxima off the minimum (share of pixels) | peaks | scikit-image h_maxima + label (s) | cellmaps h_maxima_peaks (s) | floods only, no fallback (s) | without the block proofs (s) | speed-up | same maxima |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['map']} | {r['h_share']} | {r['h']:.3g} | {r['candidate_share']:.2%} | "
        f"{r['peaks']:,} | {r['skimage_s']:.2f} | {r['cellmaps_s']:.3f} | "
        f"{r['floods_only_s']:.3f} | {r['no_block_proofs_s']:.3f} | {r['speedup']:.1f}× | "
        f"{'yes' if r['equal'] else 'NO'} |"
        for r in rows
    ]
    lines += [
        "",
        "Ablation — exact methods tried, same maps (s; all gave the same maxima unless marked):",
        "",
        "| map | h share | scikit-image | region-wise reconstruction | union-find "
        "max-tree, all pixels | priority flood from every candidate (previous) | "
        "proofs on 4 × 4 blocks, then floods (shipped) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "alternatives" not in r:
            continue
        alt = r["alternatives"]
        cells = [f"{a['s']:.2f}{'' if a['equal'] else ' (DIFFERENT)'}" for a in alt.values()]
        lines.append(f"| {r['map']} | {r['h_share']} | {r['skimage_s']:.2f} | "
                     + " | ".join(cells)
                     + f" | {r['no_block_proofs_s']:.2f} | {r['cellmaps_s']:.2f} |")  # fmt: skip
    worst = min(r["speedup"] for r in rows)
    same = all(r["equal"] for r in rows)
    from cellmaps.postprocess import hmaxima

    fell_back = [r for r in rows if r["candidate_share"] > hmaxima.MAX_CANDIDATE_SHARE]
    slower = [r for r in rows if r["speedup"] < 1.0]
    lines += [
        "",
        f"Fallback: maps with more than {hmaxima.MAX_CANDIDATE_SHARE:.0%} of their pixels 3×3 "
        f"maxima go to scikit-image's reconstruction ({len(fell_back)} of {len(rows)} cases "
        f"here), and floods that pop more than {hmaxima.FLOOD_BUDGET_PER_PIXEL:g} pixel per "
        "image pixel stop and hand over to it. Slowest case against scikit-image: "
        f"{worst:.2f}× ({'never slower' if not slower else 'slower in ' + str(len(slower))}"
        f"); floods alone on the slowest: "
        + ", ".join(
            f"{r['map']} h {r['h']:.2g}: {r['skimage_s'] / r['floods_only_s']:.2f}×"
            for r in sorted(rows, key=lambda r: r["skimage_s"] / r["floods_only_s"])[:2]
        )
        + " (the columns above).",
    ]
    goal = [r for r in rows if r["map"] == GOAL_MAP and r["h_share"] in GOAL_SHARES]
    goal_worst = min(r["speedup"] for r in goal)
    lines += [
        "",
        f"Goal of the issue, ≥ {TARGET:.0f}× on the {GOAL_MAP} map at h "
        f"{', '.join(str(x) for x in GOAL_SHARES)} of its range: slowest "
        f"{goal_worst:.1f}× (**{'met' if goal_worst >= TARGET and same else 'not met'}**; "
        + ", ".join(f"h {r['h_share']}: {r['speedup']:.1f}×" for r in goal)
        + f"). Every map: slowest {worst:.1f}× (≥ {TARGET:.0f}× everywhere: "
        f"**{'met' if worst >= TARGET and same else 'not met'}**; never slower than "
        f"scikit-image: **{'yes' if not slower else 'no'}**); maxima identical in "
        f"{sum(r['equal'] for r in rows)} of {len(rows)} cases. Method: each candidate maximum "
        "is first decided, where it can be, on a grid of 4 × 4 blocks — the reconstruction "
        "there with the blocks' largest f and g is an upper bound of the pixels' (proves a "
        "pass), with their smallest f a lower bound (proves a fail) — and the rest by a "
        "priority flood on the pixels (compiled with numba) that computes scikit-image's "
        "reconstruction only where its residue test can pass and stops once the answer is "
        "known; floods run highest first and leave lower bounds for later ones.",
    ]
    slow = [r for r in rows if r["speedup"] < TARGET]
    if slow:
        lines.append("")
        lines.append(
            "What limits it: "
            + ", ".join(f"{r['map']} at h {r['h_share']} ({r['speedup']:.1f}×)" for r in slow)
            + ". A maximum the blocks cannot decide (its h-band joined to higher ground by a "
            "neck narrower than a block, or a saddle within a block's range of f − h) is "
            "flooded on the pixels: all of its band if it passes, all of its hill above the "
            "saddle if it fails; where 3×3 maxima are more than "
            f"{hmaxima.MAX_CANDIDATE_SHARE:.0%} of the pixels (noise everywhere, rounded "
            "values) scikit-image's reconstruction runs instead, at its own speed."
        )
        worst_row = min((r for r in slow if "alternatives" in r), key=lambda r: r["speedup"],
                        default=None)  # fmt: skip
        if worst_row is not None:
            mt = worst_row["alternatives"]["union-find max-tree, all pixels"]["s"]
            lines[-1] += (
                f" The max-tree visits every pixel once whatever h is; on the slowest case it "
                f"took {mt:.2f} s against the flood's {worst_row['cellmaps_s']:.2f} s and "
                f"scikit-image's {worst_row['skimage_s']:.2f} s (it visits pixels in value "
                "order, i.e. at random places in memory)."
            )
    update_benchmarks_md("hmaxima_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
