"""The automatic scale's scan: every factor (full) or every other one, then the neighbours
of the best (coarse to fine, :func:`cellmaps.inference.scale.coarse_to_fine`).

    python -m benchmarks.auto_scale_scan [--repeats 3]

Rule, written before the run: coarse to fine is the default only if the factor it chooses
equals the full scan's (relative difference ≤ 1e-9) on every validation image of
CRCHisto, MoNuSeg and MBM at every shift of ``benchmarks/scale_shift.py`` (0.5 … 2), with
the bundled default model. Both choices come from one full scan per case (the coarse scan
reads the responses it would have computed), so the comparison is exact; the time of both
is measured on 512² and 2048² monuseg mosaics (median of ``--repeats``). Test splits are not
used.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import (
    machine,
    machine_line,
    train_mosaic,
    update_benchmarks_md,
    write_results,
)
from benchmarks.scale_shift import SHIFTS, shifted, source_split
from cellmaps.inference import scale as auto
from cellmaps.io.dataset import Dataset
from cellmaps.model import Model, bundled_model_path
from cellmaps.tune import truth_points

TOLERANCE = 1e-9


def compare_case(model: Model, image: np.ndarray) -> dict:
    """Both scans' choices and call counts from one full scan."""
    logs, full = auto.scale_response(model, image, scan="full")
    calls = []
    coarse = auto.coarse_to_fine(len(full), lambda i: calls.append(i) or full[i])
    f_full = auto.factor_from_response(model, logs, full)
    f_coarse = auto.factor_from_response(model, logs, coarse)
    return {"factors_tried_full": len(full), "factors_tried_coarse": len(calls),
            "factor_full": f_full, "factor_coarse": f_coarse,
            "equal": bool(abs(f_coarse - f_full) <= TOLERANCE * abs(f_full))}  # fmt: skip


def scan_time(model: Model, image: np.ndarray, scan: str, repeats: int) -> float:
    original = auto.scale_response
    auto.scale_response = lambda m, img: original(m, img, scan=scan)
    try:
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            auto.estimate_input_scale(model, image)
            times.append(time.perf_counter() - t)
        return float(np.median(times))
    finally:
        auto.scale_response = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = Model.load(bundled_model_path("default"))
    cases = []
    for name, root, split in source_split("val", 0):
        ds = Dataset(root)
        for image_id in ds.ids(split):
            image, truth = ds.image(image_id), truth_points(ds, image_id)
            for f in SHIFTS:
                img, _ = shifted(image, truth, f)
                cases.append({"source": name, "id": image_id, "shift": f,
                              **compare_case(model, img)})  # fmt: skip
            print(name, image_id, [c["equal"] for c in cases[-len(SHIFTS) :]], flush=True)
    mosaic = train_mosaic("monuseg")
    timing = {
        f"{side}²": {
            scan: scan_time(model, mosaic[:side, :side], scan, args.repeats)
            for scan in ("full", "coarse")
        }  # fmt: skip
        for side in (512, 2048)
    }
    equal = sum(c["equal"] for c in cases)
    payload = {"machine": machine(), "repeats": args.repeats, "cases": cases, "timing": timing,
               "equal": equal, "kept": equal == len(cases),
               "model_sha256": model.fingerprint()}  # fmt: skip
    write_results("auto_scale_scan", payload)
    update_benchmarks_md("auto_scale_scan", section_text(payload))


def section_text(d: dict) -> str:
    cases = d["cases"]
    full = np.mean([c["factors_tried_full"] for c in cases])
    coarse = np.mean([c["factors_tried_coarse"] for c in cases])
    lines = [
        "## Automatic scale: coarse-to-fine scan (`benchmarks/auto_scale_scan.py`)",
        "",
        f"`python -m benchmarks.auto_scale_scan --repeats {d['repeats']}`. "
        f"{machine_line(d['machine'])} Rule (before the run): coarse to fine is the default "
        "only if it chooses the full scan's factor on every validation case.",
        "",
        f"- Validation cases (CRCHisto, MoNuSeg, MBM val × shifts {', '.join(map(str, SHIFTS))}):"
        f" same factor in {d['equal']} of {len(cases)}; factors predicted per case "
        f"{full:.1f} (full) → {coarse:.1f} (coarse to fine).",
    ]
    for size, t in d["timing"].items():
        lines.append(
            f"- {size} monuseg mosaic, `estimate_input_scale` (median of {d['repeats']}): full "
            f"{t['full']:.2f} s, coarse to fine {t['coarse']:.2f} s "
            f"({t['full'] / t['coarse']:.2f}×)."
        )
    differ = [c for c in cases if not c["equal"]]
    lines += [""] + [
        f"- differs: {c['source']} {c['id']} ×{c['shift']:g}: {c['factor_full']:.4f} (full) vs "
        f"{c['factor_coarse']:.4f}"
        for c in differ
    ]
    lines.append(
        "Coarse to fine **kept** as the default (rule met)."
        if d["kept"]
        else "Coarse to fine **not kept**: the rule asks for the same factor in every case."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
