"""Side-by-side speed of cellmaps, StarDist 2D and Cellpose 3 on the same H&E images, end
to end (read → detections / masks), interleaved in one run.

    bash benchmarks/peers/setup.sh          # once: each peer in its own virtual environment
    python -m benchmarks.peers_speed [--sizes 512,1024,2048,4096] [--repeats 3] [--threads 2]

Images: mosaics of monuseg train tiles (and their masks, for the peers' post-processing)
cut to each size, written as PNG (labels as TIFF) to a temporary folder. Each tool runs in
a persistent worker process in its own environment (benchmarks/peers/*_worker.py) with the
same number of threads; one warm-up round, then ``--repeats`` rounds, each running every
size on every tool in turn; the median is reported. The peers run with random weights
(nothing is downloaded) and their post-processing on maps made from the truth labels, as
their own training code makes them (StarDist: ``edt_prob`` / ``star_dist``, grid 2×2;
Cellpose: ``masks_to_flows``); cellmaps runs its bundled default model on its own maps.
Peers whose environment is missing are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    machine,
    machine_line,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset

PEERS = REPO / "benchmarks" / "peers"
# cellmaps like for like with the peers: fp32, the net on the image's own pixels
LIKE_FOR_LIKE = "cellmaps fp32, scale 1"
# name → (python, worker, extra environment)
TOOLS = {
    "cellmaps": (Path(sys.executable), PEERS / "cellmaps_worker.py", {}),
    LIKE_FOR_LIKE: (
        Path(sys.executable), PEERS / "cellmaps_worker.py",
        {"CELLMAPS_WORKER_MODE": "fp32-scale-1"},
    ),
    "StarDist 2D": (PEERS / "stardist" / ".venv" / "bin" / "python", PEERS / "stardist_worker.py",
                    {}),
    "Cellpose 3": (PEERS / "cellpose" / ".venv" / "bin" / "python", PEERS / "cellpose_worker.py",
                   {}),
}  # fmt: skip
#: a model file timed beside the bundled one (--candidate), like for like
CANDIDATE = "cellmaps candidate, fp32, scale 1"
OURS = ("cellmaps", LIKE_FOR_LIKE, CANDIDATE)
TARGETS = {"StarDist 2D": 3.0, "Cellpose 3": 30.0}  # cellmaps at least this much faster
TARGET_SIZE = 2048
FIGURE = REPO / "docs" / "peers_speed.png"


def write_mosaics(sizes: list[int], folder: Path) -> dict[int, tuple[Path, Path]]:
    """RGB PNG and label TIFF of monuseg train tiles side by side, for each size."""
    ds = Dataset(SHARED_DATA / "monuseg")
    ids = ds.ids("train")
    side = max(sizes)
    tile = ds.image(ids[0]).shape[0]
    n = int(np.ceil(side / tile))
    img = np.zeros((n * tile, n * tile, 3), np.uint8)
    lab = np.zeros((n * tile, n * tile), np.int32)
    offset = 0
    for k in range(n * n):
        i = ids[k % len(ids)]
        r, c = (k // n) * tile, (k % n) * tile
        im, m = ds.image(i)[..., :3], ds.mask(i).astype(np.int32)
        img[r : r + im.shape[0], c : c + im.shape[1]] = im
        lab[r : r + m.shape[0], c : c + m.shape[1]] = np.where(m > 0, m + offset, 0)
        offset += int(m.max())
    out = {}
    for s in sizes:
        ip, lp = folder / f"mosaic_{s}.png", folder / f"mosaic_{s}_labels.tif"
        Image.fromarray(img[:s, :s]).save(ip)
        tifffile.imwrite(lp, lab[:s, :s])
        out[s] = (ip, lp)
    return out


class Worker:
    """A tool's timing worker: one JSON request per line in, one reply per line out."""

    def __init__(self, name: str, python: Path, script: Path, threads: int, log: Path,
                 extra_env: dict | None = None) -> None:  # fmt: skip
        env = dict(os.environ)
        env.update(
            PEER_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
            MKL_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
            PYTHONPATH=str(REPO / "src") if name in OURS else "", **(extra_env or {}),
        )  # fmt: skip
        self.name = name
        self.log = open(log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [str(python), str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, env=env, cwd=str(PEERS),
        )  # fmt: skip
        self.info = self._reply().get("info", {})  # {"ready": true, "info": {...}}

    def _reply(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} worker stopped; see {self.log.name}")
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # a library printed to stdout

    def run(self, image: Path, truth: Path) -> dict:
        self.proc.stdin.write(json.dumps({"image": str(image), "truth": str(truth)}) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def start_workers(
    threads: int, folder: Path, candidate: str | None = None
) -> tuple[dict[str, Worker], list[str]]:
    workers, skipped = {}, []
    tools = dict(TOOLS)
    if candidate:
        tools[CANDIDATE] = (Path(sys.executable), PEERS / "cellmaps_worker.py",
                            {"CELLMAPS_WORKER_MODE": "fp32-scale-1",
                             "CELLMAPS_WORKER_MODEL": str(Path(candidate).resolve())})  # fmt: skip
    for k, (name, (python, script, extra_env)) in enumerate(tools.items()):
        if not python.exists():
            skipped.append(name)
            print(f"{name}: no environment at {python.parent.parent} "
                  "(run `bash benchmarks/peers/setup.sh`); skipped")  # fmt: skip
            continue
        print(f"starting {name} …", flush=True)
        workers[name] = Worker(name, python, script, threads, folder / f"worker{k}.log",
                               extra_env)  # fmt: skip
    return workers, skipped


def median_stages(runs: list[dict]) -> dict:
    stages = sorted({k for r in runs for k in r["stages"]})
    extra = sorted({k for r in runs for k in r.get("extra", {})})
    return {
        "total_s": float(np.median([r["total_s"] for r in runs])),
        "stages": {k: float(np.median([r["stages"].get(k, 0.0) for r in runs])) for k in stages},
        "extra": {k: float(np.median([r["extra"].get(k, 0.0) for r in runs])) for k in extra},
        "count": runs[-1]["count"],
        "runs_s": [r["total_s"] for r in runs],
    }


def figure(results: dict, sizes: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, per_size in results.items():
        xs = [s for s in sizes if str(s) in per_size]
        ax.plot([s * s / 1e6 for s in xs], [per_size[str(s)]["total_s"] for s in xs], "o-",
                label=name)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("image size (Mpx)")
    ax.set_ylabel("end-to-end time per image (s)")
    ax.set_title("Same H&E images, same threads, one run (median)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, FIGURE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from the JSON")
    ap.add_argument("--candidate", help="also time this model file (fp32, scale 1): a retrained "
                    "model that was not bundled")  # fmt: skip
    args = ap.parse_args()
    if args.report_only:
        saved = json.loads((REPO / "results" / "peers_speed.json").read_text())
        args.sizes = ",".join(map(str, saved["sizes"]))
        args.repeats, args.threads = saved["repeats"], saved["threads"]
        args.candidate = saved.get("candidate")
        ratios = peer_ratios(saved["results"], saved["sizes"])
        text = section(saved["results"], ratios, saved["sizes"], args, saved["machine"],
                       saved["skipped"], saved.get("infos"))  # fmt: skip
        update_benchmarks_md("peers_speed", text)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = write_mosaics(sizes, folder)
        workers, skipped = start_workers(args.threads, folder, args.candidate)
        runs: dict[str, dict[int, list[dict]]] = {n: {s: [] for s in sizes} for n in workers}
        try:
            for rnd in range(args.repeats + 1):  # round 0 is the warm-up
                for s in sizes:
                    for name, w in workers.items():
                        reply = w.run(*images[s])
                        print(f"round {rnd} {s}² {name}: {reply['total_s']:.2f} s, "
                              f"{reply['count']} objects", flush=True)  # fmt: skip
                        if rnd > 0:
                            runs[name][s].append(reply)
        finally:
            for w in workers.values():
                w.close()
    results = {n: {str(s): median_stages(r) for s, r in per.items()} for n, per in runs.items()}
    infos = {n: w.info for n, w in workers.items()}
    mach = machine()
    ratios = peer_ratios(results, sizes)
    write_results("peers_speed", {"machine": mach, "sizes": sizes, "repeats": args.repeats,
                                  "threads": args.threads, "results": results, "infos": infos,
                                  "ratios": ratios, "skipped": skipped,
                                  "candidate": args.candidate})  # fmt: skip
    figure(results, sizes)
    update_benchmarks_md("peers_speed",
                         section(results, ratios, sizes, args, mach, skipped, infos))  # fmt: skip


def peer_ratios(results: dict, sizes: list[int]) -> dict:
    """peer → our row → size → peer's time / ours (end to end, medians)."""
    return {
        peer: {
            ours: {
                s: results[peer][str(s)]["total_s"] / results[ours][str(s)]["total_s"]
                for s in sizes
            }  # fmt: skip
            for ours in OURS
            if ours in results
        }
        for peer in results
        if peer not in OURS
    }


def limits(results: dict, ratios: dict) -> list[str]:
    """What limits cellmaps (fp32, scale 1: like for like) against a target not met, from
    the stage times at 2048²; computed, not typed."""
    size = str(TARGET_SIZE)
    if size not in results.get(LIKE_FOR_LIKE, {}):
        return []
    ours = results[LIKE_FOR_LIKE][size]
    net = ours["stages"].get("net", 0.0)
    out = []
    for peer, target in TARGETS.items():
        if peer not in results or ratios[peer][LIKE_FOR_LIKE].get(TARGET_SIZE, np.inf) >= target:
            continue
        need = results[peer][size]["total_s"] / target
        peer_net = results[peer][size]["stages"].get("net", 0.0)
        faster = (f"{peer_net / net:.2f}× faster than" if net < peer_net
                  else f"{net / peer_net:.2f}× slower than")  # fmt: skip
        out += [
            f"What limits it against {peer}: ≥ {target:.0f}× needs cellmaps at ≤ {need:.2f} s "
            f"per {TARGET_SIZE}² image; it takes {ours['total_s']:.2f} s, of which the net "
            f"{net:.2f} s ({net / ours['total_s']:.0%}) and everything else "
            f"{ours['total_s'] - net:.2f} s. Its net is {faster} {peer}'s ({peer_net:.2f} s); "
            f"even a free net would leave {ours['total_s'] - net:.2f} s."
            + candidate_line(results, peer, target),
            "",
        ]
    return out


def candidate_line(results: dict, peer: str, target: float) -> str:
    """What the candidate model (--candidate, e.g. heads at output stride 2) gives against
    ``peer`` at the target size, when it was timed."""
    size = str(TARGET_SIZE)
    cand = results.get(CANDIDATE, {}).get(size)
    if not cand:
        return ""
    ratio = results[peer][size]["total_s"] / cand["total_s"]
    return (
        f" The candidate model timed beside it ({CANDIDATE}) takes {cand['total_s']:.2f} s "
        f"(net {cand['stages'].get('net', 0.0):.2f} s): {ratio:.2f}× {peer}, target "
        + ("met" if ratio >= target else "not met")
        + " with it."
    )


def setup_lines(infos: dict) -> list[str]:
    """How each tool ran (what its worker reported at start)."""
    out = ["How each tool ran (reported by its worker):", ""]
    for name, info in infos.items():
        if info:
            out.append(f"- {name}: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    return out + [""]


def reconcile_lines(results: dict) -> list[str]:
    """The two settings that made earlier runs of this benchmark disagree with a plain
    ``model.predict`` timing, measured in this run."""
    size = str(TARGET_SIZE)
    out = []
    sd = results.get("StarDist 2D", {}).get(size)
    if sd and sd.get("extra"):
        ((what, tiled),) = sd["extra"].items()
        whole = sd["stages"]["net"]
        out.append(
            f"- StarDist's net on the whole {size}² image (`model.predict(x)`, what "
            f"`predict_instances` does by default) {whole:.2f} s; with {what} {tiled:.2f} s "
            f"({tiled / whole:.2f}×). Runs before 2026-12-07 timed the guessed tiles."
        )
    ours, lfl = results.get("cellmaps", {}).get(size), results.get(LIKE_FOR_LIKE, {}).get(size)
    if ours and lfl:
        out.append(
            f"- cellmaps as a user runs it (scale estimated from the image) {ours['total_s']:.2f} s "
            f"({ours['count']} objects) vs the object size given (scale 1, the net on the "
            f"image's own pixels, as the peers) {lfl['total_s']:.2f} s ({lfl['count']} objects)."
        )
    return ["Reconciling with a plain `model.predict` timing:", "", *out, ""] if out else []


def section(results, ratios, sizes, args, mach, skipped, infos=None) -> str:
    lines = [
        "## Speed side by side: cellmaps, StarDist 2D, Cellpose 3 (`benchmarks/peers_speed.py`)",
        "",
        f"`bash benchmarks/peers/setup.sh && python -m benchmarks.peers_speed --sizes "
        f"{','.join(map(str, sizes))} --repeats {args.repeats} --threads {args.threads}"
        + (f" --candidate {args.candidate}" if getattr(args, "candidate", None) else "")
        + "`. "
        f"{machine_line(mach)} Mosaics of monuseg train tiles; each tool in its own process "
        f"and environment with {args.threads} threads; one warm-up round, then the median of "
        f"{args.repeats} interleaved rounds, end to end per image (read → detections / "
        "masks). Peers with random weights, their post-processing on maps made from the "
        "truth labels; cellmaps with its bundled default model on its own maps, as a user "
        f"runs it and like for like with the peers (`{LIKE_FOR_LIKE}`: fp32, object size "
        "given as the model's training radius, so the net sees the image's own pixels).",
        "",
        "| tool | " + " | ".join(f"{s}² (s)" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name, per in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{per[str(s)]['total_s']:.2f}" for s in sizes) + " |"
        )
    lines += ["", f"Stages at {TARGET_SIZE}² (median s):", ""]
    for name, per in results.items():
        if str(TARGET_SIZE) not in per:
            continue
        r = per[str(TARGET_SIZE)]
        extra = "".join(f"; beside it: {k} {v:.2f}" for k, v in r.get("extra", {}).items())
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
                     + f"; {r['count']} objects{extra}")  # fmt: skip
    lines.append("")
    lines += reconcile_lines(results)
    lines += setup_lines(infos or {})
    for peer, per_ours in ratios.items():
        for ours, r in per_ours.items():
            line = f"{peer} / {ours}: " + ", ".join(f"{r[s]:.2f}× at {s}²" for s in sizes)
            if peer in TARGETS and TARGET_SIZE in r and ours == LIKE_FOR_LIKE:
                met = "met" if r[TARGET_SIZE] >= TARGETS[peer] else "not met"
                line += f". Target ≥ {TARGETS[peer]:.0f}× at {TARGET_SIZE}² in fp32: **{met}**."
            lines += [line, ""]
    lines += limits(results, ratios)
    if skipped:
        lines.append(f"Skipped (no environment): {', '.join(skipped)}.")
    lines.append("![speed](docs/peers_speed.png)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
