"""Dataset I/O: formats, round trips, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from cellmaps.errors import CellmapsInputError
from cellmaps.io import (
    Dataset,
    Points,
    image_shape,
    mask_centroids,
    mask_to_polygons,
    normalize_image,
    polygons_to_mask,
    read_geojson,
    read_image,
    read_mask,
    read_points,
    rowcol_to_xy,
    write_geojson,
    write_image,
    write_mask,
    write_points,
    xy_to_rowcol,
)
from tests.conftest import DATASETS, shared_dataset


def test_xy_rowcol_conversion_is_a_swap_and_round_trips():
    xy = np.array([[10.0, 2.0], [3.5, 7.25]])
    rc = xy_to_rowcol(xy)
    assert rc.tolist() == [[2.0, 10.0], [7.25, 3.5]]
    assert np.array_equal(rowcol_to_xy(rc), xy)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [None, 3])
def test_image_round_trip_keeps_pixels_and_normalises_full_range_data_by_dtype_max(
    tmp_path, suffix, dtype, channels
):
    rng = np.random.default_rng(0)
    shape = (7, 9) if channels is None else (7, 9, channels)
    img = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    path = tmp_path / f"im{suffix}"
    write_image(path, img)
    back = read_image(path)
    assert back.dtype == dtype and np.array_equal(back, img)
    assert image_shape(path) == (7, 9)
    norm = normalize_image(back)
    assert norm.dtype == np.float32 and norm.shape == (7, 9, channels or 1)
    assert np.allclose(norm.reshape(shape), img / np.iinfo(dtype).max)


def test_rgba_png_drops_alpha_and_jpeg_reads(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 200, 100, 50
    rgba[..., 3] = np.arange(6, dtype=np.uint8) * 40  # alpha varies: it must not be read
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    la = np.stack([np.full((5, 6), 90, np.uint8), rgba[..., 3]], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_image(tmp_path / "la.png"), la[..., 0])
    Image.fromarray(rgba[..., :3]).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").shape == (5, 6, 3)


def test_ome_tiff_channels_first_are_moved_last(tmp_path):
    data = np.arange(2 * 4 * 5, dtype=np.uint16).reshape(2, 4, 5)
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "CYX"})
    img = read_image(path)
    assert img.shape == (4, 5, 2)
    assert np.array_equal(img[..., 1], data[1])
    assert image_shape(path) == (4, 5)


def test_normalize_rejects_nan_and_bad_shapes():
    with pytest.raises(CellmapsInputError, match="NaN"):
        normalize_image(np.array([[0.0, np.nan]]))
    with pytest.raises(CellmapsInputError, match="expected"):
        normalize_image(np.zeros((2, 2, 2, 2)))


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(CellmapsInputError, match="broken.png.*cannot read image"):
        read_image(bad)
    with pytest.raises(CellmapsInputError, match="nope.tif.*does not exist"):
        read_image(tmp_path / "nope.tif")


def test_points_round_trip_with_scores(tmp_path):
    pts = Points(np.array([[1.5, 2.25], [10.0, 0.0]]), np.array(["a", "b"]), np.array([0.5, 1.0]))
    write_points(tmp_path / "p.csv", pts)
    text = (tmp_path / "p.csv").read_text().splitlines()
    assert text[0] == "x,y,label,score" and text[1].startswith("2.25,1.50,a")
    back = read_points(tmp_path / "p.csv", shape=(20, 20))
    assert np.allclose(back.coords, pts.coords)
    assert back.labels.tolist() == ["a", "b"] and back.scores.tolist() == [0.5, 1.0]


def test_header_only_csv_means_no_points(tmp_path):
    (tmp_path / "e.csv").write_text("x,y,label\n")
    assert len(read_points(tmp_path / "e.csv")) == 0


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "empty file"),
        ("col,row,label\n1,2,a\n", "bad header"),
        ("x,y\n1,2\n", "missing \\['label'\\]"),
        ("x,y,label,colour\n1,2,a,red\n", "unknown \\['colour'\\]"),
        ("x,y,label\n1,nan,a\n", "line 2: y='nan' is not finite"),
        ("x,y,label\n1,2,a\ninf,2,a\n", "line 3: x='inf' is not finite"),
        ("x,y,label\n1,two,a\n", "not a number"),
        ("x,y,label\n1,2\n", "2 fields"),
    ],
)
def test_bad_points_csv_is_refused_with_the_line(tmp_path, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CellmapsInputError, match=f"bad.csv: .*{match}"):
        read_points(path)


def test_points_outside_the_image_are_refused(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x,y,label\n3,4,a\n10,4,a\n")  # x = 10 is outside a width of 10
    assert len(read_points(path, shape=(5, 11))) == 2
    with pytest.raises(
        CellmapsInputError, match="1 point\\(s\\) outside the 5x10 image, first at x=10"
    ):
        read_points(path, shape=(5, 10))


def test_mask_round_trip_and_validation(tmp_path):
    m = np.zeros((6, 7), np.uint16)
    m[1:3, 1:3] = 1
    m[4:6, 2:6] = 300
    write_mask(tmp_path / "m.tif", m)
    assert np.array_equal(read_mask(tmp_path / "m.tif", shape=(6, 7)), m)
    with pytest.raises(
        CellmapsInputError, match="m.tif: mask shape 6x7 does not match image shape 6x8"
    ):
        read_mask(tmp_path / "m.tif", shape=(6, 8))
    tifffile.imwrite(tmp_path / "f.tif", m.astype(np.float32) + 0.5)
    with pytest.raises(CellmapsInputError, match="f.tif: .*non-integer"):
        read_mask(tmp_path / "f.tif")


def test_mask_centroids_are_region_means():
    m = np.zeros((5, 5), np.uint16)
    m[0:2, 0:2] = 7
    m[4, 1:4] = 3
    c, ids = mask_centroids(m)
    assert ids.tolist() == [3, 7]
    assert np.allclose(c, [[4.0, 2.0], [0.5, 0.5]])


def test_polygons_are_simplified_within_half_a_pixel_of_the_pixel_outline():
    from skimage.measure import find_contours

    from cellmaps.io.geojson import polygons_to_mask

    yy, xx = np.mgrid[:64, :64]
    mask = np.zeros((64, 64), np.uint16)
    mask[(yy - 30) ** 2 + ((xx - 28) / 1.4) ** 2 <= 15**2] = 1  # an ellipse, 15 × 21 px
    full = mask_to_polygons(mask, tolerance=0)[0]
    simple = mask_to_polygons(mask)[0]
    contour = find_contours(np.pad(mask == 1, 1).astype(np.float32), 0.5)[0] - 1
    assert len(full.coords) == len(contour)  # tolerance 0: marching squares as it was
    assert len(simple.coords) * 4 < len(full.coords)  # a quarter of the vertices or fewer

    def distance_to_ring(p: np.ndarray, ring: np.ndarray) -> float:
        a, b = ring, np.roll(ring, -1, axis=0)
        t = np.clip(np.sum((p - a) * (b - a), 1) / np.maximum(np.sum((b - a) ** 2, 1), 1e-12), 0, 1)
        return float(np.min(np.hypot(*(a + t[:, None] * (b - a) - p).T)))

    worst = max(distance_to_ring(p, simple.coords) for p in full.coords)
    assert worst <= 0.5 + 1e-9  # the tolerance: no pixel-edge vertex is farther
    back = polygons_to_mask([simple], mask.shape)
    inter, union = np.sum((back > 0) & (mask > 0)), np.sum((back > 0) | (mask > 0))
    assert inter / union > 0.95


def test_geojson_round_trip_points_and_polygons(tmp_path):
    pts = Points(
        np.array([[3.0, 4.0], [10.5, 2.0]]),
        np.array(["positive", "negative"]),
        np.array([0.9, 0.4]),
    )
    mask = np.zeros((40, 40), np.uint16)
    yy, xx = np.mgrid[:40, :40]
    mask[(yy - 12) ** 2 + (xx - 14) ** 2 <= 36] = 1
    mask[25:33, 5:20] = 2
    polys = mask_to_polygons(mask, {1: "tumour", 2: "stroma"})
    path = tmp_path / "out.geojson"
    write_geojson(path, points=pts, polygons=polys)
    data = json.loads(path.read_text())
    feat = data["features"][0]
    assert feat["properties"]["objectType"] == "detection"
    assert feat["properties"]["classification"]["name"] == "positive"
    assert feat["geometry"]["coordinates"] == [4.5, 3.5]  # QuPath: pixel centre at +0.5
    back_pts, back_polys = read_geojson(path)
    assert np.allclose(back_pts.coords, pts.coords)
    assert back_pts.labels.tolist() == ["positive", "negative"]
    assert np.allclose(back_pts.scores, [0.9, 0.4])
    assert [p.label for p in back_polys] == ["tumour", "stroma"]
    raster = polygons_to_mask(back_polys, mask.shape)
    for k in (1, 2):
        inter = np.sum((raster == k) & (mask == k))
        union = np.sum((raster == k) | (mask == k))
        assert inter / union > 0.85


def test_dataset_selects_by_split_and_group_and_refuses_unknown(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "points").mkdir()
    for i in ("a", "b", "c"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        (tmp_path / "points" / f"{i}.csv").write_text("x,y,label\n1,1,cell\n")
    (tmp_path / "splits.csv").write_text("id,split,group\na,train,g1\nb,test,g1\nc,test,g2\n")
    ds = Dataset(tmp_path)
    assert ds.ids() == ["a", "b", "c"]
    assert ds.ids(split="test") == ["b", "c"]
    assert ds.ids(split="test", group="g1") == ["b"]
    with pytest.raises(CellmapsInputError, match="unknown split 'validation'.*'test', 'train'"):
        ds.ids(split="validation")
    with pytest.raises(CellmapsInputError, match="unknown image id 'zz'"):
        ds.points("zz")
    assert ds.points("a").coords.tolist() == [[1.0, 1.0]]
    assert ds.mask("a") is None
    with pytest.raises(CellmapsInputError, match="does not exist"):
        Dataset(tmp_path / "missing")


def test_a_folder_without_splits_csv_gets_a_seeded_train_val_split_and_is_not_written(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "points").mkdir()
    for k in range(11):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / f"i{k:02d}.png")
        if k < 10:  # i10 has no annotation: in neither split
            (tmp_path / "points" / f"i{k:02d}.csv").write_text("x,y,label\n1,1,cell\n")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    ds = Dataset(tmp_path)
    with pytest.warns(UserWarning, match="no splits.csv.*trains on 8 .*validates on 2"):
        train, val = ds.ids("train"), ds.ids("val")
    assert len(val) == 2 and not set(train) & set(val)
    assert sorted(train + val) == [f"i{k:02d}" for k in range(10)]
    with pytest.warns(UserWarning, match="no splits.csv"):
        assert Dataset(tmp_path).ids("val") == val  # seeded: the same split every time
    assert ds.ids() == ds.all_ids and len(ds.ids()) == 11  # no split asked: every image
    with pytest.raises(CellmapsInputError, match="unknown split 'test'"):
        ds.ids("test")  # only train / val are made up
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_atomic_writer_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "p.csv"
    write_points(path, Points(np.array([[1.0, 1.0]])))
    before = path.read_text()
    with pytest.raises(ValueError):
        write_points(path, Points(np.array([[2.0, 2.0]]), np.array(["bad,label"])))
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


@pytest.mark.parametrize("name", DATASETS)
def test_every_shared_dataset_reads_cleanly(name):
    ds = Dataset(shared_dataset(name))
    ids = ds.ids()
    assert ids and set(ds.splits) == set(ids)
    for image_id in ids[:3] + ids[-2:]:
        shape = ds.shape(image_id)
        pts = ds.points(image_id)  # also checks every point is inside the image
        assert pts is not None and len(pts) > 0
        mask = ds.mask(image_id)
        if mask is not None:
            assert mask.shape == shape
            # README: one point per instance, at the mask centroid
            c, _ = mask_centroids(mask)
            assert len(c) == len(pts)


def test_atomic_writes_get_normal_file_permissions(tmp_path):
    import os

    write_points(tmp_path / "p.csv", Points(np.array([[1.0, 1.0]])))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "p.csv").stat().st_mode & 0o777 == 0o666 & ~mask


# -- intensity: the bit-depth rule -------------------------------------------------------------
@pytest.mark.parametrize(
    ("maximum", "is_float", "expected"),
    [
        (255, False, 255.0),
        (0, False, 255.0),
        (256, False, 1023.0),
        (4095, False, 4095.0),
        (4096, False, 16383.0),
        (65535, False, 65535.0),
        (70000, False, 131071.0),
        (1.0, True, 1.0),
        (0.2, True, 1.0),
        (1.5, True, 255.0),
        (200.0, True, 255.0),
        (3000.0, True, 4095.0),
    ],
)
def test_intensity_range_is_the_smallest_bit_depth_holding_the_maximum(maximum, is_float, expected):
    from cellmaps.io.images import intensity_range

    assert intensity_range(maximum, is_float) == expected


def same_image_in_five_containers(img8: np.ndarray) -> dict[str, np.ndarray]:
    """An 8-bit image as a camera or an export might store it."""
    v = img8.astype(np.float64)
    return {
        "uint8": img8,
        "8-bit in uint16": img8.astype(np.uint16),
        "12-bit in uint16": np.rint(v * 4095 / 255).astype(np.uint16),
        "uint16 full range": (v * 257).astype(np.uint16),
        "float 0-1": (v / 255).astype(np.float32),
        "float 0-255": v.astype(np.float32),
    }


def test_normalisation_does_not_depend_on_the_container_type():
    rng = np.random.default_rng(0)
    img8 = rng.integers(0, 256, (16, 20, 3)).astype(np.uint8)
    img8[0, 0] = 255  # the data's full range is used, as in a real exposure
    want = img8 / 255.0
    for name, img in same_image_in_five_containers(img8).items():
        got = normalize_image(img)[..., :3]
        assert np.abs(got - want).max() <= 0.5 / 4095 + 1e-6, name


def test_detections_are_the_same_whatever_the_container_type(crchisto):
    from cellmaps.io import Dataset
    from cellmaps.model import Model, bundled_model_path

    model = Model.load(bundled_model_path("default"))
    # at the training images' scale: the per-image scale estimate (the model's default, auto)
    # moves with the 12-bit rounding of one container by a fraction of a pixel
    size = model.training["data_object_size"]
    img8 = Dataset(crchisto).image("crc_img1")[:192, :192]
    assert img8.dtype == np.uint8 and img8.max() == 255
    ref = model.detect(img8, object_size=size)
    assert len(ref) > 8
    for name, img in same_image_in_five_containers(img8).items():
        got = model.detect(img, object_size=size)
        assert len(got) == len(ref), name
        assert np.abs(got.coords - ref.coords).max() <= 1.0, name


def test_strips_of_a_large_image_share_one_intensity_range():
    """A 12-bit image whose top half is dim (max < 256) decoded in strips gives the same
    detections as the whole map: the image is normalised once, not strip by strip (the dim
    strips would otherwise be taken as 8-bit data and brightened 16×)."""
    from scipy import ndimage

    from cellmaps.model import Model
    from cellmaps.recipes import load_recipe

    r = load_recipe("micronet")
    r["net"].update(base=4, depth=2)
    m = Model(r, 1, [0.1], [0.2])
    m.decode = m.decode.replace(xi=0.3, min_distance=3)
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((600, 80)), 2)
    field = (field - field.min()) / np.ptp(field)
    img = np.where(np.arange(600)[:, None] < 300, field * 200, field * 4000).astype(np.uint16)
    m.forward = lambda x: {"proximity": x[:, :1]}  # a pointwise "net": tiling is exact
    whole = m.decode_maps({"proximity": m.prepare(img)[:1]})
    strips = m.detect(img, strip=128, tile=32, stride=16)  # decoded 128 rows at a time
    assert len(whole) > 20
    assert np.array_equal(np.sort(whole.coords, 0), np.sort(strips.coords, 0))


def test_percentile_stretch_maps_each_channels_own_percentiles_to_0_and_1():
    from cellmaps.io.scale import percentile_stretch

    img = np.zeros((10, 100, 3), np.float32)
    img[..., 0] = np.arange(1000).reshape(10, 100)  # 0..999
    img[..., 1] = 0.5  # flat
    img[..., 2] = np.arange(1000).reshape(10, 100)[::-1] * 0.001 + 0.2
    out = percentile_stretch(img, 1.0, 99.8)
    # numpy's linear percentile of 0..999: p1 = 0.01·999 = 9.99, p99.8 = 0.998·999 = 997.002
    lo, hi = 9.99, 997.002
    assert np.allclose(out[..., 0], (img[..., 0] - lo) / (hi - lo), atol=1e-5)
    assert np.all(out[..., 1] == 0.0)  # a flat channel becomes 0, not NaN
    assert np.allclose(
        out[..., 2], (img[..., 2] - (0.2 + lo * 1e-3)) / ((hi - lo) * 1e-3), atol=1e-4
    )


def test_percentile_intensity_makes_a_dim_copy_give_the_same_input_and_detections():
    """A model trained with ``training.intensity: percentile`` sees a dim acquisition (the
    same image at a quarter of the brightness, plus an offset) as the bright one, on the
    whole-image path (``prepare``) and on the streamed detection path; with the default
    ``range`` it does not."""
    from scipy import ndimage

    from cellmaps.model import Model
    from cellmaps.recipes import load_recipe, validate_recipe

    rng = np.random.default_rng(1)
    spots = np.zeros((96, 96))
    spots[rng.integers(5, 91, 12), rng.integers(5, 91, 12)] = 1.0
    bright = ndimage.gaussian_filter(spots, 2.5) * 40 + 0.02 * rng.random((96, 96))
    bright = np.clip(bright, 0, 1).astype(np.float32)
    dim = (0.25 * bright + 0.05).astype(np.float32)
    r = load_recipe("micronet")
    r["training"]["intensity"] = "percentile"
    m = Model(validate_recipe(r), 1, [0.3], [0.2])
    m.forward = lambda x: {"proximity": x[:, :1]}  # a pointwise "net"
    m.decode = m.decode.replace(xi=0.3, min_distance=3, min_score=0.0)
    assert np.allclose(m.prepare(bright), m.prepare(dim), atol=1e-4)
    a, b = m.detect(bright, tile=32, stride=16), m.detect(dim, tile=32, stride=16)
    assert len(a) >= 8 and np.array_equal(a.coords, b.coords)
    m.recipe["training"]["intensity"] = "range"
    assert np.abs(m.prepare(bright) - m.prepare(dim)).max() > 0.5


def test_recipe_intensity_must_be_a_known_mode():
    from cellmaps.recipes import load_recipe, validate_recipe

    r = load_recipe("unet")
    r["training"]["intensity"] = "zscore"
    with pytest.raises(CellmapsInputError, match="intensity"):
        validate_recipe(r)


def test_binary_mask_is_split_into_connected_instances_with_a_warning(tmp_path):
    semantic = np.zeros((30, 40), np.uint8)
    semantic[2:8, 2:8] = 255
    semantic[12:20, 20:30] = 255
    semantic[25:28, 5:9] = 255
    write_image(tmp_path / "m.png", semantic)
    with pytest.warns(UserWarning, match="m.png: binary mask .* 3 instances"):
        mask = read_mask(tmp_path / "m.png")
    assert sorted(np.unique(mask).tolist()) == [0, 1, 2, 3]
    assert np.array_equal(mask > 0, semantic > 0)
    assert len(np.unique(mask[2:8, 2:8])) == 1 and mask[3, 3] != mask[15, 25]
    # a true instance mask, and a single object, are read as they are (no warning)
    instances = np.zeros((30, 40), np.uint16)  # two objects share label 7: still labels
    instances[2:8, 2:8], instances[12:20, 20:30], instances[25:28, 5:9] = 7, 2, 7
    write_mask(tmp_path / "i.tif", instances)
    one = np.zeros((30, 40), np.uint8)
    one[4:9, 4:9] = 255
    write_image(tmp_path / "one.png", one)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(read_mask(tmp_path / "i.tif"), instances)
        assert np.array_equal(read_mask(tmp_path / "one.png"), one)
