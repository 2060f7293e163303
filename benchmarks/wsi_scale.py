"""Whole slides at bounded memory, and a batch on a Dask LocalCluster (issue: whole slides).

Synthetic slides are made by tiling real H&E images (shared monuseg and crchisto images,
chosen by a seeded hash per tile) into pyramidal, tiled, zlib-compressed BigTIFFs of
4k², 16k² and 32k² px with a background (glass) margin of 15 % on every side; they are
written tile by tile, never held whole. Each slide is run by ``cellmaps predict`` in its own
process (the CLI a user runs) with the bundled default model; the benchmark reads that
process's peak resident memory from the kernel (``wait4`` rusage), its wall time, the share
of tiles skipped as background, and the throughput per megapixel and per tissue megapixel.

The batch: N tiles of 1024² (crops of the 4k² slide's tissue, PNG) run serially (one
process, torch using both cores) and on a LocalCluster of 2 worker processes with 1 torch
thread each (``--workers 2``: the same two cores, so the ratio shows what the cluster gains
from running decoding and I/O in parallel too, not from more cores).

    python -m benchmarks.wsi_scale [--sizes 4096,16384,32768] [--tiles 100] [--seed 0]
    python -m benchmarks.wsi_scale --startup-only   # the fixed cost of one run, added
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._common import (
    RESULTS,
    machine,
    machine_line,
    read_results,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io.images import read_image, write_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TILE = 512
MARGIN = 0.15
GLASS = np.array([236, 234, 238], np.uint8)


def source_images(limit: int = 24) -> list[np.ndarray]:
    files = sorted((SHARED / "monuseg" / "images").glob("*"))[: limit // 2]
    files += sorted((SHARED / "crchisto" / "images").glob("*"))[: limit // 2]
    if not files:
        sys.exit(f"no shared images under {SHARED}")
    return [read_image(f)[..., :3] for f in files]


def slide_tile(images, side: int, r: int, c: int, seed: int, margin: float = MARGIN) -> np.ndarray:
    """Level-0 pixels of the TILE² tile at (r, c): glass in the margin (a share ``margin`` of
    the side on every side), else a crop of a source image picked by a seeded hash of the
    tile."""
    out = np.empty((TILE, TILE, 3), np.uint8)
    out[:] = GLASS
    lo, hi = int(side * margin), side - int(side * margin)
    rows = slice(max(r, lo) - r, max(min(r + TILE, hi) - r, 0))
    cols = slice(max(c, lo) - c, max(min(c + TILE, hi) - c, 0))
    if rows.stop > rows.start and cols.stop > cols.start:
        key = hashlib.sha256(f"{seed},{r},{c}".encode()).digest()
        img = images[key[0] % len(images)]
        y = key[1] % max(1, img.shape[0] - TILE + 1)
        x = key[2] % max(1, img.shape[1] - TILE + 1)
        crop = np.full((TILE, TILE, 3), GLASS, np.uint8)
        part = img[y : y + TILE, x : x + TILE]
        crop[: part.shape[0], : part.shape[1]] = part
        out[rows, cols] = crop[rows, cols]
    return out


def write_slide(path: Path, side: int, seed: int, levels: int = 4, margin: float = MARGIN) -> None:
    """A pyramidal tiled BigTIFF written tile by tile (levels by 2× area averaging)."""
    import tifffile

    images = source_images()

    def tiles(k: int):
        f = 2**k
        for r in range(0, -(-side // f), TILE):
            for c in range(0, -(-side // f), TILE):
                big = np.zeros((TILE * f, TILE * f, 3), np.float32)
                for i in range(f):
                    for j in range(f):
                        big[i * TILE : (i + 1) * TILE, j * TILE : (j + 1) * TILE] = slide_tile(
                            images, side, r * f + i * TILE, c * f + j * TILE, seed, margin
                        )
                if f > 1:
                    big = big.reshape(TILE, f, TILE, f, 3).mean((1, 3))
                yield big.astype(np.uint8)

    opts = dict(tile=(TILE, TILE), photometric="rgb", compression="zlib", dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(tiles(0), shape=(side, side, 3), subifds=levels - 1, **opts)
        for k in range(1, levels):
            n = -(-side // 2**k)
            tw.write(tiles(k), shape=(n, n, 3), subfiletype=1, **opts)


def sample_rss(pid: int, every: float, out: list) -> None:
    """Append (seconds, RSS GB) of process ``pid`` every ``every`` s until it exits."""
    t0 = time.perf_counter()
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        kb = next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("VmRSS")), 0)
        if kb == 0:  # a zombie (exited, not yet reaped) has no VmRSS line
            return
        out.append((round(time.perf_counter() - t0, 2), kb * 1024 / 1e9))
        time.sleep(every)


def run_cli(args: list[str], env: dict | None = None, rss_every: float = 0.0) -> dict:
    """Run ``cellmaps`` in a child process; wall time and the child's peak RSS (GB), and with
    ``rss_every`` > 0 its RSS sampled over time (to see what grows)."""
    import threading

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cellmaps", *args],
        env=None if env is None else {**os.environ, **env},
    )
    curve: list = []
    sampler = None
    if rss_every > 0:
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, rss_every, curve))
        sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if sampler is not None:
        sampler.join()
    if status != 0:
        sys.exit(f"cellmaps {' '.join(args)} failed ({status})")
    out = {"seconds": wall, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}
    return {**out, "rss_curve": curve} if rss_every > 0 else out


def slide_stem(side: int, margin: float) -> str:
    """File stem of the synthetic slide of ``side``² with a glass ``margin``."""
    return f"slide_{side}_m{round(100 * margin)}"


def slide_case(
    side: int,
    work: Path,
    seed: int,
    margin: float = MARGIN,
    rss_every: float = 0.0,
    src: Path | None = None,
) -> dict:
    """Run ``cellmaps predict`` on the synthetic slide of ``side``² (written first if
    missing), with the package imported from ``src`` when given (an earlier revision)."""
    import json

    path = work / f"{slide_stem(side, margin)}.tif"
    if not path.exists():
        t0 = time.perf_counter()
        write_slide(path, side, seed, margin=margin)
        print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    out = work / f"out_{slide_stem(side, margin)}"
    run = run_cli(
        ["predict", str(path), "--out", str(out), "--overwrite", "--quiet"],
        env=None if src is None else {"PYTHONPATH": str(src)},
        rss_every=rss_every,
    )
    counts = (out / "counts.csv").read_text().splitlines()[1].split(",")
    record = json.loads((out / "cellmaps-run.json").read_text())
    info = json.loads((out / "slides.json").read_text())[path.stem]
    tissue_mp = side * side * (1 - info["skipped_tiles"]) / 1e6
    return {
        "side": side,
        "margin": margin,
        "megapixels": side * side / 1e6,
        "tissue_megapixels": tissue_mp,
        "detections": int(counts[1]),
        "skipped_tiles": info["skipped_tiles"],
        "level": info["level"],
        "model": record["model"][:16],
        **run,
        "mp_per_s": side * side / 1e6 / run["seconds"],
        "tissue_mp_per_s": tissue_mp / run["seconds"],
    }


def baseline_case(rev: str, sizes: list[int], work: Path, seed: int, margin: float) -> dict:
    """The slides run with the package as it was at git revision ``rev`` (a temporary
    worktree put first on PYTHONPATH), to show what a change did to memory."""
    root = Path(__file__).resolve().parents[1]
    full = subprocess.run(["git", "-C", str(root), "rev-parse", rev], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    tree = work / f"rev_{full[:8]}"
    subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), full],
                   check=True, capture_output=True)  # fmt: skip
    try:
        slides = [slide_case(s, work, seed, margin, 1.0, tree / "src") for s in sizes]
    finally:
        subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)],
                       check=False)  # fmt: skip
    return {"rev": full[:7], "margin": margin, "slides": slides}


def batch_case(n: int, work: Path, seed: int) -> dict:
    """N 1024² tiles cut from the 4k² slide's tissue (as PNG), serial vs 2 workers."""
    import tifffile

    folder = work / f"tiles_{n}"
    if not folder.is_dir():
        folder.mkdir()
        path = work / f"{slide_stem(4096, MARGIN)}.tif"
        if not path.exists():
            write_slide(path, 4096, seed)
        src = tifffile.imread(path)
        lo, hi = int(4096 * MARGIN), 4096 - int(4096 * MARGIN) - 1024
        rng = np.random.default_rng(seed)
        for i in range(n):
            r, c = rng.integers(lo, hi, 2)
            write_image(folder / f"tile_{i:03d}.png", src[r : r + 1024, c : c + 1024])
    serial = run_cli(["predict", str(folder), "--out", str(work / "b_serial"), "--overwrite",
                      "--quiet"])  # fmt: skip
    cluster = run_cli(["predict", str(folder), "--out", str(work / "b_cluster"), "--overwrite",
                       "--quiet", "--workers", "2"])  # fmt: skip
    same = (work / "b_serial" / "counts.csv").read_text() == (
        work / "b_cluster" / "counts.csv"
    ).read_text()
    return {
        "tiles": n,
        "serial": serial,
        "cluster_2_workers": cluster,
        "speedup": serial["seconds"] / cluster["seconds"],
        "same_counts": same,
    }


def startup_case(work: Path) -> dict:
    """A 256² PNG through the same command: the fixed cost of one run (imports, model,
    output folder), which the 4k² run carries over far fewer megapixels than the 32k² run."""
    img = np.full((256, 256, 3), GLASS, np.uint8)
    (work / "tiny").mkdir(exist_ok=True)
    write_image(work / "tiny" / "tiny.png", img)
    runs = [
        run_cli(
            [
                "predict",
                str(work / "tiny"),
                "--out",
                str(work / "out_tiny"),
                "--overwrite",
                "--quiet",
            ]
        )["seconds"]  # fmt: skip
        for _ in range(3)
    ]
    return {"seconds": float(np.median(runs)), "runs": runs}


def preview_figure(work: Path, side: int = 16384, margin: float = MARGIN) -> Path:
    """docs/wsi_preview.png: the overlay preview `cellmaps predict` wrote for a slide, and
    the tissue mask it used (the tiles left out are the dark ones)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cellmaps.inference.slides import tissue_mask
    from cellmaps.io.slides import LazyImage

    stem = slide_stem(side, margin)
    overlay = read_image(work / f"out_{stem}" / "overlays" / f"{stem}.png")
    with LazyImage(work / f"{stem}.tif") as img:
        thumb, _ = img.thumbnail(1024)
    fig, ax = plt.subplots(1, 3, figsize=(12, 4.2))
    ax[0].imshow(overlay)
    ax[0].set_title(f"{side}² slide: detections (preview)")
    ax[1].imshow(tissue_mask(thumb), cmap="gray")
    ax[1].set_title("tissue mask (tiles run)")
    r0 = overlay.shape[0] // 2
    ax[2].imshow(overlay[r0 : r0 + 256, r0 : r0 + 256])
    ax[2].set_title("preview, detail")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    path = Path(__file__).resolve().parents[1] / "docs" / "wsi_preview.png"
    save_figure(fig, path, dpi=80)
    return path


def batch_one_thread(tiles: int, work: Path) -> dict:
    """The batch of :func:`batch_case` again, serially with one torch thread (ablation)."""
    run = run_cli(["predict", str(work / f"tiles_{tiles}"), "--out", str(work / "b_serial1"),
                   "--overwrite", "--quiet"], env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    same = (work / "b_serial1" / "counts.csv").read_text() == (
        work / "b_serial" / "counts.csv"
    ).read_text()
    return dict(run, same_counts=same, machine=machine())


def baseline_lines(res: dict) -> list[str]:
    """Peak memory of each baseline revision beside this run's, slide by slide."""
    bases = res.get("baselines") or {}
    if not bases:
        return []
    now = {(r["side"], r.get("margin")): r for r in res["slides"]}
    lines = ["", "| code | slide | glass margin | detections | peak RSS (GB) | vs its smallest slide |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    runs = [(f"{b['rev']} (baseline)", b["slides"]) for b in bases.values()]
    runs.append((f"{res['machine'].get('commit', 'this run')} (this run)", res["slides"]))
    for name, slides in runs:
        first = slides[0]["peak_rss_gb"]
        for r in slides:
            lines.append(
                f"| {name} | {r['side']}² | {100 * r.get('margin', MARGIN):.0f} % | "
                f"{r['detections']} | {r['peak_rss_gb']:.2f} | {r['peak_rss_gb'] / first:.2f}× |"
            )
    lines.append("")
    for name, slides in runs:
        a, z = slides[0], slides[-1]
        if z["detections"] > a["detections"]:
            slope = (
                (z["peak_rss_gb"] - a["peak_rss_gb"]) * 1e9 / (z["detections"] - a["detections"])
            )
            lines.append(
                f"{name}: the peak grew by {slope / 1e3:.2f} KB per detection from "
                f"{a['side']}² to {z['side']}² ({a['detections']} → {z['detections']})."
            )
    for b in bases.values():
        for r in b["slides"]:
            mine = now.get((r["side"], r.get("margin")))
            if mine:
                lines.append("")
                lines.append(
                    f"At {r['side']}² ({100 * r['margin']:.0f} % margin) the peak went "
                    f"{r['peak_rss_gb']:.2f} → {mine['peak_rss_gb']:.2f} GB against {b['rev']} "
                    f"({r['detections']} → {mine['detections']} detections)."
                )
    return lines


def memory_figure(res: dict) -> Path | None:
    """docs/wsi_memory.png: RSS over time of every slide run (this run and baselines)."""
    runs = [(res["machine"].get("commit", "this run"), r) for r in res["slides"]]
    runs += [(b["rev"], r) for b in (res.get("baselines") or {}).values() for r in b["slides"]]
    runs = [(name, r) for name, r in runs if r.get("rss_curve")]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in runs:
        t, gb = np.array(r["rss_curve"]).T
        base = name != res["machine"].get("commit", "this run")
        ax.plot(t / 60, gb, ls="--" if base else "-",
                label=f"{r['side']}², {name}{' (baseline)' if base else ''}")  # fmt: skip
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (GB)")
    ax.set_title("cellmaps predict on a slide: resident memory over time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(__file__).resolve().parents[1] / "docs" / "wsi_memory.png"
    save_figure(fig, path, dpi=90)
    return path


def report(res: dict) -> str:
    rows = res["slides"]
    lines = [
        "## Whole slides at bounded memory (`benchmarks/wsi_scale.py`)",
        "",
        machine_line(res["machine"]),
        f"Command: `python -m benchmarks.wsi_scale --sizes {res['command']['sizes']} "
        f"--tiles {res['command']['tiles']} --seed {res['command']['seed']}"
        + (f" --margin {res['command']['margin']}" if "margin" in res["command"] else "")
        + "`. Bundled default "
        "model, `cellmaps predict` in its own process per run; peak RSS from the kernel. "
        "Synthetic pyramidal BigTIFFs (tiled 512, zlib) tiled from monuseg/crchisto images "
        f"with a {100 * res['command'].get('margin', MARGIN):.0f} % glass margin on every "
        "side; no training.",
        "",
        "| slide | MP | tissue MP | tiles skipped | detections | wall (s) | MP/s | tissue MP/s "
        "| peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']}² | {r['megapixels']:.0f} | {r['tissue_megapixels']:.0f} | "
            f"{100 * r['skipped_tiles']:.0f} % | {r['detections']} | {r['seconds']:.0f} | "
            f"{r['mp_per_s']:.2f} | {r['tissue_mp_per_s']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    small, big = rows[0], rows[-1]
    rss_ratio = big["peak_rss_gb"] / small["peak_rss_gb"]
    thr = big["tissue_mp_per_s"] / small["tissue_mp_per_s"] - 1
    ok = lambda c: "met" if c else "not met"  # noqa: E731
    lines += [
        "",
        f"Targets: peak RSS at {big['side']}² = {big['peak_rss_gb']:.2f} GB (≤ 2 GB: "
        f"{ok(big['peak_rss_gb'] <= 2)}), {rss_ratio:.2f}× the {small['side']}² run (≤ 1.3×: "
        f"{ok(rss_ratio <= 1.3)}); throughput per tissue MP at {big['side']}² "
        f"{100 * thr:+.0f} % against the {small['side']}² run (within 10 %: "
        f"{ok(abs(thr) <= 0.1)}).",
    ]
    lines += baseline_lines(res)
    st = res.get("startup")
    if st:
        net = [r["tissue_megapixels"] / (r["seconds"] - st["seconds"]) for r in (small, big)]
        d = net[1] / net[0] - 1
        lines += [
            "",
            f"A 256² image through the same command takes {st['seconds']:.1f} s (median of 3: "
            "imports, model, output folder): a fixed cost that is "
            f"{100 * st['seconds'] / small['seconds']:.0f} % of the {small['side']}² run and "
            f"{100 * st['seconds'] / big['seconds']:.1f} % of the {big['side']}² run. Without "
            f"it, throughput per tissue MP is {net[0]:.3f} MP/s at {small['side']}² and "
            f"{net[1]:.3f} MP/s at {big['side']}² ({100 * d:+.0f} %, within 10 %: "
            f"{ok(abs(d) <= 0.1)}): the larger slide is "
            f"{'faster' if d > 0 else 'slower'} per tissue megapixel"
            + (
                ", so memory and time do not grow faster than the tissue (the share of "
                "tiles skipped counts tiles, not pixels, and tiles at the tissue's edge "
                "are run whole)."
                if d > 0
                else "."
            ),
        ]
    b = res.get("batch")
    if b and "serial_1_thread" in b:
        one = b["serial_1_thread"]["seconds"]
        lines += [
            "",
            f"Batch ablation ({b['tiles']} tiles of 1024², same images):",
            "",
            "| run | processes × torch threads | wall (s) | vs serial on 2 cores |",
            "|---|---|---|---|",
            f"| serial | 1 × 1 | {one:.0f} | {b['serial']['seconds'] / one:.2f}× |",
            f"| serial | 1 × 2 | {b['serial']['seconds']:.0f} | 1.00× |",
            f"| LocalCluster | 2 × 1 | {b['cluster_2_workers']['seconds']:.0f} | "
            f"{b['speedup']:.2f}× |",
            "",
            f"Two workers run the batch {one / b['cluster_2_workers']['seconds']:.2f}× faster "
            "than one process with one thread, but torch alone already turns the second core "
            f"into a {one / b['serial']['seconds']:.2f}× speed-up of the serial run. A 1.7× "
            "gain over that serial run would need the 2-core cluster to run "
            f"{1.7 * one / b['serial']['seconds']:.1f}× faster than one thread (measured: "
            f"{one / b['cluster_2_workers']['seconds']:.2f}×).",
        ]
    if b:
        lines += [
            "",
            f"Batch of {b['tiles']} PNG tiles of 1024²: serial (one process, torch on both "
            f"cores) {b['serial']['seconds']:.0f} s, LocalCluster of 2 worker processes × 1 "
            f"torch thread {b['cluster_2_workers']['seconds']:.0f} s: {b['speedup']:.2f}× "
            f"(target ≥ 1.7×: {ok(b['speedup'] >= 1.7)}); counts.csv identical: "
            f"{b['same_counts']}. Both runs use the same 2 cores, so the cluster can only gain "
            "what one process leaves idle (decoding, reading and writing run on one thread).",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="4096,16384,32768")
    ap.add_argument("--tiles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="where slides are written (default: a temporary folder)")
    ap.add_argument(
        "--margin",
        type=float,
        default=MARGIN,
        help=f"glass margin on every side, as a share of the side (default {MARGIN}; 0.05 "
        "makes a slide that is mostly tissue)",
    )
    ap.add_argument(
        "--rss-every",
        type=float,
        default=1.0,
        help="sample each run's RSS every this many seconds (0: peak only)",
    )
    ap.add_argument(
        "--figure",
        action="store_true",
        help="only draw docs/wsi_preview.png from the 16k² run kept in --workdir",
    )
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite BENCHMARKS.md from the results"
    )
    ap.add_argument(
        "--batch-ablation",
        action="store_true",
        help="only run the batch serially with 1 torch thread (tiles kept in --workdir) and "
        "add it to results/wsi_scale.json",
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="only run --sizes with the package of git revision REV and add it to "
        "results/wsi_scale.json as a baseline (what a change did to memory)",
    )
    ap.add_argument(
        "--startup-only",
        action="store_true",
        help="only measure the fixed cost of one run and add it to results/wsi_scale.json",
    )
    args = ap.parse_args()
    if args.figure:
        print(preview_figure(Path(args.workdir), margin=args.margin))
        return
    if args.report_only or args.batch_ablation or args.startup_only or args.baseline:
        res, _ = read_results("wsi_scale")  # add to the full run's results
        if args.baseline:
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                sizes = [int(s) for s in args.sizes.split(",")]
                base = baseline_case(args.baseline, sizes, Path(args.workdir or tmp), args.seed,
                                     args.margin)  # fmt: skip
            res.setdefault("baselines", {})[base["rev"]] = dict(base, machine=machine())
        if args.batch_ablation:
            res["batch"]["serial_1_thread"] = batch_one_thread(res["batch"]["tiles"],
                                                               Path(args.workdir))  # fmt: skip
        if args.startup_only:
            with tempfile.TemporaryDirectory() as tmp:
                res["startup"] = dict(startup_case(Path(tmp)), machine=machine())
        if not args.report_only:
            write_results("wsi_scale", res)
        memory_figure(res)
        update_benchmarks_md("wsi_scale", report(res))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(args.workdir or tmp)
        slides = []
        for side in sizes:
            print(f"slide {side}²", flush=True)
            slides.append(slide_case(side, work, args.seed, args.margin, args.rss_every))
            print({k: v for k, v in slides[-1].items() if k != "rss_curve"}, flush=True)
            # each slide kept as it finishes: an interrupted run leaves what it measured
            write_results("wsi_scale_partial", {"command": vars(args), "machine": machine(),
                                                "slides": slides})  # fmt: skip
        batch = batch_case(args.tiles, work, args.seed) if args.tiles and 4096 in sizes else None
        print(batch, flush=True)
        startup = startup_case(work)
        if 16384 in sizes:
            preview_figure(work, margin=args.margin)
    earlier = read_results("wsi_scale")[0] if (RESULTS / "wsi_scale.json").is_file() else {}
    if batch is None and args.tiles == 0:  # keep the batch measured by an earlier run
        batch = earlier.get("batch")
    res = {
        "command": {
            "sizes": args.sizes,
            "tiles": args.tiles,
            "seed": args.seed,
            "margin": args.margin,
        },
        "machine": machine(),
        "slides": slides,
        "batch": batch,
        "startup": startup,
        "baselines": earlier.get("baselines", {}),
    }
    write_results("wsi_scale", res)
    (RESULTS / "wsi_scale_partial.json").unlink(missing_ok=True)
    memory_figure(res)
    update_benchmarks_md("wsi_scale", report(res))


if __name__ == "__main__":
    main()
