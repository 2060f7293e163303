"""Whole slides: lazy region reading, streamed tiled inference and decoding in blocks, tissue
detection, slide outputs, and batches on a Dask LocalCluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from cellmaps.errors import CellmapsInputError
from cellmaps.inference import TiledInferer, stream
from cellmaps.inference.slides import detect_slide, row_bands, tissue_mask
from cellmaps.io.slides import LazyImage, SlideSource, choose_level
from cellmaps.model import Model
from cellmaps.postprocess.decode import local_contrast
from cellmaps.recipes import load_recipe, validate_recipe


# -- helpers -----------------------------------------------------------------------------------
def blob_image(shape=(3000, 3000), n=4000, seed=0) -> np.ndarray:
    """uint8 RGB: Gaussian blobs (σ 2.5–4 px) of random brightness on a dark background."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.zeros(shape, np.float32)
    rr = rng.integers(0, shape[0], n)
    cc = rng.integers(0, shape[1], n)
    img[rr, cc] = rng.uniform(0.5, 1.0, n)
    img = ndimage.gaussian_filter(img, 3.0)
    img = 40 + 200 * img / img.max()
    return np.repeat(img.astype(np.uint8)[..., None], 3, axis=2)


class PointwiseNet(torch.nn.Module):
    """A 'net' whose outputs at a pixel depend on that pixel only (so any tiling of the
    image gives the same maps): each head is a fixed function of input channel 0."""

    def __init__(self, heads: dict) -> None:
        super().__init__()
        self.heads = heads

    def forward(self, x):
        x0 = x[:, :1].float()
        return {name: fn(x0) for name, fn in self.heads.items()}


# the standardised input of blob_image: background (40) ≈ −1.7, brightest blob (240) ≈ +2.2
HEADS = {
    "micronet": {"proximity": lambda x: x + 2.0},
    "kinet": {
        "proximity": lambda x: torch.cat([x + 2.0, 0.5 * (x + 2.0) ** 2, 0.8 * x + 1.7], 1),
        "roi": lambda x: torch.cat([x, -x], 1),
    },
    "deepdistance": {"inner": lambda x: x + 1.0, "outer": lambda x: 1.0 - x},
    "micronet-outlines": {"proximity": lambda x: x + 2.0, "cells": lambda x: 8 * (x + 1.45)},
    "deepdistance-extended": {
        "inner": lambda x: x + 1.3,
        "outer": lambda x: 2 * (x + 1.3),
        "cells": lambda x: 8 * (x + 1.45),
    },
    "multi-classification-boundary": {
        "cells": lambda x: 8 * (x + 0.5),
        "boundary": lambda x: 8 * (0.3 - (x + 0.5).abs()),
    },
}


# the default H&E model's shape: MicroNet's proximity head + a cell-pixel head, outlines by a
# watershed from the detections (decode.segment: seeded)
CELLS_TASK = {"name": "cells", "target": "foreground", "channels": 1, "activation": "sigmoid",
              "loss": "weighted_bce"}  # fmt: skip


def pointwise_model(recipe: str) -> Model:
    if recipe == "micronet-outlines":
        r = load_recipe("micronet")
        r["tasks"].append(dict(CELLS_TASK))
        r["decode"]["segment"] = "seeded"
    else:
        r = load_recipe(recipe)
    r["inference"].update(tile=128, stride=112, batch=8)
    r["training"]["precision"] = "fp32"
    if recipe == "kinet":
        for t in r["tasks"]:
            if t["name"] == "proximity":
                t["channels"] = 3
    m = Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3, training={"label": "nucleus"})
    m.net = PointwiseNet(HEADS[recipe])
    m.decode = m.decode.replace(min_score=0.0)
    if recipe == "kinet":
        m.training["classes"] = ["a", "b", "c"]
    return m


def whole_map_detections(model: Model, image: np.ndarray):
    """The reference: every head predicted on the whole image at once, decoded as one map by
    the model's decoder, flat-region rule on the whole image."""
    from cellmaps.io.images import normalize_image

    maps = TiledInferer.from_recipe(model.recipe).predict(model.forward, model.prepare(image))
    pts = model.decode_maps(maps)
    window = 2 * max(3, round(model.train_radius or 3)) + 1
    flat = local_contrast(normalize_image(image), window, pts.coords)
    return pts.subset(flat >= model.decode["min_contrast"])


def write_pyramid(path, image: np.ndarray, levels: int = 3) -> None:
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(image, tile=(256, 256), subifds=levels - 1, photometric="rgb")
        for k in range(1, levels):
            tw.write(image[:: 2**k, :: 2**k], tile=(256, 256), subfiletype=1, photometric="rgb")


def sorted_points(pts):
    order = np.lexsort((pts.coords[:, 1], pts.coords[:, 0]))
    return pts.coords[order], pts.labels[order].astype(str), pts.scores[order]


def assert_same_points(a, b) -> None:
    """The same detections: labels and scores equal, coordinates equal up to the rounding of
    a plateau's centroid computed in another block's frame (1e-9 px)."""
    (ca, la, sa), (cb, lb, sb) = sorted_points(a), sorted_points(b)
    assert ca.shape == cb.shape and np.allclose(ca, cb, rtol=0, atol=1e-9)
    assert np.array_equal(la, lb) and np.array_equal(sa, sb)


@pytest.fixture(scope="module")
def blob_slide(tmp_path_factory):
    image = blob_image()
    path = tmp_path_factory.mktemp("slide") / "blobs.tif"
    write_pyramid(path, image)
    return path, image


# -- tiling ------------------------------------------------------------------------------------
def test_any_block_of_the_stream_is_bit_identical_to_the_whole_image():
    from cellmaps.nets import HeadSpec, build_net

    torch.manual_seed(0)
    net = build_net("unet", 3, [HeadSpec("p", 2)], base=4, depth=2, dropout=0.0).eval()

    def forward(x):
        with torch.no_grad():
            return net(x)

    img = np.random.default_rng(0).normal(size=(3, 160, 176)).astype(np.float32)
    # batch 1: this tiny net's output for a tile changes in the last bit with the batch size
    inf = TiledInferer(tile=96, stride=48, batch=1, trim=24)
    whole = inf.predict(forward, img)["p"]
    direct = forward(torch.from_numpy(img[None]))["p"][0].numpy()  # the net on the whole image
    assert np.allclose(whole[:, 24:-24, 24:-24], direct[:, 24:-24, 24:-24], atol=1e-5)
    read = lambda i0, i1, j0, j1: img[:, i0:i1, j0:j1]  # noqa: E731
    for rows, cols in [((0, 150), (0, 170)), ((37, 101), (0, 170)), ((0, 150), (55, 123)),
                       ((140, 150), (3, 9))]:  # fmt: skip
        bands = list(inf.stream(forward, read, (160, 176), rows, cols=cols))
        assert [b[0] for b in bands][0] == rows[0]
        got = np.concatenate([b[1]["p"] for b in bands], 1)
        assert np.array_equal(got, whole[:, rows[0] : rows[1], cols[0] : cols[1]])
    # tiles left out get no weight: all skipped → zero maps of the right shape
    skipped = list(inf.stream(forward, read, (160, 176), skip_tile=lambda *a: True))
    assert np.concatenate([b[1]["p"] for b in skipped], 1).shape == (2, 160, 176)
    assert all(not b[1]["p"].any() for b in skipped)


# -- lazy reading --------------------------------------------------------------------------------
def test_lazy_image_reads_regions_of_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    write_pyramid(tmp_path / "pyr.tif", rgb)
    tifffile.imwrite(tmp_path / "strips.tif", rgb, photometric="rgb", rowsperstrip=7)
    chw = rng.integers(0, 4096, (2, 120, 90), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ome.ome.tif", chw, metadata={"axes": "CYX",
                     "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})  # fmt: skip
    zyx = rng.integers(0, 256, (4, 50, 60), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "z.tif", zyx, imagej=True, metadata={"axes": "ZYX"})
    with LazyImage(tmp_path / "pyr.tif") as im:
        assert im.levels == [(300, 260), (150, 130), (75, 65)] and im.channels == 3
        assert np.array_equal(im.read(17, 233, 5, 201), rgb[17:233, 5:201])
        assert np.array_equal(im.read(3, 40, level=1), rgb[::2, ::2][3:40])
    with LazyImage(tmp_path / "strips.tif") as im:
        assert np.array_equal(im.read(10, 11, 0, 260), rgb[10:11])
    with LazyImage(tmp_path / "ome.ome.tif") as im:
        assert im.channels == 2 and im.pixel_size == pytest.approx(0.5)
        assert np.array_equal(im.read(5, 50, 7, 80), chw[:, 5:50, 7:80].transpose(1, 2, 0))
        assert im.maximum() == chw.max()
    with LazyImage(tmp_path / "z.tif") as im:  # z-stacks are max-projected
        assert np.array_equal(im.read(0, 50)[..., 0], zyx.max(0))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "pyr.tif").read_bytes()[:5000])
    with pytest.raises(CellmapsInputError, match="cut.tif"):
        with LazyImage(tmp_path / "cut.tif") as im:
            im.read(0, 300)
    t = rng.integers(0, 256, (3, 40, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "t.tif", t, imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(CellmapsInputError, match="T axis"):
        LazyImage(tmp_path / "t.tif")


def test_pyramid_level_is_the_coarsest_with_enough_resolution():
    levels = [(4000, 4000), (2000, 2000), (1000, 1000)]
    assert choose_level(levels, 1.0) == (0, 1.0)
    assert choose_level(levels, 0.5) == (1, 1.0)
    level, rest = choose_level(levels, 0.3)
    assert level == 1 and rest == pytest.approx(0.6)
    assert choose_level(levels, 0.1) == (2, pytest.approx(0.4))


def test_resampled_blocks_equal_the_whole_resampled_level(tmp_path):
    from cellmaps.io.scale import rescale_image

    img = blob_image((400, 330), n=200)
    write_pyramid(tmp_path / "s.tif", img, levels=1)
    with LazyImage(tmp_path / "s.tif") as im:
        for factor in (0.3, 0.62, 1.37):
            src = SlideSource(im, 0, factor)
            whole = src(0, src.shape[0], 0, src.shape[1])
            assert whole.shape[:2] == src.shape
            h, w = src.shape
            for i0, i1, j0, j1 in [(0, h // 4, 0, w // 5), (h // 3, h // 2, w // 7, w // 2),
                                   (h - 5, h, 3, w)]:  # fmt: skip
                assert np.array_equal(src(i0, i1, j0, j1), whole[i0:i1, j0:j1])
            # and close to scikit-image's resize of the whole image (same pixel centres)
            ref = rescale_image(img.astype(np.float32) / 255, factor)
            assert np.abs(ref[8:-8, 8:-8] - whole[8:-8, 8:-8]).mean() < 0.01


# -- streamed decoding ---------------------------------------------------------------------------
DECODERS = ["micronet", "kinet", "deepdistance", "multi-classification-boundary"]


@pytest.mark.parametrize("recipe", DECODERS)
def test_lazy_blocks_give_the_whole_map_detections_for_every_decoder(
    recipe, blob_slide, monkeypatch
):
    """A 3000² image read lazily and cut into blocks (column strips of 700, decoded 300 rows
    at a time, row bands of 3 workers) gives exactly the detections of the whole map."""
    path, image = blob_slide
    model = pointwise_model(recipe)
    want = whole_map_detections(model, image)
    assert len(want) > 150
    monkeypatch.setattr(stream, "STRIP_WIDTH", 700)
    monkeypatch.setattr(stream, "DECODE_CHUNK", 300)
    got, info = detect_slide(model, path, tissue=False)
    assert info["level"] == 0 and info["skipped_tiles"] == 0
    assert_same_points(want, got)
    # row bands streamed on their own (what Dask workers do) merge to the same result
    from cellmaps.inference.slides import band_candidates, plan_slide
    from cellmaps.inference.stream import Candidates, finish_candidates

    plan = plan_slide(model, path, tissue=False)
    found = Candidates()
    for cols in stream.column_strips(3000, 1100):
        for band in row_bands(3000, 3):
            found.merge(band_candidates(model, plan, band, False, cols))
    assert_same_points(want, finish_candidates(model, found))


@pytest.mark.parametrize("recipe", DECODERS)
def test_an_object_across_a_tile_corner_and_block_seams_is_one_object(recipe, monkeypatch):
    from scipy import ndimage

    inf = TiledInferer(tile=128, stride=112)
    corner = inf.stride * 3 - inf.margin  # an image position where four tiles meet
    img = np.zeros((700, 700), np.float32)
    img[corner, corner] = 1
    img = ndimage.gaussian_filter(img, 4.0)
    img = np.repeat((40 + 200 * img / img.max()).astype(np.uint8)[..., None], 3, axis=2)
    model = pointwise_model(recipe)
    monkeypatch.setattr(stream, "STRIP_WIDTH", corner)  # a strip edge through the object
    pts = model.detect(img, strip=corner)  # and a decoding seam
    assert len(pts) == 1
    assert np.allclose(pts.coords[0], [corner, corner], atol=1.5)


def canonical_labels(mask: np.ndarray) -> np.ndarray:
    """The same partition with each object numbered by its first pixel in raster order."""
    flat = mask.ravel()
    ids = np.unique(flat[flat > 0])
    first = np.array([np.flatnonzero(flat == i)[0] for i in ids])
    lut = np.zeros(int(mask.max()) + 1, np.int64)
    lut[ids] = np.argsort(np.argsort(first)) + 1
    return lut[mask]


@pytest.mark.parametrize("recipe", ["deepdistance-extended", "micronet-outlines"])
def test_slide_masks_equal_whole_image_masks_across_block_seams(recipe, tmp_path, monkeypatch):
    """Region growing and the seeded watershed, block by block, give the whole image's
    objects: none split or lost at a seam, ids unique."""
    from cellmaps.inference.slides import segment_slide
    from cellmaps.model import segment_image

    image = blob_image((900, 1000), n=1500, seed=3)
    write_pyramid(tmp_path / "s.tif", image, levels=1)
    model = pointwise_model(recipe)
    pts_whole, whole = segment_image(model, image)
    monkeypatch.setattr(stream, "STRIP_WIDTH", 350)
    monkeypatch.setattr(stream, "DECODE_CHUNK", 200)
    pts, info = segment_slide(model, tmp_path / "s.tif", tmp_path / "m.tif", tissue=False)
    mask = tifffile.imread(tmp_path / "m.tif")
    assert mask.shape == whole.shape and info["mask_shape"] == list(whole.shape)
    assert whole.max() > 150
    assert len(np.unique(mask)) - 1 == whole.max()  # ids unique, none split or lost
    assert np.array_equal(canonical_labels(mask), canonical_labels(whole))
    assert_same_points(pts, pts_whole)
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:  # tiled label image
        assert tif.pages[0].is_tiled


def test_predict_writes_slide_masks_into_a_new_output_folder(tmp_path):
    """`cellmaps predict MODEL slide.tif --masks` on a slide read by region, into a folder
    that does not exist yet: masks/<id>.tif is written (its masks/ folder made first; it
    used to fail with 'No such file or directory'), with the objects of the whole image."""
    from cellmaps.model import segment_image
    from cellmaps.predict import predict_paths

    image = blob_image((300, 340), n=120, seed=5)
    write_pyramid(tmp_path / "s.tif", image, levels=1)
    model = pointwise_model("deepdistance-extended")
    out = tmp_path / "new" / "pred"
    predict_paths(model, [tmp_path / "s.tif"], out, masks=True, stream_above=1, tissue=False,
                  progress=False)  # fmt: skip
    mask = tifffile.imread(out / "masks" / "s.tif")
    whole = segment_image(model, image)[1]
    assert whole.max() > 20
    assert np.array_equal(canonical_labels(mask), canonical_labels(whole))


# -- tissue --------------------------------------------------------------------------------------
def test_tissue_mask_finds_stained_tissue_on_glass():
    rng = np.random.default_rng(0)
    glass = np.full((200, 300, 3), 235, np.uint8) + rng.integers(0, 4, (200, 300, 3)).astype(
        np.uint8
    )
    slide = glass.copy()
    slide[50:150, 100:250] = [200, 120, 170]  # pink tissue (H&E eosin)
    slide[80:100, 150:170] = [90, 60, 140]  # a dark nucleus cluster
    mask = tissue_mask(slide)
    assert mask[55:145, 105:245].all()
    assert not mask[:40].any() and not mask[:, :90].any()
    assert not tissue_mask(glass).any()  # a blank slide has no tissue
    assert not tissue_mask(np.zeros((50, 50, 3), np.uint8)).any()
    assert tissue_mask(slide[50:150, 100:250]).all()  # all tissue: nothing dropped


def test_background_tiles_are_skipped_and_detections_kept(tmp_path):
    model = pointwise_model("micronet")
    v = blob_image((1200, 1200), n=300)[..., :1].astype(np.float32) / 255
    # stained tissue with blobs brighter in red (what this pointwise 'net' looks at)
    pink, red = np.array([170, 120, 160]), np.array([250, 60, 150])
    image = (pink * (1 - v) + red * v).astype(np.uint8)
    image[:, 600:] = [236, 234, 238]  # the right half is glass
    model.decode = model.decode.replace(
        xi=0.0
    )  # ξ·max would depend on the glass, which is bright in red
    write_pyramid(tmp_path / "half.tif", image)
    all_tiles, _ = detect_slide(model, tmp_path / "half.tif", tissue=False)
    tissue, info = detect_slide(model, tmp_path / "half.tif", tissue=True)
    assert 0.3 < info["skipped_tiles"] < 0.55
    left = all_tiles.subset(all_tiles.coords[:, 1] < 590)
    assert len(left) > 50
    assert_same_points(left, tissue.subset(tissue.coords[:, 1] < 590))
    assert tissue.coords[:, 1].max() < 610  # none on the glass


# -- the command ---------------------------------------------------------------------------------
def test_predict_on_a_slide_made_of_crchisto_images_finds_their_nuclei(tmp_path, crchisto):
    """End to end with the bundled default model: four crchisto test images placed on glass
    in a pyramidal TIFF, read by region (--stream-above 1); F1 against their points."""
    from cellmaps.cli import main
    from cellmaps.io import Dataset
    from cellmaps.io.points import read_points
    from cellmaps.metrics.matching import match_points

    ds = Dataset(crchisto)
    ids = ds.ids("test")[:4]
    slide = np.full((2000, 2000, 3), [236, 234, 238], np.uint8)
    truth = []
    for k, i in enumerate(ids):
        img = ds.image(i)[..., :3]
        r0, c0 = 300 + 900 * (k // 2), 300 + 900 * (k % 2)
        slide[r0 : r0 + img.shape[0], c0 : c0 + img.shape[1]] = img
        truth.append(ds.points(i).coords + [r0, c0])
    truth = np.concatenate(truth)
    write_pyramid(tmp_path / "slide.tif", slide)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "slide.tif"), "--out", str(out), "--stream-above", "1"]
    # 256-px tiles, so some tiles lie wholly on the 300-px glass margin and are skipped
    argv += ["--tile", "256", "--stride", "192"]
    assert main([*argv, "--parquet", "--quiet"]) == 0
    pts = read_points(out / "points" / "slide.csv")
    m = match_points(truth, pts.coords, 6.0)
    f1 = 2 * m.tp / (len(truth) + len(pts))
    assert f1 >= 0.70, f1
    info = json.loads((out / "slides.json").read_text())["slide"]
    assert info["skipped_tiles"] > 0.1 and info["detections"] == len(pts)
    import pyarrow.parquet as pq

    table = pq.read_table(out / "points" / "slide.parquet").to_pydict()
    xy = pts.coords[:, ::-1]  # (x, y) as the CSV keeps them, to 2 decimals
    assert np.allclose(table["x"], xy[:, 0], atol=0.006)
    assert np.allclose(table["y"], xy[:, 1], atol=0.006)
    from PIL import Image

    with Image.open(out / "overlays" / "slide.png") as im:
        assert im.size == (2000, 2000)  # at most 2048 a side: the slide itself


def test_a_model_that_equalises_histograms_refuses_to_read_by_region(tmp_path, blob_slide):
    path, _ = blob_slide
    model = pointwise_model("micronet")
    model.recipe["training"]["hist_eq"] = True
    with pytest.raises(CellmapsInputError, match="histogram"):
        detect_slide(model, path)


def test_a_model_that_stretches_each_image_by_its_percentiles_refuses_to_read_by_region(
    tmp_path, blob_slide
):
    path, _ = blob_slide
    model = pointwise_model("micronet")
    model.recipe["training"]["intensity"] = "percentile"
    with pytest.raises(CellmapsInputError, match="percentiles"):
        detect_slide(model, path)


# -- Dask ----------------------------------------------------------------------------------------
class ShiftNet(torch.nn.Module):
    """A pointwise 'net' that Dask can send to its workers (defined at module level)."""

    def forward(self, x):
        return {"proximity": x[:, :1].float() + 2.0}


def tiny_net_model() -> Model:
    r = load_recipe("micronet")
    r["inference"].update(tile=96, stride=80)
    r["training"]["precision"] = "fp32"
    r["decode"].update(xi=0.3, min_score=0.0)
    m = Model(validate_recipe(r), 3, [0.5] * 3, [0.2] * 3, training={"label": "nucleus"})
    m.net = ShiftNet()
    return m


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed")
    from cellmaps.cluster import cluster_client

    with cluster_client(workers=2) as client:
        yield client


def test_a_slide_on_a_two_worker_cluster_gives_the_serial_detections(tmp_path, cluster):
    image = blob_image((900, 800), n=300)
    write_pyramid(tmp_path / "s.tif", image)
    model = tiny_net_model()
    serial, _ = detect_slide(model, tmp_path / "s.tif", tissue=False)
    parallel, _ = detect_slide(model, tmp_path / "s.tif", tissue=False, client=cluster, bands=3)
    assert len(serial) > 20
    assert_same_points(serial, parallel)


def test_a_batch_on_a_cluster_writes_each_output_once_like_serial(tmp_path, cluster):
    from cellmaps.io import write_image
    from cellmaps.predict import predict_paths

    folder = tmp_path / "images"
    for k in range(5):
        write_image(folder / f"im{k}.png", blob_image((200, 240), n=40, seed=k))
    model = tiny_net_model()
    predict_paths(model, [folder], tmp_path / "serial", progress=False)
    scheduler = cluster.scheduler.address
    predict_paths(model, [folder], tmp_path / "dask", progress=False, scheduler=scheduler)
    for name in ["counts.csv", *[f"points/im{k}.csv" for k in range(5)]]:
        assert (tmp_path / "serial" / name).read_text() == (tmp_path / "dask" / name).read_text()
    # a rerun after a stop (two outputs removed as if never written) redoes only those
    (tmp_path / "dask" / "points" / "im3.csv").unlink()
    (tmp_path / "dask" / "overlays" / "im3.png").unlink()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*.csv")}
    predict_paths(model, [folder], tmp_path / "dask", progress=False, scheduler=scheduler,
                  resume=True)  # fmt: skip
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "dask").rglob("*.csv")}
    changed = {p.name for p in after if before.get(p) != after[p]}
    assert changed == {"im3.csv", "counts.csv"}
    assert not list((tmp_path / "dask").rglob(".*tmp*"))
    files = sorted(p.name for p in (tmp_path / "dask" / "points").iterdir())
    assert files == [f"im{k}.csv" for k in range(5)]


def test_regions_csv_counts_the_detections_inside_each_polygon(tmp_path):
    import csv

    from cellmaps.io import write_image
    from cellmaps.io.geojson import Polygon, write_geojson
    from cellmaps.io.points import read_points
    from cellmaps.predict import predict_paths

    folder, regions = tmp_path / "images", tmp_path / "regions"
    for k in range(2):
        write_image(folder / f"im{k}.png", blob_image((200, 240), n=60, seed=k))

    def box(r0, r1, c0, c1):
        return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0], [r0, c0]], float)

    write_geojson(regions / "im0.geojson", polygons=[
        Polygon(box(-0.5, 99.5, -0.5, 239.5), "tumour"),
        Polygon(box(99.5, 199.5, -0.5, 119.5), "stroma"),
        Polygon(box(10.2, 50.7, 30.1, 90.3), "tumour"),
    ])  # fmt: skip
    model = tiny_net_model()
    predict_paths(model, [folder], tmp_path / "out", progress=False, regions=regions)
    pts = read_points(tmp_path / "out" / "points" / "im0.csv").coords
    r, c = pts[:, 0], pts[:, 1]
    want = [
        ("tumour 1", (r < 99.5).sum()),
        ("stroma 1", ((r > 99.5) & (c < 119.5)).sum()),
        ("tumour 2", ((r > 10.2) & (r < 50.7) & (c > 30.1) & (c < 90.3)).sum()),
    ]
    with open(tmp_path / "out" / "regions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(x["id"], x["region"], int(x["count"])) for x in rows] == [
        ("im0", name, int(n)) for name, n in want
    ]  # im1 has no region file: no rows
    assert 0 < want[0][1] < len(pts)
    (regions / "im1.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(CellmapsInputError, match="no polygon"):
        predict_paths(model, [folder], tmp_path / "out2", progress=False, regions=regions)
    assert not (tmp_path / "out2").exists()


def test_overlays_of_large_images_are_previews_with_the_rings_in_place(tmp_path):
    from PIL import Image

    from cellmaps.io.points import Points
    from cellmaps.outputs import PREVIEW_SIDE, write_overlay

    image = np.zeros((5000, 300, 3), np.uint8)
    pts = Points(np.array([[4000.0, 150.0]]), np.array(["nucleus"], dtype=object), None)
    write_overlay(tmp_path / "o.png", image, pts)
    with Image.open(tmp_path / "o.png") as im:
        ov = np.asarray(im)
    assert ov.shape == (1667, 100, 3) and max(ov.shape[:2]) <= PREVIEW_SIDE
    ring = np.argwhere(ov.sum(-1) > 0)
    assert np.allclose(ring.mean(0), [(4000.5 / 3) - 0.5, (150.5 / 3) - 0.5], atol=1.0)
    small = np.zeros((40, 50, 3), np.uint8)  # small images keep their size
    write_overlay(tmp_path / "s.png", small, pts.subset(np.array([False])))
    with Image.open(tmp_path / "s.png") as im:
        assert im.size == (50, 40)
