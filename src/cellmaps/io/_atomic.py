"""Atomic file writing: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cellmaps.errors import CellmapsInputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    If the body raises, the temporary file is removed and ``path`` is left as it was,
    so a crash never leaves a half-written result behind.
    """
    path = Path(path)
    if path.is_dir():  # os.replace would name the temporary file in its error
        raise CellmapsInputError("cannot write a file here: a folder has this name", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates the file 0600; give it the permissions a plain open() would
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(path: str | os.PathLike, header: list[str], rows: list[list]) -> None:
    """Write a CSV table atomically with the csv module, so fields holding commas, quotes or
    line breaks (an image named ``a,b.png``) are quoted and read back as one field."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one :func:`atomic_path` gives its temporaries
    (``.<name>.<random>.tmp<suffix>``)."""
    return name.startswith(".") and ".tmp" in name[1:]


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` leaves when a process is killed
    (``.<name>.<random>.tmp<suffix>``) in ``folder``; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if is_temporary_name(p.name) and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
