"""The napari plugin: its npe2 manifest, the reader of output folders (round trip through
``cellmaps predict``) and the dock widget in a real napari viewer (napari's own
``make_napari_viewer`` fixture, on a virtual X display)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari plugin's tests need cellmaps[napari]")

import npe2  # noqa: E402

from cellmaps.errors import CellmapsInputError  # noqa: E402
from cellmaps.io.dataset import Dataset  # noqa: E402
from cellmaps.io.geojson import FIXED_COLORS  # noqa: E402
from cellmaps.io.images import read_image, write_image  # noqa: E402
from cellmaps.io.masks import read_mask  # noqa: E402
from cellmaps.io.points import read_points  # noqa: E402
from cellmaps.metrics import match_points  # noqa: E402
from cellmaps.napari_plugin.layers import class_colours, counts_summary  # noqa: E402
from cellmaps.napari_plugin.reader import get_reader  # noqa: E402
from cellmaps.napari_plugin.run import detect_layers, layer_pixels  # noqa: E402
from cellmaps.predict import predict_paths  # noqa: E402
from tests.conftest import shared_dataset  # noqa: E402

CROP = 256
IMAGE_ID = "TCGA-21-5784-01Z-00-DX1"


@pytest.fixture(scope="module")
def tile() -> tuple[np.ndarray, np.ndarray]:
    """A 256² MoNuSeg crop and its annotated nucleus centres (row, col)."""
    ds = Dataset(shared_dataset("monuseg"))
    image = read_image(ds.image_path(IMAGE_ID))[:CROP, :CROP]
    truth = ds.points(IMAGE_ID).coords
    return image, truth[(truth < CROP).all(axis=1)]


def test_manifest_names_a_reader_and_a_widget_that_import():
    m = npe2.PluginManifest.from_distribution("cellmaps")
    assert m.name == "cellmaps"
    assert [r.command for r in m.contributions.readers] == ["cellmaps.get_reader"]
    assert [w.command for w in m.contributions.widgets] == ["cellmaps.detect_widget"]
    m.validate_imports()  # every python_name resolves to a callable


def test_class_colours_and_ki67_summary_by_hand():
    rgba = class_colours(np.array(["positive", "negative", "positive"], dtype=object))
    assert np.allclose(rgba[0, :3] * 255, FIXED_COLORS["positive"])
    assert np.allclose(rgba[1, :3] * 255, FIXED_COLORS["negative"])
    assert np.array_equal(rgba[0], rgba[2]) and np.all(rgba[:, 3] == 1)
    s = counts_summary(np.array(["positive", "negative", "negative"], dtype=object))
    assert s["counts"] == {"negative": 2, "positive": 1}
    assert s["ki67_index"] == pytest.approx(1 / 3)
    assert "ki67_index" not in counts_summary(np.array(["nucleus"], dtype=object))


def test_layer_pixels_takes_level_0_and_refuses_stacks():
    levels = [np.ones((8, 8)), np.ones((4, 4))]
    assert layer_pixels(levels, False, "pyramid").shape == (8, 8)
    assert layer_pixels(np.zeros((8, 8, 3)), True, "rgb").shape == (8, 8, 3)
    with pytest.raises(CellmapsInputError, match="'stack'.*one 2-D image"):
        layer_pixels(np.zeros((5, 8, 8)), False, "stack")


def test_reader_opens_an_output_folder_as_written(tmp_path, tile, npe2pm):
    """predict --masks into a folder; the reader's layers are the files' points, features
    (measurements) and masks, and the points are those of Model.predict on the image."""
    image, _ = tile
    (tmp_path / "in").mkdir()
    write_image(tmp_path / "in" / "crop.png", image)
    out = tmp_path / "out"
    predict_paths("default", [tmp_path / "in"], out, progress=False, masks=True)

    assert get_reader(str(tmp_path / "in")) is None  # not an output folder: other readers
    npe2pm.register(npe2.PluginManifest.from_distribution("cellmaps"))  # npe2's test manager
    layers = npe2.read([str(out)], stack=False, plugin_name="cellmaps")
    names = [kw["name"] for _, kw, _ in layers]
    assert names == ["crop points", "crop masks"]
    (coords, kw, kind), (mask, _, mask_kind) = layers
    assert (kind, mask_kind) == ("points", "labels")
    written = read_points(out / "points" / "crop.csv")
    assert np.array_equal(coords, written.coords)
    assert np.array_equal(mask, read_mask(out / "masks" / "crop.tif"))
    assert len(kw["features"]["area_px"]) == len(written) > 20
    assert list(kw["features"]["class"]) == list(written.labels)
    pred = detect_layers(image, "crop", "default", outlines=True)
    assert np.allclose(pred[0][0], coords, atol=0.01)  # the CSV keeps 2 decimals


def test_reader_refuses_measurements_that_do_not_match(tmp_path):
    (tmp_path / "points").mkdir()
    (tmp_path / "measurements").mkdir()
    (tmp_path / "points" / "a.csv").write_text("x,y,label\n1,2,nucleus\n3,4,nucleus\n")
    (tmp_path / "measurements" / "a.csv").write_text("x,y,class\n1,2,nucleus\n")
    reader = get_reader([str(tmp_path)])
    with pytest.raises(CellmapsInputError, match="1 measurement rows for 2 points"):
        reader(str(tmp_path))


def test_widget_in_a_napari_viewer(x_display, make_napari_viewer, tile):
    """The dock widget on an RGB image layer adds the points (with the measurements as
    features) and the outlines of Model.predict, and finds the annotated nuclei (F1 0.758
    at a 6 px match radius when written)."""
    image, truth = tile
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="tile", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("cellmaps", "Detect cells and nuclei")
    assert widget.model.value == "default" and "ki67" in widget.model.choices
    widget.image.value = layer
    assert widget.outlines.value  # outlines by default, where the model can
    widget.object_size.value = 10.0  # MoNuSeg is 40×: nuclei of ~10 px radius
    widget()

    points, outlines = viewer.layers["tile default"], viewer.layers["tile default outlines"]
    expected = detect_layers(image, "tile", "default", object_size=10.0, outlines=True)
    assert points.metadata["cellmaps"]["factor"] == pytest.approx(0.6)  # model radius 6 / 10
    assert np.allclose(points.data, expected[0][0])
    assert np.array_equal(outlines.data, expected[1][0])
    assert {"score", "area_px", "solidity"} <= set(points.features.columns)
    assert points.metadata["cellmaps"]["counts"]["nucleus"] == len(points.data)
    m = match_points(truth, points.data, radius=6.0)
    f1 = 2 * m.tp / (2 * m.tp + m.fp + m.fn)
    assert f1 >= 0.7, f"F1 {f1:.3f} against the annotated nuclei"

    widget.outlines.value = False  # points only: no second Labels layer
    widget.model.value = "ki67"
    widget()
    assert [ly.name for ly in viewer.layers] == [
        "tile",
        "tile default",
        "tile default outlines",
        "tile ki67",
    ]
    ki67 = viewer.layers["tile ki67"]
    classes = list(ki67.features["class"])
    assert set(classes) <= {"positive", "negative", "non_tumour"}  # the tumour gate's class
    pos, neg = classes.count("positive"), classes.count("negative")
    assert ki67.metadata["cellmaps"]["ki67_index"] == pytest.approx(pos / (pos + neg))
