"""Batch runs over many images (``cellmaps predict`` / ``ki67``): one output folder per run,
resumable, never mixing two runs, never touching a file cellmaps did not write.

An output folder records its run in ``cellmaps-run.json``: the model's fingerprint (a hash of
its weights and settings), the options that change results and, under ``outputs``, every
file the run may write (relative paths, listed before the first image runs). Files in the
output folders (points/, geojson/, overlays/, masks/) or named like a run's tables that no
run record lists (a dataset's ground truth, say) are refused *whatever the flags*: cellmaps
never replaces or deletes them. A folder holding another run's outputs is refused unless
``overwrite``, which removes exactly the files that run recorded; the same run continues with
``resume``, skipping images whose outputs are all there and whose input file is unchanged
(each finished image's size and SHA-256 are appended to ``cellmaps-inputs.jsonl``; an image
changed since is predicted again). Each output is written atomically, so a file that exists
is whole. Stale temporary files of an interrupted run are removed when the next run starts.
A lock file (``.cellmaps-run.lock``: host, pid) keeps a second run out of a folder while
one is writing there; a lock whose process has ended on this host is stale and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import is_temporary_name, remove_stale_temporaries, write_text_atomic

RUN_FILE = "cellmaps-run.json"
INPUTS_FILE = "cellmaps-inputs.jsonl"  # one JSON line per finished image: id, size, sha256
LOCK_FILE = ".cellmaps-run.lock"
SKIPPED_FILE = "skipped.csv"
# the folders and tables a run writes; --overwrite removes only the files of these that the
# previous run recorded as its own (never other files of the folder)
OUTPUT_FOLDERS = ("points", "geojson", "overlays", "masks", "measurements")
OUTPUT_FILES = ("counts.csv", "ki67.csv", "slides.json", "regions.csv", SKIPPED_FILE, INPUTS_FILE,
                "report.html")  # fmt: skip
OWNED_KEY = "outputs"  # the run record's list of the files the run may write


class BatchInterrupted(Exception):
    """Ctrl-C stopped a batch run between two images; every finished image is written."""

    def __init__(self, done: int, total: int, out: Path) -> None:
        self.done, self.total, self.out = done, total, out
        super().__init__(
            f"stopped after {done} of {total} image(s); outputs so far are in {out} — run "
            "the same command with --resume to continue"
        )


def image_outputs(out: Path, image_id: str, masks: bool, parquet: bool = False) -> list[Path]:
    """The files one image's prediction consists of (in the order they are written)."""
    files = [out / "masks" / f"{image_id}.tif"] if masks else []
    files += [out / "points" / f"{image_id}.parquet"] if parquet else []
    return files + [
        out / "points" / f"{image_id}.csv",
        out / "geojson" / f"{image_id}.geojson",
        out / "overlays" / f"{image_id}.png",
    ]


def measurement_outputs(out: Path, image_id: str, parquet: bool = False) -> list[Path]:
    """The per-object measurement files of an image (slides read by region have none yet,
    so they are not part of :func:`is_complete`; written before the points, they exist
    whenever an image's outputs are complete)."""
    files = [out / "measurements" / f"{image_id}.parquet"] if parquet else []
    return files + [out / "measurements" / f"{image_id}.csv"]


def planned_outputs(out: Path, image_ids: Iterable[str], masks: bool, parquet: bool) -> list[str]:
    """Every file (relative to ``out``, POSIX style) a run over ``image_ids`` may write."""
    files = {
        p.relative_to(out).as_posix()
        for i in image_ids
        for p in image_outputs(out, i, masks, parquet) + measurement_outputs(out, i, parquet)
    }
    return sorted(files | set(OUTPUT_FILES))


def is_complete(out: Path, image_id: str, masks: bool) -> bool:
    return all(p.is_file() for p in image_outputs(out, image_id, masks))


def input_fingerprint(path: Path) -> dict:
    """Size in bytes and SHA-256 of an input file (what tells a changed image on --resume)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def record_finished_input(out: Path, image_id: str, fingerprint: dict) -> None:
    """Append one finished image's input fingerprint to ``INPUTS_FILE`` (a line per image, so
    a run of N images writes O(N); a line cut by a kill is ignored when read)."""
    line = json.dumps({"id": image_id, **fingerprint}, sort_keys=True)
    with open(out / INPUTS_FILE, "a", encoding="utf-8") as fh:
        fh.write("\n" + line + "\n")  # a leading newline ends a line a kill cut short


def finished_inputs(out: Path) -> dict[str, dict]:
    """id → {size, sha256} of the images this run finished (the last line per id wins)."""
    path = out / INPUTS_FILE
    if not path.is_file():
        return {}
    seen: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # empty, or cut short by a kill
        if isinstance(row, dict) and "id" in row:
            seen[str(row.pop("id"))] = row
    return seen


def _read_run(out: Path) -> dict | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CellmapsInputError(
            f"unreadable run record ({exc}): cellmaps cannot tell which files of the folder "
            "it wrote; choose a new folder (or delete the folder's outputs yourself)",
            path,
        ) from exc
    if not isinstance(record, dict):
        raise CellmapsInputError("unreadable run record (not a JSON object)", path)
    return record


def _is_bookkeeping(name: str) -> bool:
    """The run record, the lock and temporary files: never anyone's data."""
    return name in (RUN_FILE, LOCK_FILE) or is_temporary_name(name)


def _folder_is_empty(out: Path) -> bool:
    return not any(not _is_bookkeeping(p.name) for p in out.iterdir())


def _candidate_outputs(out: Path) -> list[str]:
    """Files present where a run writes (the output folders, the table names)."""
    found = [
        p.relative_to(out).as_posix()
        for name in OUTPUT_FOLDERS
        if (out / name).is_dir()
        for p in sorted((out / name).rglob("*"))
        if not p.is_dir() and not _is_bookkeeping(p.name)
    ]
    return found + [name for name in OUTPUT_FILES if (out / name).exists()]


def foreign_outputs(out: Path, previous: dict | None) -> list[str]:
    """Files in the output folders or named like a run's tables that no cellmaps run recorded
    as its own: annotations, ground truth, a user's own tables. Never replaced or deleted."""
    owned = set((previous or {}).get(OWNED_KEY) or [])
    return [f for f in _candidate_outputs(out) if f not in owned]


def _refuse_foreign(out: Path, foreign: list[str], previous: dict | None) -> None:
    shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
    older = (
        " (its run record lists no files: it was written by an older cellmaps)"
        if previous is not None and OWNED_KEY not in previous
        else ""
    )
    raise CellmapsInputError(
        f"the output folder holds files no cellmaps run wrote{older}: {shown}; they may be "
        "annotations, so cellmaps will not replace or delete them, with or without "
        "--overwrite; choose a new folder for the outputs",
        out,
    )


def remove_previous_outputs(out: Path, previous: dict) -> None:
    """Delete exactly the files ``previous`` (a run record) lists as its own, then the
    output folders that are left empty."""
    for rel in previous.get(OWNED_KEY) or []:
        path = out / rel
        if path.resolve().parent.is_relative_to(out.resolve()) and path.is_file():
            path.unlink()
    for name in OUTPUT_FOLDERS:
        with contextlib.suppress(OSError):
            (out / name).rmdir()  # only when empty


def _comparable(record: dict | None) -> dict:
    """The part of a run record that says what the run computes (not which files it has)."""
    return {k: v for k, v in (record or {}).items() if k != OWNED_KEY}


def start_run(
    out: str | os.PathLike,
    record: dict,
    overwrite: bool,
    resume: bool,
    outputs: list[str] = (),
) -> Path:
    """Make ``out`` ready for the run described by ``record`` and write its run record,
    listing ``outputs`` (relative paths, :func:`planned_outputs`) as the run's own files.
    Call it holding :func:`run_lock`.

    Raises
    ------
    CellmapsInputError
        If ``out`` is a file or cannot be written; if it holds files no cellmaps run
        recorded where a run writes (whatever ``overwrite`` and ``resume`` say); if it
        holds another run's outputs or foreign files and ``overwrite`` is not set; if it
        holds this run's outputs and neither ``resume`` nor ``overwrite`` is set.
    """
    out = Path(out)
    check_output_folder(out)
    previous = _read_run(out) if out.is_dir() else None
    if out.is_dir():
        foreign = foreign_outputs(out, previous)
        if foreign:
            _refuse_foreign(out, foreign, previous)
    if out.is_dir() and not _folder_is_empty(out) and not overwrite:
        if previous is None:
            raise CellmapsInputError(
                "the output folder is not empty and was not written by a cellmaps run; "
                "choose a new folder or pass --overwrite (removes only files a cellmaps run "
                "recorded as its own; the folder's other files are kept)",
                out,
            )
        if _comparable(previous) != _comparable(record):
            changed = sorted(
                k
                for k in set(_comparable(previous)) | set(_comparable(record))
                if previous.get(k) != record.get(k)
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
    owned = set(outputs)
    if previous is not None and overwrite:
        remove_previous_outputs(out, previous)
    elif previous is not None:  # resuming: the files of the earlier part stay this run's
        owned |= set(previous.get(OWNED_KEY) or [])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CellmapsInputError(f"cannot create the output folder ({exc.strerror})", out) from exc
    for name in OUTPUT_FOLDERS:
        remove_stale_temporaries(out / name)
    remove_stale_temporaries(out)
    text = json.dumps({**record, OWNED_KEY: sorted(owned)}, indent=1, sort_keys=True) + "\n"
    write_text_atomic(out / RUN_FILE, text)
    return out


@contextlib.contextmanager
def undone_if_nothing_written(out: str | os.PathLike) -> Iterator[None]:
    """Run the body; if it fails before the run wrote any output (no file in the output
    folders, no table) and the folder held no run record before, take back what starting
    the run made — its record, the empty output folders, and the folder itself when it did
    not exist — so the next run into it starts as if this one had not (e.g. ``--masks`` with
    a model that cannot outline). A run that wrote an image keeps its files and record:
    ``--resume`` continues it."""
    out = Path(out)
    existed, had_record = out.exists(), (out / RUN_FILE).is_file()
    try:
        yield
    except BaseException:
        if not had_record and out.is_dir() and not _candidate_outputs(out):
            (out / RUN_FILE).unlink(missing_ok=True)
            for name in OUTPUT_FOLDERS:
                remove_stale_temporaries(out / name)
                with contextlib.suppress(OSError):
                    (out / name).rmdir()  # only when empty
            if not existed:
                remove_stale_temporaries(out)
                with contextlib.suppress(OSError):
                    out.rmdir()  # only when empty
        raise


def check_output_folder(out: Path) -> None:
    """Refuse an ``out`` that is a file or a folder cellmaps cannot write into."""
    if out.exists() and not out.is_dir():
        raise CellmapsInputError("--out must be a folder, but a file is there", out)
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise CellmapsInputError("cannot write into the output folder", out)


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read_lock(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # being written, or damaged


def _lock_is_stale(holder: dict) -> bool:
    """A lock is stale when it names this host and a process that has ended."""
    pid = holder.get("pid")
    return (
        holder.get("host") == socket.gethostname()
        and isinstance(pid, int)
        and not _process_is_alive(pid)
    )


@contextlib.contextmanager
def run_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold ``out/.cellmaps-run.lock`` while the body runs (the folder is created if needed).

    Written here because a lock must work on any file system without a daemon: the lock file
    is created with O_EXCL (atomic on local and NFSv3+ file systems) and holds the host and
    pid; one whose process ended on this host is removed and taken over (a run killed with
    SIGKILL leaves it behind).

    Raises
    ------
    CellmapsInputError
        If another live run holds the lock (naming its host, pid and start time).
    """
    out = Path(out)
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CellmapsInputError(f"cannot create the output folder ({exc.strerror})", out) from exc
    path = out / LOCK_FILE
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if _lock_is_stale(holder):
                path.unlink(missing_ok=True)
                continue
            if not holder:  # being written this instant: look again
                time.sleep(0.05)
                holder = _read_lock(path)
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                if holder
                else "unknown process"
            )
            raise CellmapsInputError(
                f"another cellmaps run ({who}) is writing into this folder; wait for it to "
                f"finish or choose another folder (if that run no longer exists, delete "
                f"{LOCK_FILE} in the folder)",
                out,
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(me))
        break
    else:
        raise CellmapsInputError(f"could not take the run lock {LOCK_FILE}", out)
    try:
        yield out
    finally:
        if _read_lock(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


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
