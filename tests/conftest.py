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
