"""Which code made a result: the git commit and whether the tree was dirty, and a cache key
for trained models made of the recipe, the data and the code version."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

from cellmaps.version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str, cwd: Path = PACKAGE_DIR) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


@functools.cache
def code_version() -> dict:
    """``{"commit", "dirty", "source_hash", "version"}`` of the cellmaps code that runs.

    ``commit`` is the checkout's HEAD (None outside a git checkout), ``dirty`` whether the
    package's files differ from it, and ``source_hash`` a digest of the package's git tree
    plus any uncommitted changes to it, so two runs with the same hash ran the same code.
    Read once per process (the training module reads it when imported), so edits made
    while a run goes on are not attributed to it.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "source_hash": None, "version": __version__}
    tree = (_git("rev-parse", "HEAD:./") or "").strip()  # the package folder's tree
    diff = _git("diff", "HEAD", "--", ".") or ""
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", ".") or ""
    h = hashlib.sha256((tree + diff).encode())
    for name in sorted(untracked.split()):
        path = PACKAGE_DIR / name
        if path.is_file():
            h.update(name.encode() + path.read_bytes())
    return {
        "commit": commit.strip(),
        "dirty": bool(diff.strip() or untracked.strip()),
        "source_hash": h.hexdigest()[:16],
        "version": __version__,
    }


def cache_key(recipe: dict, data: object, code: dict | None = None) -> str:
    """Key of a trained model: a digest of the recipe, the training data description (e.g.
    folders, splits, weights) and the code version (:func:`code_version`). A model cached
    under a key is reusable only by a run that would train exactly that."""
    code = code_version() if code is None else code
    payload = {
        "recipe": recipe,
        "data": data,
        "code": code.get("source_hash") or code.get("version"),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
