"""Bundled models by name, their cards, and the warning an image far from a model's training
microscopy gets (cellmaps.bundled, cellmaps.io.modality)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from cellmaps.bundled import format_card, is_bundled_name, load_bundled, model_cards
from cellmaps.cli import main
from cellmaps.errors import CellmapsInputError
from cellmaps.io import Dataset
from tests.conftest import REPO, shared_dataset


def test_cards_name_the_bundled_files_and_figures_from_the_results():
    """Every card's file is bundled (its SHA-256 matches) and its test figures are those of
    the results JSON the card generator read (here the default model's CRCHisto F1)."""
    import hashlib

    cards = model_cards()
    assert {"default", "ki67"} <= set(cards)
    for name, card in cards.items():
        path = REPO / "src" / "cellmaps" / "models" / card["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == card["sha256"], name
        assert card["data"] and all(d["licence"] for d in card["data"])
    crc = next(r for r in json.loads((REPO / "results" / "default_model.json").read_text())["test"]
               if r["dataset"] == "crchisto")  # fmt: skip
    assert f"F1 {crc['f1']:.3f}" in cards["default"]["test"][0]
    text = format_card("ki67", cards["ki67"])
    assert "licence" in text and "trained by" in text and "bcdata_ki67" in text


def test_models_command_lists_and_prints_cards(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("default") and "ki67" in out
    assert main(["models", "ki67"]) == 0
    assert "modality: brightfield" in capsys.readouterr().out
    assert main(["models", "nope"]) == 2
    assert "no bundled model named 'nope'" in capsys.readouterr().err


def test_a_name_is_a_bundled_model_unless_a_file_has_it(tmp_path, monkeypatch):
    assert is_bundled_name("ki67") and not is_bundled_name("ki68")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ki67").mkdir()  # a folder of images called ki67 is not the model
    assert not is_bundled_name("ki67")
    m = load_bundled("ki67")
    assert m.training["modality"] == "brightfield" and m.training["bundled_name"] == "ki67"
    with pytest.raises(CellmapsInputError, match="bundled: default"):
        load_bundled("fluo")


def test_a_fluorescence_image_given_to_the_default_model_is_warned_once(tmp_path, capsys):
    """Two DSB 2018 fluorescence images through `cellmaps predict default`: one warning line
    naming the first image and what to use; an H&E image gives none."""
    ds = Dataset(shared_dataset("dsb2018_fluo"))
    ids = ds.ids("test")[:2]
    images = tmp_path / "fluo"
    images.mkdir()
    for i in ids:
        Image.fromarray(np.asarray(ds.image(i))).save(images / f"{i}.png")
    assert main(["predict", "default", str(images), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "looks like" in line]
    assert len(lines) == 1, err
    assert f"{ids[0]}.png looks like a fluorescence image" in lines[0]
    assert "trained on brightfield" in lines[0] and "fluo" in lines[0]
    he = Dataset(shared_dataset("crchisto"))
    hid = he.ids("test")[0]
    Image.fromarray(np.asarray(he.image(hid))).save(tmp_path / "he.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        assert main(["predict", "default", str(tmp_path / "he.png"), "--out",
                     str(tmp_path / "q"), "--quiet"]) == 0  # fmt: skip


def test_the_bundled_fluorescence_model_outlines_dsb_nuclei_above_a_floor(tmp_path):
    """`cellmaps predict fluo-nuclei --masks` on four DSB 2018 test images: mean AJI and
    pooled CDS above floors set under what the bundled model reaches on the whole test split
    (BENCHMARKS.md 'Bundled fluorescence nuclei model'); no modality warning."""
    if "fluo-nuclei" not in model_cards():
        pytest.skip("fluo-nuclei is not bundled in this installation")
    from cellmaps.io.masks import read_mask
    from cellmaps.metrics.segmentation import aji, instance_scores

    ds = Dataset(shared_dataset("dsb2018_fluo"))
    ids = ds.ids("test")[:4]
    out = tmp_path / "p"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", "fluo-nuclei", *[str(ds.image_path(i)) for i in ids],
                     "--masks", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    ajis, tp, fp, fn = [], 0, 0, 0
    for i in ids:
        truth, pred = ds.mask(i), read_mask(out / "masks" / f"{i}.tif")
        ajis.append(aji(truth, pred))
        s = instance_scores(truth, pred, 0.5)
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    cds = 2 * tp / (2 * tp + fp + fn)
    assert np.mean(ajis) >= 0.6 and cds >= 0.7, (ajis, cds)
