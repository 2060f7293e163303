"""DeepDistance pieces: the cascaded net, connected-component decoding and the §4.7
marker-controlled region growing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.draw import disk

from cellmaps.io import mask_centroids
from cellmaps.metrics import aji
from cellmaps.nets import CascadedUNet, HeadSpec
from cellmaps.postprocess import (
    component_centroids,
    grow_markers,
    majority_filter,
    markers_from_detections,
    region_growing_segmentation,
)
from cellmaps.targets import outer_distance

torch.set_num_threads(2)


def test_cascade_feeds_the_first_posterior_to_the_second_net_and_trains_end_to_end():
    torch.manual_seed(0)
    net = CascadedUNet(
        3, [HeadSpec("cells", 1, "sigmoid"), HeadSpec("inner", 1, "relu")], base=4, depth=2
    )
    x = torch.randn(2, 3, 37, 45)
    net.eval()  # no dropout: the two paths must agree exactly
    with torch.no_grad():
        out = net(x)
        again = net.second(torch.sigmoid(out["cells"]))["inner"]
    assert out["cells"].shape == out["inner"].shape == (2, 1, 37, 45)
    assert torch.allclose(again, out["inner"])
    net.train()
    net(x)["inner"].sum().backward()  # the second task's loss reaches the first net
    assert all(p.grad is not None for p in net.first.parameters())
    assert sum(float(p.grad.abs().sum()) for p in net.first.parameters()) > 0


def test_component_centroids_split_by_boundary_and_drop_small_ones():
    cells = np.zeros((40, 60))
    cells[5:15, 5:35] = 1.0  # one blob, split in two by a boundary column
    cells[30:32, 50:52] = 1.0  # 4-px speck
    boundary = np.zeros_like(cells)
    boundary[:, 20] = 0.9
    coords, areas = component_centroids(cells, boundary, min_area=5)
    assert areas.tolist() == [150, 140]
    assert np.allclose(coords, [[9.5, 12.0], [9.5, 27.5]])
    coords, areas = component_centroids(cells, boundary, min_area=1)
    assert areas.tolist() == [150, 140, 4]
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        component_centroids(cells, boundary[:, :10], 1)


def touching_discs():
    mask = np.zeros((160, 200), np.int32)
    for i, (r, c) in enumerate([(50, 50), (50, 88), (110, 120), (90, 165)], start=1):
        rr, cc = disk((r, c), 22, shape=mask.shape)
        mask[rr, cc] = i
    return mask


def test_markers_widen_on_outer_distance_and_small_ones_are_dropped():
    mask = touching_discs()
    outer = outer_distance(mask)
    cent, ids = mask_centroids(mask)
    markers = markers_from_detections(cent, outer, 0.5, min_area=50)
    for k, i in enumerate(ids, start=1):  # each marker stays inside its own cell
        assert (markers == k).sum() >= 50 and np.all(mask[markers == k] == i)
    tiny = markers_from_detections(cent, outer, 0.5, min_area=10_000)
    assert not tiny.any()


def test_region_growing_recovers_touching_cells_from_perfect_maps():
    mask = touching_discs()
    outer = outer_distance(mask)
    cent, _ = mask_centroids(mask)
    seg = region_growing_segmentation(cent, outer, (mask > 0).astype(float))
    assert seg.max() == 4 and aji(mask, seg) > 0.85
    # growth never leaves the foreground and each grown cell stays in its true cell
    grown = grow_markers(markers_from_detections(cent, outer), mask > 0, outer)
    assert not grown[mask == 0].any()
    for k in range(1, 5):
        vals, counts = np.unique(mask[grown == k], return_counts=True)
        assert counts.max() / counts.sum() > 0.95


def test_growth_skips_a_marker_whose_rim_is_mostly_background():
    fg = np.zeros((30, 30), bool)
    fg[10:20, 10:20] = True
    fg[15, 20:28] = True  # a one-pixel-wide spur
    markers = np.zeros((30, 30), np.int32)
    markers[14:16, 14:16] = 1
    grown = grow_markers(markers, fg, np.ones((30, 30)))
    assert (grown[10:20, 10:20] == 1).all()
    assert not grown[15, 21:].any()  # rim of the full square is mostly background: stop


def test_majority_filter_removes_spurs_and_fills_holes():
    lab = np.zeros((20, 20), np.int32)
    lab[5:15, 5:15] = 1
    lab[9, 9] = 0  # hole
    lab[2, 10] = 1  # isolated speck
    out = majority_filter(lab, 5)
    assert out[9, 9] == 1 and out[2, 10] == 0
    assert (out[6:14, 6:14] == 1).all() and out[0, 0] == 0


def test_predict_masks_writes_instance_masks_evaluate_reads(tmp_path, capsys, monkeypatch):
    """`cellmaps predict --masks` on a (briefly trained) deepdistance-extended model writes
    consecutive instance masks that `cellmaps evaluate` scores; a model without the outer
    and cell tasks is refused by name."""
    import tifffile
    from PIL import Image

    from cellmaps.cli import main
    from cellmaps.recipes import load_recipe
    from cellmaps.training import train

    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:64, :64]
    for k, centres in enumerate([[(16, 16), (16, 40), (44, 30)], [(20, 20), (44, 44)]]):
        mask = np.zeros((64, 64), np.uint16)
        for i, (r, c) in enumerate(centres, start=1):
            mask[(yy - r) ** 2 + (xx - c) ** 2 <= 81] = i
        Image.fromarray(np.where(mask > 0, 200, 40).astype(np.uint8)).save(
            root / "images" / f"m{k}.png"
        )
        tifffile.imwrite(root / "masks" / f"m{k}.tif", mask)
    r = load_recipe("deepdistance-extended")
    r["net"].update(base=4, depth=2)
    r["training"].update(iterations=2, batch=1, crop=32, tile_stride=16, precision="fp32")
    r["inference"].update(tile=64, stride=32)
    train(r, [(str(root), None, 1.0)], tmp_path / "dd.safetensors", progress=False)
    out = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(tmp_path / "dd.safetensors"),
                str(root),
                "--out",
                str(out),
                "--masks",
                "--quiet",
            ]
        )
        == 0
    )
    for k in range(2):
        m = tifffile.imread(out / "masks" / f"m{k}.tif")
        ids = np.unique(m[m > 0])
        assert m.shape == (64, 64) and np.array_equal(ids, np.arange(1, len(ids) + 1))
    assert main(["evaluate", "--truth", str(root), "--pred", str(out), "--protocol", "iou"]) == 0
    assert "aji" in capsys.readouterr().out.lower()
    # the same command with the net's maps replaced by ideal ones (the DeepDistance targets of
    # the discs the image shows) on cells of 20 px radius (region growing works in image
    # pixels: its markers need 50 px): every cell comes back as one instance, AJI above 0.9
    import json

    from skimage.measure import label

    from cellmaps.model import Model
    from cellmaps.targets import inner_distance, outer_distance

    def ideal_maps(self, image, *_a, **_k):
        grey = np.asarray(image, np.float32)  # as stored or normalised, (H, W) or (H, W, 1)
        grey = grey[..., 0] if grey.ndim == 3 else grey
        discs = label(grey > (grey.min() + grey.max()) / 2)
        return {
            "inner": inner_distance(discs, 0.1)[None],
            "outer": outer_distance(discs)[None],
            "cells": (discs > 0).astype(np.float32)[None],
        }

    big = tmp_path / "big"
    for sub in ("images", "masks"):
        (big / sub).mkdir(parents=True)
    yy, xx = np.mgrid[:128, :128]
    for k, centres in enumerate([[(30, 30), (30, 90), (90, 60)], [(40, 40), (90, 90)]]):
        mask = np.zeros((128, 128), np.uint16)
        for i, (r, c) in enumerate(centres, start=1):
            mask[(yy - r) ** 2 + (xx - c) ** 2 <= 400] = i
        Image.fromarray(np.where(mask > 0, 200, 40).astype(np.uint8)).save(
            big / "images" / f"b{k}.png"
        )
        tifffile.imwrite(big / "masks" / f"b{k}.tif", mask)
    briefly_trained = Model.load(tmp_path / "dd.safetensors")  # its h and floor fit its maps
    briefly_trained.decode = briefly_trained.decode.replace(h=0.2, min_score=0.0)
    briefly_trained.save(tmp_path / "dd.safetensors")
    monkeypatch.setattr(Model, "predict_maps", ideal_maps)
    ideal = tmp_path / "ideal"
    argv = ["predict", str(tmp_path / "dd.safetensors"), str(big), "--out", str(ideal)]
    assert main([*argv, "--masks", "--quiet"]) == 0
    for k, n in enumerate((3, 2)):
        assert len(np.unique(tifffile.imread(ideal / "masks" / f"b{k}.tif"))) == n + 1
    # QuPath gets one outline per cell (no points beside them), each enclosing the area of
    # one instance of the mask written beside it (shoelace vs pixel counts)
    from cellmaps.io.geojson import read_geojson

    for k, n in enumerate((3, 2)):
        pts, polys = read_geojson(ideal / "geojson" / f"b{k}.geojson")
        assert len(pts) == 0 and len(polys) == n
        areas = []
        for poly in polys:
            r, c = poly.coords[:, 0], poly.coords[:, 1]
            areas.append(0.5 * abs(np.dot(r, np.roll(c, 1)) - np.dot(c, np.roll(r, 1))))
        pixels = np.bincount(tifffile.imread(ideal / "masks" / f"b{k}.tif").ravel())[1:]
        np.testing.assert_allclose(sorted(areas), sorted(pixels), rtol=0.05)
    report = tmp_path / "ideal.json"
    argv = ["evaluate", "--truth", str(big), "--pred", str(ideal), "--protocol", "iou"]
    assert main([*argv, "--json", str(report), "--quiet"]) == 0
    assert json.loads(report.read_text())["summary"]["aji"] > 0.9
    capsys.readouterr()
    from cellmaps.model import bundled_model_path

    code = main(
        [
            "predict",
            str(bundled_model_path("ki67")),  # a points-only model
            str(root),
            "--out",
            str(tmp_path / "x"),
            "--masks",
            "--quiet",
        ]
    )
    assert code == 2 and "outer_distance" in capsys.readouterr().err
