"""Per-object measurements in the prediction folder: measurements/<id>.csv (and .parquet),
one row per detection in the points' order, and the same numbers in every GeoJSON feature
(QuPath-style names), for points (discs) and outlines."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from cellmaps.io import read_points
from cellmaps.predict import predict_paths
from tests.test_slides import blob_image, pointwise_model


def read_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_points_are_measured_on_discs_in_csv_and_geojson(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(blob_image((120, 140), n=40, seed=2)).save(folder / "a.png")
    out = tmp_path / "out"
    predict_paths(pointwise_model("micronet"), [folder], out, progress=False)
    pts = read_points(out / "points" / "a.csv")
    rows = read_rows(out / "measurements" / "a.csv")
    assert len(rows) == len(pts) > 3
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    np.testing.assert_allclose(xy, pts.coords[:, ::-1], atol=1e-4)  # the points' order
    table = pd.read_csv(out / "measurements" / "a.csv")
    assert table["measured_on"].str.startswith("disc r=").all()
    # a disc of the model's radius (training radius unknown here: 6 px, factor 1), whole
    # where it does not touch a neighbour or the edge
    assert table["area_px"].max() == pytest.approx(np.pi * 36, rel=0.08)
    feats = json.loads((out / "geojson" / "a.geojson").read_text())["features"]
    assert len(feats) == len(rows)
    for feat, (_, row) in zip(feats, table.iterrows(), strict=True):
        m = feat["properties"]["measurements"]
        assert m["score"] == pytest.approx(row["score"], rel=1e-6)
        assert m["Area px^2"] == pytest.approx(row["area_px"], rel=1e-6)
        assert m["Hematoxylin OD mean"] == pytest.approx(row["hematoxylin_od_mean"], rel=1e-5)


def test_outlines_carry_their_score_and_area_and_the_csv_names_the_object(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(blob_image((200, 220), n=60, seed=4)).save(folder / "b.png")
    out = tmp_path / "out"
    predict_paths(pointwise_model("micronet-outlines"), [folder], out, masks=True,
                  progress=False)  # fmt: skip
    mask = tifffile.imread(out / "masks" / "b.tif")
    assert mask.max() > 10
    table = pd.read_csv(out / "measurements" / "b.csv")
    on_object = table[table["object"] > 0]
    assert len(on_object) >= 0.9 * len(table)
    sizes = np.bincount(mask.ravel())  # areas counted here, not by regionprops
    np.testing.assert_array_equal(on_object["area_px"], sizes[on_object["object"]])
    assert (table["measured_on"] == "outline").all()
    feats = json.loads((out / "geojson" / "b.geojson").read_text())["features"]
    assert {f["geometry"]["type"] for f in feats} == {"Polygon"}
    by_object = {int(r["object"]): r for _, r in on_object.iterrows()}
    scored = [f for f in feats if int(f["id"]) in by_object]
    assert len(scored) == len(by_object)
    for f in scored:
        row = by_object[int(f["id"])]
        assert f["properties"]["measurements"]["score"] == pytest.approx(row["score"], rel=1e-6)
        assert f["properties"]["measurements"]["Area px^2"] == sizes[int(f["id"])]


def test_parquet_measurements_equal_the_csv(tmp_path):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(blob_image((100, 100), n=30, seed=1)).save(folder / "c.png")
    out = tmp_path / "out"
    predict_paths(pointwise_model("micronet"), [folder], out, progress=False, parquet=True)
    a = pd.read_csv(out / "measurements" / "c.csv")
    b = pd.read_parquet(out / "measurements" / "c.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, check_dtype=False)


def test_a_slide_read_by_region_is_measured_like_the_same_image_in_memory(tmp_path, monkeypatch):
    """The same pixels as a streamed pyramidal TIFF and as a PNG read whole: the same rows
    (points, disc areas, channel means, optical densities); the slide is read in blocks of
    100 px here, so discs across block edges are measured from the margins."""
    from cellmaps.inference import slides
    from tests.test_slides import write_pyramid

    monkeypatch.setattr(slides, "GATE_BLOCK", 100)
    image = blob_image((300, 340), n=120, seed=5)
    write_pyramid(tmp_path / "s.tif", image, levels=1)
    (tmp_path / "png").mkdir()
    Image.fromarray(image).save(tmp_path / "png" / "s.png")
    model = pointwise_model("micronet")
    predict_paths(model, [tmp_path / "s.tif"], tmp_path / "slide", stream_above=1,
                  tissue=False, progress=False)  # fmt: skip
    predict_paths(model, [tmp_path / "png"], tmp_path / "whole", progress=False)
    a = pd.read_csv(tmp_path / "slide" / "measurements" / "s.csv")
    b = pd.read_csv(tmp_path / "whole" / "measurements" / "s.csv")
    assert len(a) == len(b) > 20 and list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)


def measurement_table(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """An object table of ``n`` rows with a NaN in every 7th row's solidity."""
    rng = np.random.default_rng(seed)
    solidity = rng.uniform(0.5, 1.0, n)
    solidity[::7] = np.nan
    return {
        "x": rng.uniform(0, 1000, n),
        "y": rng.uniform(0, 1000, n),
        "class": np.full(n, "nucleus", dtype=object),
        "score": rng.uniform(0, 3, n),
        "object": np.arange(1, n + 1),
        "area_px": rng.uniform(20, 200, n),
        "solidity": solidity,
        "mean_red": rng.uniform(0, 255, n).astype(np.float32),
        "measured_on": np.full(n, "disc r=5.0 px", dtype=object),
    }


def test_qupath_rows_are_the_eager_mappings_made_one_at_a_time():
    """Every row equals the mapping written out by hand from the table's columns (QuPath
    names, NaN left out, location/class columns not measurements); indexing like a list."""
    from cellmaps.postprocess.measure import qupath_measurements

    table = measurement_table(50)
    rows = qupath_measurements(table)
    assert len(rows) == 50
    for i in range(50):
        want = {"score": table["score"][i], "Area px^2": table["area_px"][i],
                "Red: Mean": float(table["mean_red"][i])}  # fmt: skip
        if i % 7:
            want["Solidity"] = table["solidity"][i]
        assert rows[i] == pytest.approx(want) and set(rows[i]) == set(want)
    assert rows[-1] == rows[49] and rows[3:5] == [rows[3], rows[4]]
    assert [r["score"] for r in rows] == pytest.approx(table["score"])  # iteration stops
    with pytest.raises(IndexError):
        rows[50]


def test_writing_a_large_table_holds_no_per_row_objects(tmp_path):
    """Writing 40,000 detections with their measurements (CSV + GeoJSON) allocates far less
    than one Python mapping per row held at once (12 MB traced with such a list here, 1 MB
    without): a slide's peak memory must not grow with its detections (traced allocations,
    not time)."""
    import tracemalloc

    from cellmaps.io.points import Points
    from cellmaps.outputs import write_points_outputs

    n = 40_000
    table = measurement_table(n, seed=1)
    pts = Points(np.c_[table["y"], table["x"]], table["class"], table["score"])
    tracemalloc.start()
    try:
        write_points_outputs(tmp_path, "s", pts, parquet=False, table=table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    feats = json.loads((tmp_path / "geojson" / "s.geojson").read_text())["features"]
    assert len(feats) == n and "Solidity" not in feats[0]["properties"]["measurements"]
    assert feats[1]["properties"]["measurements"]["Solidity"] == pytest.approx(table["solidity"][1])
    assert peak < 4e6, f"{peak / 1e6:.1f} MB traced while writing {n} rows"
