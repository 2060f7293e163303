"""Unusual inputs a user meets (issue "Nothing lost, nothing silently wrong"): multi-page
TIFFs, EXIF orientation, CMYK JPEGs, two-channel images, grey images for Ki67, fixed counts
columns, float images in 0–255, and folder entries that are not files. Each test was seen
failing before its fix."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmaps.cli import main
from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import image_shape, read_image
from cellmaps.predict import predict_paths
from tests.test_batch import seeded_model

RNG = np.random.default_rng(3)


def _pages(path, *arrays):
    """A TIFF whose pages are written one by one (no metadata tying them into a stack)."""
    with tifffile.TiffWriter(path) as w:
        for a in arrays:
            w.write(a)
    return path


def test_a_tiff_of_separate_pages_is_refused_naming_the_choices(tmp_path):
    blank = np.full((30, 40, 3), 255, np.uint8)
    tissue = RNG.integers(0, 200, (30, 40, 3), dtype=np.uint8)
    path = _pages(tmp_path / "two.tif", blank, tissue)
    with pytest.raises(
        CellmapsInputError, match=r"two.tif.*2 images.*--page N \(0 to 1\).*--project max"
    ):
        read_image(path)
    assert np.array_equal(read_image(path, page=1), tissue)
    assert np.array_equal(read_image(path, project="max"), np.maximum(blank, tissue))
    with pytest.raises(CellmapsInputError, match=r"--page 2 asked for, but the TIFF has 2"):
        read_image(path, page=2)


def test_an_unlabelled_rgb_stack_is_refused_or_projected_when_asked(tmp_path):
    """Four RGB planes written as one generic page sequence (no ImageJ/OME axes)."""
    planes = RNG.integers(0, 255, (4, 30, 40, 3), dtype=np.uint8)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, planes, metadata=None)
    with pytest.raises(CellmapsInputError, match=r"--page N \(0 to 3\).*--project max"):
        read_image(path)
    assert np.array_equal(read_image(path, project="max"), planes.max(axis=0))
    assert np.array_equal(read_image(path, page=2), planes[2])


def test_unlabelled_z_stack_read_in_imagej_order_says_so(tmp_path):
    data = RNG.integers(0, 4000, (4, 2, 30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data)
    with pytest.warns(UserWarning, match=r"no axes metadata.*4 planes and max-projected"):
        read_image(tmp_path / "s.tif")


def test_cli_page_option_predicts_on_the_chosen_page(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    seeded_model().save(model)
    tissue = RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    _pages(tmp_path / "two.tif", np.full((40, 40, 3), 255, np.uint8), tissue)
    Image.fromarray(tissue).save(tmp_path / "tissue.png")
    argv = ["predict", "--quiet", str(model)]
    assert main([*argv, str(tmp_path / "two.tif"), "--out", str(tmp_path / "a")]) == 2
    assert "--page N" in capsys.readouterr().err
    assert (
        main([*argv, str(tmp_path / "two.tif"), "--out", str(tmp_path / "b"), "--page", "1"]) == 0
    )
    assert main([*argv, str(tmp_path / "tissue.png"), "--out", str(tmp_path / "c")]) == 0
    page = (tmp_path / "b" / "points" / "two.csv").read_text()
    assert page == (tmp_path / "c" / "points" / "tissue.csv").read_text() and page.count("\n") > 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    """Orientation 6: the stored pixels are shown turned 90° clockwise."""
    stored = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    stored[:4, :4] = 255  # a bright corner to check by eye
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / ("o.jpg" if fmt == "JPEG" else "o.png")
    Image.fromarray(stored).save(path, format=fmt, exif=exif, quality=100)
    img = read_image(path)
    assert img.shape == (30, 20, 3) and image_shape(path) == (30, 20)
    decoded = np.asarray(Image.open(path).convert("RGB"))  # the stored frame (lossy for JPEG)
    assert np.array_equal(img, np.rot90(decoded, -1))


def test_cmyk_jpeg_is_read_as_rgb(tmp_path):
    rgb = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=100)
    img = read_image(tmp_path / "c.jpg")
    ref = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB"))
    assert img.shape == (20, 30, 3) and np.array_equal(img, ref)


def test_two_channel_image_advice_names_only_channels_it_has(tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    seeded_model().save(model)  # a 3-channel model
    tifffile.imwrite(tmp_path / "twoch.tif", RNG.integers(0, 255, (40, 40, 2), dtype=np.uint8))
    argv = ["predict", str(model), str(tmp_path / "twoch.tif"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--channels 0,1,0" in err and "0,1,2" not in err
    assert main([*argv, "--out", str(tmp_path / "b"), "--channels", "0,1,0"]) == 0


@pytest.mark.parametrize("kind", ["grey", "grey saved as RGB"])
def test_ki67_refuses_an_image_without_colour(tmp_path, kind):
    from cellmaps.ki67 import score_ki67

    grey = RNG.integers(0, 255, (48, 48), dtype=np.uint8)
    img = grey if kind == "grey" else np.repeat(grey[..., None], 3, axis=-1)
    Image.fromarray(img).save(tmp_path / "grey.png")
    with pytest.raises(CellmapsInputError, match=r"grey.png.*Ki67 call needs a brightfield RGB"):
        score_ki67(None, [tmp_path / "grey.png"], tmp_path / "out", progress=False)


def test_counts_columns_come_from_the_model_not_from_what_was_found(tmp_path):
    m = seeded_model()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "empty.png")
    predict_paths(m, [tmp_path / "empty.png"], tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "counts.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    label = m.training.get("label", "nucleus")
    assert rows == [["id", "count", label], ["empty", "0", "0"]]


def test_float_image_in_0_255_gives_the_same_detections_as_uint8(tmp_path):
    img = RNG.integers(0, 250, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "u8.png")
    tifffile.imwrite(tmp_path / "f32.tif", img.astype(np.float32))
    tifffile.imwrite(tmp_path / "u16.tif", img.astype(np.uint16))
    m = seeded_model()
    points = {}
    for name in ("u8.png", "f32.tif", "u16.tif"):
        predict_paths(m, [tmp_path / name], tmp_path / name.replace(".", "_"), progress=False)
        stem = name.split(".")[0]
        points[name] = (tmp_path / name.replace(".", "_") / "points" / f"{stem}.csv").read_text()
    assert points["u8.png"].count("\n") > 1
    assert points["u8.png"] == points["f32.tif"] == points["u16.tif"]


def test_folder_entries_that_are_not_files_are_skipped_up_front(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    os.mkfifo(folder / "fifo.png")
    os.symlink(folder / "loop.tif", folder / "loop.tif")
    os.symlink("/dev/zero", folder / "zero.png")
    with pytest.warns(UserWarning, match=r"skipping 3 entries") as record:
        rows = predict_paths(seeded_model(), [folder], tmp_path / "out", progress=False)
    text = str(record[0].message)
    assert "named pipe" in text and "character device" in text and "loop.tif" in text
    assert [r["id"] for r in rows] == ["a"]
    with pytest.raises(CellmapsInputError, match=r"fifo.png: not a regular file \(a named pipe\)"):
        predict_paths(seeded_model(), [folder / "fifo.png"], tmp_path / "o2", progress=False)
