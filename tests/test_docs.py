"""The documentation site (mkdocs, API reference from the docstrings) builds with warnings as
errors, and its generated pages match the model cards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_docs_site_builds_strictly_with_the_api_from_docstrings(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs build needs mkdocs (the [test] extra)")
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs mkdocstrings-python")
    site = tmp_path / "site"
    # no -q: mkdocs counts only the warnings it logs, and --strict fails on any of them
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
         "-d", str(site)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "Find the objects in one image and measure each" in api  # Model.predict's docstring
    assert "panoptic_quality" in api and "seeded_split" in api
    for page in ("he-counts", "ki67", "outlines", "fluorescence", "training-from-points",
                 "whole-slide"):  # fmt: skip
        assert (site / "gallery" / page / "index.html").is_file(), page


def test_models_page_and_readme_table_are_the_cards():
    from benchmarks.model_cards import models_page, models_table

    cards = json.loads((REPO / "src" / "cellmaps" / "models" / "cards.json").read_text())
    assert (REPO / "docs" / "models.md").read_text(encoding="utf-8") == models_page(cards)
    assert models_table(cards) in (REPO / "README.md").read_text(encoding="utf-8")
