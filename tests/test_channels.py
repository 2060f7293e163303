"""Images with any number of channels, z-stacks and huge headers: read as the README says,
channels chosen with --channels, and refusals that name the file and what to do."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmaps.cli import main
from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import (
    DEFAULT_MAX_PIXELS,
    parse_channels,
    read_image,
    select_channels,
)

RNG = np.random.default_rng(0)


def test_unlabelled_tiffs_with_trailing_channels_are_height_width_channels(tmp_path):
    """tifffile writes an (H, W, C) array without metadata as H pages of W × C; cellmaps
    reads it back as the (H, W, C) image it was."""
    for c, dtype in ((2, np.float32), (5, np.uint16)):
        data = RNG.uniform(0, 200, (30, 40, c)).astype(dtype)
        path = tmp_path / f"c{c}.tif"
        tifffile.imwrite(path, data)
        assert np.array_equal(read_image(path), data)


def test_unlabelled_leading_axis_is_channels(tmp_path):
    data = RNG.integers(0, 4000, (10, 30, 40)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data)
    assert np.array_equal(read_image(tmp_path / "s.tif"), np.moveaxis(data, 0, -1))


@pytest.mark.parametrize("style", ["imagej", "ome", "unlabelled"])
def test_z_stacks_are_max_projected_per_channel(tmp_path, style):
    data = RNG.integers(0, 4000, (4, 2, 30, 40)).astype(np.uint16)  # Z, C, Y, X
    path = tmp_path / ("s.ome.tif" if style == "ome" else "s.tif")
    if style == "imagej":
        tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZCYX"})
    elif style == "ome":
        tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZCYX"})
    else:
        tifffile.imwrite(path, data)  # ImageJ's order (…, Z, C, Y, X) is assumed
    img = read_image(path)
    assert img.shape == (30, 40, 2)
    assert np.array_equal(img, np.moveaxis(data.max(axis=0), 0, -1))


def test_time_series_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "t.tif"
    data = np.zeros((3, 2, 1, 30, 40), np.uint16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(CellmapsInputError, match=r"t.tif.*3 time points.*one time point per file"):
        read_image(path)


def test_select_channels_picks_in_the_given_order_and_refuses_missing_ones():
    img = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    assert np.array_equal(select_channels(img, [4, 0]), img[..., [4, 0]])
    assert select_channels(img, [2]).shape == (2, 3)
    assert select_channels(img, None) is img
    assert np.array_equal(select_channels(img[..., 0], [0]), img[..., 0])
    with pytest.raises(CellmapsInputError, match=r"x.tif: channel\(s\) \[5\].*has 5"):
        select_channels(img, [1, 5], "x.tif")
    assert parse_channels("0, 2") == [0, 2]
    for bad in ("", "a", "-1", "1,,x"):
        with pytest.raises(CellmapsInputError, match="counted from 0"):
            parse_channels(bad)


def test_predict_on_a_five_channel_image_needs_channels(tmp_path, capsys):
    from tests.test_evidence_floor import peak_model

    model = tmp_path / "m.safetensors"
    peak_model().save(model)  # a 3-channel model
    data = RNG.integers(0, 255, (40, 40, 5)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "five.tif", data)
    argv = ["predict", str(model), str(tmp_path / "five.tif"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "five.tif" in err and "5 channels" in err and "--channels" in err
    assert main([*argv, "--out", str(tmp_path / "b"), "--channels", "4,0,2"]) == 0
    assert (tmp_path / "b" / "points" / "five.csv").is_file()
    assert main([*argv, "--out", str(tmp_path / "c"), "--channels", "7"]) == 2
    assert "[7] asked for, but the image has 5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "d"), "--channels", "x"])
    assert "counted from 0" in capsys.readouterr().err


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` grey pixels but whose data is one
    short row: what a decompression bomb or a damaged export looks like."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )


def test_huge_png_header_is_refused_before_decoding(tmp_path, capsys):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    assert 100_000**2 > DEFAULT_MAX_PIXELS
    with pytest.raises(CellmapsInputError, match=r"bomb.png.*100000 × 100000.*--max-pixels"):
        read_image(path)


def test_pixel_limit_applies_to_png_and_jpeg_and_can_be_raised(tmp_path, capsys, monkeypatch):
    img = RNG.integers(0, 255, (20, 30, 3)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img).save(tmp_path / "b.jpg")
    monkeypatch.setenv("CELLMAPS_MAX_PIXELS", "500")  # 600 px images
    for name in ("a.png", "b.jpg"):
        with pytest.raises(CellmapsInputError, match=f"{name}.*over the 0 Mpx limit"):
            read_image(tmp_path / name)
    tifffile.imwrite(tmp_path / "c.tif", img)  # TIFF is exempt (read lazily by tiles later)
    assert read_image(tmp_path / "c.tif").shape == (20, 30, 3)
    from tests.test_evidence_floor import peak_model

    peak_model().save(tmp_path / "m.safetensors")
    argv = ["predict", str(tmp_path / "m.safetensors"), str(tmp_path / "a.png"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "o1")]) == 2
    assert "--max-pixels" in capsys.readouterr().err
    assert main([*argv, "--out", str(tmp_path / "o2"), "--max-pixels", "600"]) == 0
    assert __import__("os").environ["CELLMAPS_MAX_PIXELS"] == "500"
    monkeypatch.setenv("CELLMAPS_MAX_PIXELS", "x")
    with pytest.raises(CellmapsInputError, match="CELLMAPS_MAX_PIXELS must be"):
        read_image(tmp_path / "a.png")
