"""Batch runs over many images (``cellmaps predict`` / ``ki67``): one output folder per run,
resumable, never mixing two runs.

An output folder records its run in ``cellmaps-run.json``: the model's fingerprint (a hash of
its weights and settings) and the options that change results. A folder holding another
run's outputs (or files cellmaps did not write) is refused unless ``overwrite``, which first
removes the previous outputs; the same run continues with ``resume``, skipping images whose
outputs are all there (each output is written atomically, so a file that exists is whole).
Stale temporary files of an interrupted run are removed when the next run starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import remove_stale_temporaries, write_text_atomic

RUN_FILE = "cellmaps-run.json"
SKIPPED_FILE = "skipped.csv"
# what a run writes; --overwrite removes exactly these (never other files of the folder)
OUTPUT_FOLDERS = ("points", "geojson", "overlays", "masks")
OUTPUT_FILES = ("counts.csv", "ki67.csv", "slides.json", "regions.csv", SKIPPED_FILE, RUN_FILE)


class BatchInterrupted(Exception):
    """Ctrl-C stopped a batch run between two images; every finished image is written."""

    def __init__(self, done: int, total: int, out: Path) -> None:
        self.done, self.total, self.out = done, total, out
        super().__init__(
            f"stopped after {done} of {total} image(s); outputs so far are in {out} — run "
            "the same command with --resume to continue"
        )


def image_outputs(out: Path, image_id: str, masks: bool) -> list[Path]:
    """The files one image's prediction consists of (in the order they are written)."""
    files = [out / "masks" / f"{image_id}.tif"] if masks else []
    return files + [
        out / "points" / f"{image_id}.csv",
        out / "geojson" / f"{image_id}.geojson",
        out / "overlays" / f"{image_id}.png",
    ]


def is_complete(out: Path, image_id: str, masks: bool) -> bool:
    return all(p.is_file() for p in image_outputs(out, image_id, masks))


def _read_run(out: Path) -> dict | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CellmapsInputError(
            f"unreadable run record ({exc}); pass --overwrite to start the folder again", path
        ) from exc


def _folder_is_empty(out: Path) -> bool:
    return not any(out.iterdir())


def remove_previous_outputs(out: Path) -> None:
    """Delete what a previous run wrote (``OUTPUT_FOLDERS`` and ``OUTPUT_FILES`` only)."""
    for name in OUTPUT_FOLDERS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)


def start_run(out: str | os.PathLike, record: dict, overwrite: bool, resume: bool) -> Path:
    """Make ``out`` ready for the run described by ``record`` and write its run record.

    Raises
    ------
    CellmapsInputError
        If ``out`` is a file or cannot be written; if it holds another run's outputs or
        foreign files and ``overwrite`` is not set; if it holds this run's outputs and
        neither ``resume`` nor ``overwrite`` is set.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CellmapsInputError("--out must be a folder, but a file is there", out)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise CellmapsInputError("cannot write into the output folder", out)
    if out.is_dir() and not _folder_is_empty(out) and not overwrite:
        previous = _read_run(out)
        if previous is None:
            raise CellmapsInputError(
                "the output folder is not empty and was not written by a cellmaps run; "
                "choose a new folder or pass --overwrite (removes points/, geojson/, "
                "overlays/, masks/ and the tables only)",
                out,
            )
        if previous != record:
            changed = sorted(
                k for k in set(previous) | set(record) if previous.get(k) != record.get(k)
            )
            raise CellmapsInputError(
                "the output folder holds the outputs of another run (different "
                f"{', '.join(changed)}); choose a new folder or pass --overwrite",
                out,
            )
        if not resume:
            raise CellmapsInputError(
                "the output folder holds outputs of this run already; pass --resume to "
                "continue it (finished images are skipped) or --overwrite to redo it",
                out,
            )
    if out.is_dir() and overwrite:
        remove_previous_outputs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CellmapsInputError(f"cannot create the output folder ({exc.strerror})", out) from exc
    for name in OUTPUT_FOLDERS:
        remove_stale_temporaries(out / name)
    remove_stale_temporaries(out)
    write_text_atomic(out / RUN_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return out


@contextlib.contextmanager
def stop_between_images() -> Iterator[threading.Event]:
    """While the body runs, the first Ctrl-C only asks to stop (the event is set and the
    loop finishes its current image); a second Ctrl-C interrupts at once. Outside the
    main thread (where signals cannot be caught) the event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def ask_to_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after the current image (Ctrl-C again to stop now)", flush=True)

    previous = signal.signal(signal.SIGINT, ask_to_stop)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
