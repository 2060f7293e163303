"""Speed of h-maxima peak detection: cellmaps.postprocess.h_maxima_peaks against
scikit-image's h_maxima + labelling, on a 2048² inner-distance-like map with ~2,000 peaks.

    python -m benchmarks.hmaxima_speed [--repeats 3] [--seed 0]

The map (seeded): 2,200 discs of radius 8–16 px drawn as DeepDistance inner distance
1/(1+0.1·d²) (overlaps keep the maximum), plus smoothed Gaussian noise (sd 0.05) inside the
cells, zero background — what a trained DeepDistance net predicts. Equality of the two
results is checked on every run.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    f = inner_distance_like_map(args.seed)
    rows = []
    for h in (0.1, 0.2, 0.3, 0.4, 0.5):
        t_ref, ref = median_time(lambda h=h: reference(f, h), args.repeats)
        t_fast, fast = median_time(lambda h=h: h_maxima_peaks(f, h), args.repeats)
        equal = ref.shape == fast.shape and np.allclose(ref, fast)
        rows.append(
            {
                "h": h,
                "peaks": len(ref),
                "skimage_s": t_ref,
                "cellmaps_s": t_fast,
                "speedup": t_ref / t_fast,
                "equal": bool(equal),
            }
        )
        print(rows[-1])
    floor = stage_times(f, args.repeats)
    print(floor)
    mach = machine()
    write_results(
        "hmaxima_speed",
        {
            "machine": mach,
            "seed": args.seed,
            "shape": list(f.shape),
            "rows": rows,
            "stages": floor,
        },
    )
    lines = [
        "## h-maxima peak detection speed (`benchmarks/hmaxima_speed.py`)",
        "",
        f"`python -m benchmarks.hmaxima_speed --repeats {args.repeats} --seed {args.seed}`: 2048×2048 "
        f"inner-distance-like float32 map, median of {args.repeats}. {machine_line(mach)} "
        "Target: ≥ 10× faster than scikit-image with the same maxima.",
        "",
        "| h | peaks | scikit-image h_maxima + label (s) | cellmaps h_maxima_peaks (s) | speed-up | same maxima |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['h']} | {r['peaks']:,} | {r['skimage_s']:.2f} | {r['cellmaps_s']:.3f} | {r['speedup']:.1f}× | {'yes' if r['equal'] else 'NO'} |"
        for r in rows
    ]
    best = max(r["speedup"] for r in rows)
    need = min(r["skimage_s"] for r in rows) / 10
    lines += [
        "",
        f"What limits it: the 10× target needs ≤ {need:.3f} s here (scikit-image takes "
        f"{min(r['skimage_s'] for r in rows):.2f}–{max(r['skimage_s'] for r in rows):.2f} s on "
        "this machine, not the issue's ~4 s). Three whole-image passes that any exact method "
        "built on scipy needs already cost "
        f"{floor['floor_s']:.3f} s (3×3 maximum filter {floor['maximum_filter_s']:.3f} s, "
        f"labelling the pixels above the minimum {floor['label_s']:.3f} s, labelling the "
        f"candidate maxima {floor['label_candidates_s']:.3f} s), and the exact reconstruction "
        f"of the {floor['slow_regions']:,} regions holding several maxima the rest. Best "
        f"measured: {best:.1f}×. Reaching 10× would take a single-pass max-tree / "
        "union-find in compiled code (numba or a C extension: a new dependency or build step "
        "not taken yet); no installed library offers exact h-maxima faster than scikit-image.",
    ]
    update_benchmarks_md("hmaxima_speed", "\n".join(lines))


def stage_times(f: np.ndarray, repeats: int) -> dict:
    """Time the whole-image passes h_maxima_mask makes before any reconstruction."""
    from scipy import ndimage

    from cellmaps.postprocess.hmaxima import EIGHT

    t_mx, mx = median_time(
        lambda: ndimage.maximum_filter(f, footprint=EIGHT, mode="constant", cval=-np.inf),
        repeats,
    )
    t_lab, (lab, _) = median_time(lambda: ndimage.label(f > f.min(), structure=EIGHT), repeats)
    cand = f >= mx
    t_cl, (cl, nc) = median_time(lambda: ndimage.label(cand & (lab > 0), structure=EIGHT), repeats)
    comp_of = np.zeros(nc + 1, np.intp)
    comp_of[cl.ravel()] = lab.ravel()
    per_comp = np.bincount(comp_of[1:], minlength=int(lab.max()) + 1)
    return {
        "maximum_filter_s": t_mx,
        "label_s": t_lab,
        "label_candidates_s": t_cl,
        "floor_s": t_mx + t_lab + t_cl,
        "slow_regions": int((per_comp[1:] > 1).sum()),
    }


if __name__ == "__main__":
    main()
