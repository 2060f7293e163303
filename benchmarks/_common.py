"""Shared helpers for benchmark scripts: machine description, results JSON, BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
SHARED_DATA = Path(os.environ.get("CELLMAPS_SHARED_DATA", REPO.parent / "shared" / "data"))

sys.path.insert(0, str(REPO / "src"))

from cellmaps.io._atomic import atomic_path, write_text_atomic  # noqa: E402
from cellmaps.io.dataset import link_dataset  # noqa: E402, F401  (re-exported for the benchmarks)
from cellmaps.metrics.evaluate import json_ready  # noqa: E402


def machine() -> dict:
    """CPU model, usable cores, Python and library versions, and the git commit (and dirty
    flag) of the code this process runs, read when it started, not when it ends."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import scipy

    from cellmaps.provenance import code_version

    code = code_version()  # read when cellmaps.training was imported: the run's start
    commit = (code["commit"] or "")[:7]
    return {
        "cpu": cpu,
        "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "commit": commit,
        "dirty": code["dirty"],
        "source_hash": code["source_hash"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def median_time(fn, repeats: int, warmup: int = 0):
    """Median wall time of ``fn()`` over ``repeats`` runs (after ``warmup`` untimed runs),
    and the last result."""
    import time

    import numpy as np

    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def write_results(name: str, payload: dict) -> Path:
    """Write results/<name>.json (atomically) and return its path."""
    path = RESULTS / f"{name}.json"
    write_text_atomic(path, json.dumps(json_ready(payload), indent=1) + "\n")
    return path


def update_benchmarks_md(section: str, markdown: str) -> None:
    """Replace (or append) the section between <!-- BEGIN section --> and <!-- END section -->."""
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    write_text_atomic(BENCHMARKS_MD, text)


def machine_line(m: dict) -> str:
    dirty = " (+ uncommitted changes)" if m.get("dirty") else ""
    return (
        f"Machine: {m['cpu']}, {m['cores_usable']} usable cores; Python {m['python']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}; commit {m['commit']}{dirty}; {m['date']}."
    )


def cached_train(
    recipe: dict,
    sources: list[tuple[str, str | None, float]],
    val_sources: list[tuple[str, str | None]] | None,
    work: Path,
    name: str,
    progress: bool = False,
    **train_options,
):
    """Train a recipe, or reuse the model an earlier run trained from the same recipe, data
    and code version (:func:`cellmaps.provenance.cache_key`; the file name carries the key
    and the model file records it). A killed run resumes from its checkpoint. The model's
    ``path`` attribute says where it is."""
    from cellmaps.model import Model
    from cellmaps.provenance import cache_key
    from cellmaps.training import train

    data = {"sources": sources, "val": val_sources, **train_options}
    key = cache_key(recipe, data)
    out = Path(work) / f"{name}-{key}.safetensors"
    if out.is_file():
        model = Model.load(out)
        if model.training.get("cache_key") == key:
            model.path = out
            return model
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = out.with_name(out.name + ".ckpt")
    model = train(
        recipe, sources, out, val_sources, resume=ckpt.is_file(), progress=progress, **train_options
    )
    model.training["cache_key"] = key
    model.save(out)
    model.path = out  # where it is cached (not stored in the file)
    return model


def read_results(name: str) -> tuple[dict, object]:
    """results/<name>.json and its recorded command-line arguments (as a namespace), for a
    script's --report-only mode."""
    from types import SimpleNamespace

    saved = json.loads((RESULTS / f"{name}.json").read_text())
    return saved, SimpleNamespace(**{**saved["command"], "report_only": False})


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def training_log(model_path: Path) -> list[dict]:
    """The rows of a trained model's ``<stem>.log.csv`` (iteration, lr, losses, val_*)."""
    import csv

    path = Path(model_path).with_name(Path(model_path).stem + ".log.csv")
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [
            {k: float(v) if v not in ("", None) else None for k, v in r.items()}
            for r in csv.DictReader(fh)
        ]


def save_training_curves(model_path: Path, png: Path) -> list[dict]:
    """Copy a run's loss / validation / learning-rate curves into ``png`` (docs/) from its
    log, and return the log rows (for the report)."""
    from cellmaps.training.fit import plot_loss_curve

    rows = training_log(model_path)
    if rows:
        plot_loss_curve(rows, png)
    return rows


def lr_summary(rows: list[dict]) -> str:
    """'LR 0.01 → 0.0001 (dropped 3 times)' from a run's log rows, computed, never typed."""
    if not rows:
        return "no log"
    lrs = [r["lr"] for r in rows]
    drops = sum(1 for a, b in zip(lrs, lrs[1:], strict=False) if b < a * 0.999)
    return f"LR {lrs[0]:.3g} → {lrs[-1]:.3g} at the logged validations ({drops} decreases)"


def train_mosaic(name: str, side: int = 2048):
    """RGB mosaic of a shared dataset's train images side by side (repeated if needed),
    cut to side × side: a large image of that data for speed benchmarks."""
    import numpy as np

    from cellmaps.io import Dataset

    ds = Dataset(SHARED_DATA / name)
    ids = ds.ids("train")
    n = int(np.ceil(side / ds.image(ids[0]).shape[0]))
    tiles = [ds.image(ids[k % len(ids)])[..., :3] for k in range(n * n)]
    rows = [np.concatenate(tiles[r * n : (r + 1) * n], 1) for r in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:side, :side])


def noise_image(size: int, seed: int, kind: str = "uniform") -> np.ndarray:
    """RGB noise: uniform over 0..255, or Gaussian (mean 128, sd 40, clipped)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
    return np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)


def empty_images(size: int, seed: int) -> dict[str, np.ndarray]:
    """RGB images with nothing to detect: black, white, flat grey, uniform and Gaussian
    noise."""
    return {
        "black": np.zeros((size, size, 3), np.uint8),
        "white": np.full((size, size, 3), 255, np.uint8),
        "grey": np.full((size, size, 3), 128, np.uint8),
        "noise": noise_image(size, seed),
        "gaussian noise": noise_image(size, seed, "gaussian"),
    }
