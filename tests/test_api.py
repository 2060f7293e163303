"""The Python API: cellmaps.load_model, Model.predict → Prediction (points, outlines, a
per-object table with measurements), cellmaps.evaluate on arrays; docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest

import cellmaps
from cellmaps.errors import CellmapsInputError
from cellmaps.io.points import Points
from cellmaps.postprocess.measure import disc_labels, object_table
from tests.conftest import shared_dataset


def test_object_table_measures_each_point_on_the_outline_under_it():
    """A 10 × 10 square (object 4) and a 6 × 3 rectangle (object 9) of known intensities,
    three points (one on background): areas, means and µm² computed by hand."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15] = 4
    labels[25:31, 20:23] = 9
    img = np.zeros((40, 40), np.uint8)
    img[5:15, 5:15] = 100
    img[5:10, 5:15] = 50  # half at 50, half at 100: mean 75
    img[25:31, 20:23] = 200
    pts = Points(np.array([[27.0, 21.0], [9.6, 10.2], [35.0, 35.0]]), ["b", "a", "c"],
                 np.array([0.9, 0.5, 0.1]))  # fmt: skip
    cols = object_table(pts, img, labels, pixel_size=0.5)
    assert list(cols["object"]) == [9, 4, 0]
    assert cols["area_px"][:2].tolist() == [18.0, 100.0] and np.isnan(cols["area_px"][2])
    assert cols["area_um2"][:2].tolist() == [4.5, 25.0]
    assert cols["mean_intensity"][:2].tolist() == [200.0, 75.0]
    assert cols["x"].tolist() == [21.0, 10.2, 35.0] and list(cols["class"]) == ["b", "a", "c"]
    assert cols["equivalent_diameter_px"][1] == pytest.approx(2 * np.sqrt(100 / np.pi))
    assert cols["solidity"][1] == pytest.approx(1.0)
    assert set(cols["measured_on"]) == {"outline"}
    assert "hematoxylin_od_mean" not in cols  # grey image: no stain densities


def test_points_are_measured_on_discs_that_do_not_overlap():
    """Two far points get discs of the pixels within r of them (counted independently); two
    close ones share the union of their discs without overlap, nearest point first."""
    yy, xx = np.mgrid[:60, :60]

    def disc(c, r):
        return (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r

    lab = disc_labels(np.array([[15.0, 15.0], [45.0, 40.0]]), (60, 60), 5.0)
    assert (lab == 1).sum() == disc((15, 15), 5).sum() and (lab == 2).sum() == disc(
        (45, 40), 5
    ).sum()
    close = disc_labels(np.array([[30.0, 26.0], [30.0, 32.0]]), (60, 60), 5.0)
    assert (close > 0).sum() == (disc((30, 26), 5) | disc((30, 32), 5)).sum()
    assert (close[:, :29] == 2).sum() == 0 and (close[:, 30:] == 1).sum() == 0
    rgb = np.full((60, 60, 3), 230, np.uint8)
    rgb[disc((15, 15), 6)] = (60, 40, 140)  # a haematoxylin-blue nucleus
    rgb[disc((45, 40), 6)] = (150, 90, 40)  # a DAB-brown one
    cols = object_table(Points(np.array([[15.0, 15.0], [45.0, 40.0]])), rgb, disc_radius=5.0)
    assert cols["hematoxylin_od_mean"][0] > cols["hematoxylin_od_mean"][1]
    assert cols["dab_od_mean"][1] > cols["dab_od_mean"][0]
    assert cols["mean_blue"][0] == 140.0 and set(cols["measured_on"]) == {"disc r=5.0 px"}
    with pytest.raises(CellmapsInputError, match="disc radius"):
        object_table(Points(np.zeros((1, 2))), rgb)


def test_evaluate_on_arrays_by_hand():
    truth = np.array([[10.0, 10.0], [30.0, 40.0], [50.0, 5.0]])
    pred = np.array([[12.0, 11.0], [30.0, 60.0]])
    d = cellmaps.evaluate(truth, pred, radius=6.0)["detection"]
    assert (d["tp"], d["fp"], d["fn"]) == (1, 1, 2)
    t = np.zeros((8, 8), int)
    t[:, :4], t[:, 4:] = 1, 2
    p = np.zeros((8, 8), int)
    p[:, :4] = 5
    out = cellmaps.evaluate(t, p, radius=2.0)
    assert out["segmentation"]["pq"] == pytest.approx(2 / 3)  # SQ 1, DQ 1 / (1 + ½)
    assert out["detection"]["tp"] == 1 and out["detection"]["fn"] == 1
    with pytest.raises(CellmapsInputError, match="shape"):
        cellmaps.evaluate(t, p[:4], radius=2.0)
    with pytest.raises(CellmapsInputError, match="folders"):
        cellmaps.evaluate(truth, pred, split="test")


def test_import_cellmaps_is_light_and_names_the_api():
    """``import cellmaps`` loads no torch; the API names load on first use."""
    code = "import sys, cellmaps; print('torch' in sys.modules, sorted(cellmaps.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("False ")
    assert cellmaps.load_model.__module__ == "cellmaps.api"
    with pytest.raises(AttributeError, match="no attribute 'load_modle'"):
        _ = cellmaps.load_modle


@pytest.mark.parametrize(
    "module",
    ["cellmaps.api", "cellmaps.model", "cellmaps.metrics.segmentation", "cellmaps.io.dataset"],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_predict_points_with_the_default_model_meets_a_floor(crchisto):
    """The bundled default model on the CRCHisto test image with the most nuclei through the
    API: points only (masks=False) are Model.detect's, F1 ≥ 0.8 against its annotations
    (r 6 px), one table row per point, measured on discs; by default it outlines too (rows
    measured on the outlines, still F1 ≥ 0.8); asking a points-only model (Ki67) for
    outlines is refused before any prediction."""
    from cellmaps.io import Dataset

    ds = Dataset(crchisto)
    image_id = max(ds.ids("test"), key=lambda i: len(ds.points(i).coords))
    m = cellmaps.load_model()
    r = m.predict(ds.image(image_id), object_size=5.4, masks=False)
    assert np.array_equal(r.points.coords, m.detect(ds.image(image_id), object_size=5.4).coords)
    assert r.labels is None and r.maps is None and r.factor == pytest.approx(6.0 / 5.4)
    table = r.table
    assert len(table) == len(r.points) > 50
    assert set(table["measured_on"]) == {f"disc r={5.4:.1f} px"}
    assert table["area_px"].median() == pytest.approx(np.pi * 5.4**2, rel=0.1)
    assert cellmaps.evaluate(ds.points(image_id).coords, r)["detection"]["f1"] >= 0.8
    o = m.predict(ds.image(image_id), object_size=5.4)
    assert m.can_outline and o.labels is not None and o.labels.shape == ds.shape(image_id)
    assert (o.table["measured_on"] == "outline").all()
    assert (o.table["object"] > 0).mean() > 0.9  # nearly every detection on its outline
    assert cellmaps.evaluate(ds.points(image_id).coords, o)["detection"]["f1"] >= 0.8
    with pytest.raises(CellmapsInputError, match="outer_distance"):
        cellmaps.load_model("ki67").predict(ds.image(image_id), masks=True)
    with pytest.raises(CellmapsInputError, match="NaN"):
        m.predict(np.full((32, 32), np.nan, np.float32))


def test_predict_outlines_with_fluo_nuclei_meets_a_floor():
    """fluo-nuclei on the DSB test image with the most nuclei: outlines by default, PQ ≥ 0.6
    against its mask, and each row's area is its instance's pixel count."""
    from cellmaps.io import Dataset

    ds = Dataset(shared_dataset("dsb2018_fluo"))
    image_id = max(ds.ids("test"), key=lambda i: ds.mask(i).max())
    r = cellmaps.load_model("fluo-nuclei").predict(ds.image(image_id), maps=True)
    assert r.labels is not None and r.maps is not None
    assert cellmaps.evaluate(ds.mask(image_id), r)["segmentation"]["pq"] >= 0.6
    t = r.table
    inside = t["object"] > 0
    assert inside.mean() > 0.9
    counts = np.bincount(r.labels.ravel())
    assert (t.loc[inside, "area_px"].to_numpy() == counts[t.loc[inside, "object"]]).all()
    assert set(t["measured_on"]) == {"outline"}


def test_cli_version(capsys):
    from cellmaps.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"cellmaps {cellmaps.__version__}"
