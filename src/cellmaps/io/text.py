"""Reading the text files users give (CSV tables, GeoJSON, YAML recipes) with one clear
error for the usual problems: missing, unreadable, or not UTF-8 (a spreadsheet's
Latin-1 export, say)."""

from __future__ import annotations

import os
from pathlib import Path

from cellmaps.errors import CellmapsInputError


def read_utf8_text(path: str | os.PathLike, what: str = "text file") -> str:
    """The file's text, UTF-8 with or without a byte-order mark.

    Raises
    ------
    CellmapsInputError
        Naming the file: missing, unreadable, or the first byte that is not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise CellmapsInputError(f"{what} does not exist", path) from exc
    except OSError as exc:
        raise CellmapsInputError(f"cannot read {what} ({exc.strerror})", path) from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CellmapsInputError(
            f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save it as UTF-8 (CSV UTF-8 in spreadsheet programs)",
            path,
        ) from exc
