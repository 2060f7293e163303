"""Shared fixtures. Real data lives in ../shared/data (never copied into the repository).

Tests that need it skip with a reason when it is absent, unless CELLMAPS_REQUIRE_SHARED_DATA=1
(set by .ci/run), in which case they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CELLMAPS_SHARED_DATA", REPO.parent / "shared" / "data"))
DATASETS = ("crchisto", "monuseg", "dsb2018_fluo", "usiigaci_phc", "mbm_bonemarrow", "bcdata_ki67")


def shared_dataset(name: str) -> Path:
    """Path of a shared dataset; skip (or fail in CI) when it is missing."""
    path = SHARED_DATA / name
    if not (path / "splits.csv").is_file():
        msg = f"shared dataset {name!r} not found at {path} (set CELLMAPS_SHARED_DATA)"
        if os.environ.get("CELLMAPS_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + "; CELLMAPS_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(msg)
    return path


@pytest.fixture
def monuseg() -> Path:
    return shared_dataset("monuseg")


@pytest.fixture
def crchisto() -> Path:
    return shared_dataset("crchisto")


@pytest.fixture
def bcdata() -> Path:
    return shared_dataset("bcdata_ki67")


@pytest.fixture(scope="session")
def x_display():
    """An X display for tests that draw with OpenGL (napari's viewer): the one in $DISPLAY,
    else a virtual one (Debian's ``xvfb``) started for the session. Without either the test
    skips, or fails when CELLMAPS_REQUIRE_DISPLAY=1 (set by .ci/run once it installed xvfb)."""
    import shutil
    import subprocess

    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    if shutil.which("Xvfb") is None:
        msg = "no X display and no Xvfb (apt-get install xvfb; see README 'Tests')"
        if os.environ.get("CELLMAPS_REQUIRE_DISPLAY") == "1":
            pytest.fail(msg + "; CELLMAPS_REQUIRE_DISPLAY=1 requires one")
        pytest.skip(msg)
    read, write = os.pipe()  # Xvfb writes the display number it took to -displayfd
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24",
                             "-nolisten", "tcp"], pass_fds=(write,),
                            preexec_fn=_end_with_parent)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if proc.poll() is not None or not number:
        pytest.fail(f"Xvfb did not start (exit code {proc.poll()})")
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    # not stopped here: Qt's application outlives the tests and exits the process with an
    # error when its X server goes away first; Xvfb ends with this process (_end_with_parent)
    yield os.environ["DISPLAY"]


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent (pytest) exits (Linux prctl)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
