"""Decoding speed of the bundled models on 2048² maps: predicted maps → detections.

    python -m benchmarks.decode_speed [--repeats 5]

Maps: each bundled model's prediction for a 2048² mosaic of train images of its own data
(default: monuseg train; Ki67: bcdata_ki67 train), computed once. Timed (median of
``--repeats`` after a warm-up): ``Model.decode_maps`` (peaks / per-class peaks above ξ·max,
evidence floor), the streaming chunk decoder ``Model.detect`` uses (peaks at the floor plus
the flat-region rule, which reads the image), and the scipy formulation the compiled peak
finder replaced (maximum filter of the whole map, labelling, centre of mass and maximum
over labels) on the same maps. Target: ≤ 0.15 s per 2048² map.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from benchmarks._common import (
    machine,
    machine_line,
    median_time,
    train_mosaic,
    update_benchmarks_md,
    write_results,
)
from cellmaps.inference import stream
from cellmaps.io import normalize_image
from cellmaps.model import Model, bundled_model_path

TARGET_S = 0.15
SIDE = 2048
SOURCES = {"default": "monuseg", "ki67": "bcdata_ki67"}


def scipy_peaks(prob: np.ndarray, xi: float, md: int) -> np.ndarray:
    """The former find_peaks: maximum filter of the whole map, then labelling."""
    top = float(prob.max())
    mx = ndimage.maximum_filter(prob, size=2 * md + 1, mode="constant", cval=-np.inf)
    cand = (prob == mx) & (prob >= xi * top) & (prob > 0)
    lab, n = ndimage.label(cand, structure=np.ones((3, 3)))
    idx = np.arange(1, n + 1)
    ndimage.maximum(prob, lab, idx)
    return np.asarray(ndimage.center_of_mass(cand, lab, idx)).reshape(-1, 2)


def bench(name: str, repeats: int) -> dict:
    model = Model.load(bundled_model_path(name))
    image = train_mosaic(SOURCES[name], SIDE)
    maps = model.predict_maps(image)
    task = model.decode["task"]
    m = maps[task]
    small = normalize_image(image)
    decode = stream.peak_chunk_decoder(model, lambda i0, i1, j0, j1: small[i0:i1, j0:j1],
                                       small.shape[:2])  # fmt: skip
    core = (0, m.shape[1], 0, m.shape[2])
    t_maps, pts = median_time(lambda: model.decode_maps(maps), repeats, warmup=1)
    t_chunk, found = median_time(lambda: decode({task: m}, 0, 0, core), repeats, warmup=1)
    md, xi = model.decode["min_distance"], model.decode["xi"]
    t_old, _ = median_time(lambda: [scipy_peaks(c, xi, md) for c in m], repeats, warmup=1)
    row = {"model": name, "data": SOURCES[name], "map_shape": list(m.shape),
           "decode_maps_s": t_maps, "chunk_decoder_s": t_chunk, "scipy_peaks_s": t_old,
           "detections": len(pts)}  # fmt: skip
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = [bench(name, args.repeats) for name in SOURCES]
    mach = machine()
    write_results("decode_speed", {"machine": mach, "rows": rows, "target_s": TARGET_S})
    worst = max(max(r["decode_maps_s"], r["chunk_decoder_s"]) for r in rows)
    lines = [
        "## Decoding speed (`benchmarks/decode_speed.py`)",
        "",
        f"`python -m benchmarks.decode_speed --repeats {args.repeats}`. {machine_line(mach)} "
        f"Each bundled model's maps of a {SIDE}² mosaic of its train images, median of "
        f"{args.repeats}.",
        "",
        "| model | maps | decode_maps (s) | streaming chunk decoder incl. flat-region rule (s) "
        "| former scipy peak finding (s) | detections |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} ({r['data']}) | {' × '.join(map(str, r['map_shape']))} | "
        f"{r['decode_maps_s']:.3f} | {r['chunk_decoder_s']:.3f} | {r['scipy_peaks_s']:.3f} | "
        f"{r['detections']:,} |"
        for r in rows
    ]
    lines += [
        "",
        f"Slowest decoding of a {SIDE}² map: {worst:.3f} s (target ≤ {TARGET_S} s: "
        f"**{'met' if worst <= TARGET_S else 'not met'}**).",
    ]
    update_benchmarks_md("decode_speed", "\n".join(lines))


if __name__ == "__main__":
    main()
