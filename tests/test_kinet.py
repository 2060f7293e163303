"""KiNet pieces: weak ROI derivation, the joint loss's indicator 1(y ≠ ∅), per-class
heads sized from the data, and ignoring nuclei of unknown class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cellmaps.errors import CellmapsInputError
from cellmaps.io import Dataset
from cellmaps.recipes import load_recipe
from cellmaps.targets import known_class_weights
from cellmaps.targets.roi import (
    ROI_NON_TUMOUR,
    ROI_TUMOUR,
    tumour_regions_from_points,
    weak_roi_annotation,
)
from cellmaps.training.data import load_training_data, make_batch
from cellmaps.training.fit import Trainer, task_losses
from cellmaps.weak_roi import derive_weak_roi_dataset

torch.set_num_threads(2)


def test_known_class_weights_zero_only_near_unclassified_points():
    pts = np.array([[10.0, 10.0], [30.0, 30.0]])
    w = known_class_weights(pts, ["a", "nucleus"], ["a"], (40, 40), d=5.0)
    rr, cc = np.mgrid[:40, :40]
    near_unknown = np.hypot(rr - 30, cc - 30) <= 5.0
    assert np.array_equal(w == 0, near_unknown)
    assert w[10, 10] == 1.0  # the classified point's neighbourhood is kept


def test_tumour_regions_follow_the_denser_class():
    # a cluster of tumour points on the left, of stroma points on the right
    rng = np.random.default_rng(0)
    left = rng.uniform([20, 10], [80, 40], size=(30, 2))
    right = rng.uniform([20, 60], [80, 90], size=(30, 2))
    pts = np.vstack([left, right, [[50.0, 50.0]]])
    labels = ["epi"] * 30 + ["fib"] * 30 + ["nucleus"]
    t = tumour_regions_from_points(pts, labels, (100, 100), ["epi"], sigma=6.0)
    assert t[50, 25] and not t[50, 75]
    assert not t[2, 2] and not t[98, 50]  # far from every tumour point
    # the unclassified point counts for neither side; no tumour without tumour points
    assert not tumour_regions_from_points(pts[30:], labels[30:], (100, 100), ["epi"]).any()


def test_weak_roi_annotation_is_partial_and_skips_the_border():
    tumour = np.zeros((128, 128), bool)
    tumour[:, :64] = True
    roi = weak_roi_annotation(tumour, np.random.default_rng(0), keep=0.5, block=32, margin=4)
    assert set(np.unique(roi)) <= {0, ROI_TUMOUR, ROI_NON_TUMOUR}
    assert (roi[:, :64] != ROI_NON_TUMOUR).all() and (roi[:, 64:] != ROI_TUMOUR).all()
    # border pixels are tumour column 63; columns within 4 px of it stay unannotated
    assert not roi[:, 59:68].any() and roi[:, 68].any() and roi[:, 58].any()
    blocks = (roi.reshape(4, 32, 4, 32) > 0).any(axis=(1, 3))
    assert 0 < blocks.sum() < 16  # part, not all, of the 16 blocks is annotated
    all_kept = weak_roi_annotation(tumour, np.random.default_rng(0), keep=1.0, margin=0)
    assert (all_kept > 0).all()


def test_derived_dataset_marks_itself_and_drops_points_of_part_of_train(crchisto, tmp_path):
    out = tmp_path / "crc_roi"
    s = derive_weak_roi_dataset(crchisto, out, ["epithelial"], points_share=0.25, progress=False)
    src, ds = Dataset(crchisto), Dataset(out)
    train = src.ids("train")
    assert s["train_images"] == len(train) and s["train_with_points"] == round(0.25 * len(train))
    assert sum(ds.has("points", i) for i in train) == s["train_with_points"]
    assert all(ds.has("points", i) for i in src.ids("test"))  # only train loses points
    assert all(ds.has("roi", i) for i in src.ids())
    assert "not drawn by a pathologist" in (out / "DERIVED.md").read_text()
    i = src.ids("test")[0]
    roi = ds.roi(i)
    assert roi.shape == src.shape(i) and set(np.unique(roi)) <= {0, 1, 2}
    # annotated pixels under epithelial points are tumour, under stroma/immune cells not
    side = {"epithelial": [], "other": []}
    for i in src.ids("test"):
        p, roi = src.points(i), ds.roi(i)
        rc = np.clip(np.rint(p.coords).astype(int), 0, np.array(roi.shape) - 1)
        v = roi[rc[:, 0], rc[:, 1]]
        side["epithelial"] += list(v[(p.labels == "epithelial") & (v > 0)])
        side["other"] += list(v[np.isin(p.labels, ["fibroblast", "inflammatory"]) & (v > 0)])
    assert np.mean(np.array(side["epithelial"]) == ROI_TUMOUR) > 0.95
    assert np.mean(np.array(side["other"]) == ROI_NON_TUMOUR) > 0.95
    with pytest.raises(CellmapsInputError, match="tumour label"):
        derive_weak_roi_dataset(crchisto, tmp_path / "x", ["tumour"], progress=False)


def _two_image_dataset(root, with_points):
    """Two images with an ROI each; points (two classes) only where ``with_points``."""
    for sub in ("images", "points", "rois"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for k, has_pts in enumerate(with_points):
        pts = rng.uniform(8, 56, size=(6, 2))
        img = np.full((64, 64, 3), (205, 200, 210), np.uint8)  # colour: a Ki67 call needs it
        for r, c in pts:
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 9] = (60, 50, 110)
        Image.fromarray(img).save(root / "images" / f"i{k}.png")
        Image.fromarray(np.where(xx < 32, 1, 2).astype(np.uint8)).save(root / "rois" / f"i{k}.png")
        if has_pts:
            rows = ["x,y,label"] + [
                f"{c},{r},{'p' if j % 2 else 'n'}" for j, (r, c) in enumerate(pts)
            ]
            (root / "points" / f"i{k}.csv").write_text("\n".join(rows) + "\n")
    return root


def small_kinet():
    r = load_recipe("kinet")
    r["net"].update(base=4, depth=2)
    r["training"].update(iterations=2, batch=2, crop=48, precision="fp32")
    return r


def test_images_without_points_train_only_the_roi_task(tmp_path):
    root = _two_image_dataset(tmp_path / "d", [True, False])
    r = small_kinet()
    data = load_training_data([(str(root), None, 1.0)], r, progress=False)
    assert [s.missing for s in data.samples] == [
        frozenset(),
        {"proximity_per_class", "known_class_weights"},
    ]
    assert data.classes == ["n", "p"]
    tr = Trainer(r, data, tmp_path / "m.safetensors", progress=False)
    assert tr.recipe["tasks"][0]["channels"] == 2  # one channel per class
    x, t, w, present = make_batch(data, np.random.default_rng(0), 6, 48, r["augment"])
    out = tr.net(x)
    losses = task_losses(out, t, tr.recipe["tasks"], present)
    assert out["proximity"].shape == (6, 2, 48, 48) and out["roi"].shape == (6, 2, 48, 48)
    no_points = present["proximity_per_class"] == 0
    assert no_points.any() and (~no_points).any()
    assert (losses["proximity"][no_points] == 0).all()
    assert (losses["proximity"][~no_points] > 0).all()
    assert (losses["roi"] > 0).all()  # every crop has annotated ROI pixels


def test_images_no_task_can_use_are_left_out_with_a_warning(tmp_path):
    root = _two_image_dataset(tmp_path / "d", [True, False])
    r = small_kinet()
    r["tasks"] = r["tasks"][:1]  # no ROI task: the image without points is useless
    r["net"]["roi_head"] = None
    with pytest.warns(UserWarning, match="1 of 2 images have no annotation"):
        data = load_training_data([(str(root), None, 1.0)], r, progress=False)
    assert [s.image_id for s in data.samples] == ["i0"]
    only_roi = _two_image_dataset(tmp_path / "e", [False, False])
    with pytest.raises(CellmapsInputError, match="needs points with class labels"):
        load_training_data([(str(only_roi), None, 1.0)], r, progress=False)


# -- cellmaps ki67 ------------------------------------------------------------------------------
def test_ki67_table_by_hand():
    from cellmaps.ki67 import ki67_table

    rows = [
        {"id": "a", "count": 4, "positive": 1, "negative": 3},
        {"id": "b", "count": 2, "positive": 2},
        {"id": "c", "count": 0},
    ]
    t = ki67_table(rows)
    assert [r["id"] for r in t] == ["a", "b", "c", "pooled"]
    assert t[0]["index"] == 0.25 and t[1]["index"] == 1.0 and np.isnan(t[2]["index"])
    assert (t[3]["positive"], t[3]["negative"], t[3]["index"]) == (3, 3, 0.5)


def untrained_ki67_model(tmp_path):
    from cellmaps.model import Model

    r = small_kinet()
    r["tasks"][0]["channels"] = 2
    r["decode"]["xi"] = 0.3
    r["inference"].update(tile=64, stride=48)
    m = Model(r, 3, [0.5] * 3, [0.2] * 3, training={"classes": ["negative", "positive"]})
    torch.manual_seed(0)
    for p in m.net.parameters():  # random weights give many peaks in both channels
        p.data.normal_(0, 0.3)
    m.save(tmp_path / "ki.safetensors")
    return tmp_path / "ki.safetensors"


def test_ki67_command_counts_agree_with_the_points_it_writes(tmp_path, capsys):
    from cellmaps.cli import main
    from cellmaps.io import read_points

    model = untrained_ki67_model(tmp_path)
    root = _two_image_dataset(tmp_path / "d", [True, True])
    out = tmp_path / "out"
    assert main(["ki67", str(model), str(root), "--out", str(out), "--quiet"]) == 0
    lines = (out / "ki67.csv").read_text().splitlines()
    assert lines[0] == "id,positive,negative,index" and lines[-1].startswith("pooled,")
    total = np.zeros(2, int)
    for line in lines[1:-1]:
        image_id, pos, neg, idx = line.split(",")
        labels = read_points(out / "points" / f"{image_id}.csv").labels
        assert (int(pos), int(neg)) == (np.sum(labels == "positive"), np.sum(labels == "negative"))
        assert int(pos) + int(neg) > 0 and float(idx) == pytest.approx(
            int(pos) / (int(pos) + int(neg)), abs=1e-4
        )
        assert (out / "overlays" / f"{image_id}.png").is_file()
        assert (out / "geojson" / f"{image_id}.geojson").is_file()
        total += [int(pos), int(neg)]
    pooled = lines[-1].split(",")
    assert [int(pooled[1]), int(pooled[2])] == total.tolist()
    assert "pooled Ki67 index" in capsys.readouterr().out


def test_ki67_command_refuses_a_model_without_ki67_classes(tmp_path, capsys):
    from cellmaps.cli import main
    from cellmaps.model import default_model_path

    root = _two_image_dataset(tmp_path / "d", [True])
    code = main(["ki67", str(default_model_path()), str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "not a Ki67 model" in err and "default.safetensors" in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_bundled_ki67_model_scores_a_bcdata_test_image(bcdata, tmp_path):
    """The shipped Ki67 model on one held-out BCData image: index and counts near the truth."""
    from cellmaps.ki67 import score_ki67
    from cellmaps.model import bundled_model_path

    assert bundled_model_path("ki67").stat().st_size <= 5_000_000
    ds = Dataset(bcdata)
    image_id = ds.ids("test")[0]
    table = score_ki67(None, [ds.image_path(image_id)], tmp_path, progress=False)
    truth = ds.points(image_id).labels
    pos, neg = int(np.sum(truth == "positive")), int(np.sum(truth == "negative"))
    row = table[0]
    assert row["id"] == image_id
    assert abs(row["index"] - pos / (pos + neg)) < 0.08
    assert abs((row["positive"] + row["negative"]) - (pos + neg)) < 0.25 * (pos + neg)


def test_weak_roi_command_writes_a_marked_dataset_copy(tmp_path, capsys):
    from cellmaps.cli import main

    root = _two_image_dataset(tmp_path / "d", [True, True])
    out = tmp_path / "roi"
    assert main(["weak-roi", str(root), "--out", str(out), "--tumour", "p", "--quiet"]) == 0
    assert "see DERIVED.md" in capsys.readouterr().out
    ds = Dataset(out)
    assert ds.ids() == ["i0", "i1"] and all(ds.has("roi", i) for i in ds.ids())
    assert (out / "images" / "i0.png").is_symlink()  # linked, not copied
    code = main(["weak-roi", str(root), "--out", str(root), "--tumour", "p", "--quiet"])
    assert code == 2 and "must differ" in capsys.readouterr().err


def test_weak_roi_checks_first_and_never_leaves_a_partial_dataset(tmp_path, capsys, monkeypatch):
    """An unknown tumour label or an existing --out is refused before anything is written; a
    failure half-way leaves neither the new folder nor a temporary one, and --overwrite
    replaces the old dataset only once the new one is complete."""
    import cellmaps.weak_roi as weak_roi
    from cellmaps.cli import main

    root = _two_image_dataset(tmp_path / "d", [True, True])
    out = tmp_path / "roi"
    argv = ["weak-roi", str(root), "--out", str(out), "--quiet"]
    assert main([*argv, "--tumour", "tumor"]) == 2
    assert "tumour label(s) ['tumor']" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # nothing written
    assert main([*argv, "--tumour", "p"]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert main([*argv, "--tumour", "n"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    calls = []
    real = weak_roi.weak_roi_annotation

    def fails_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk gone")
        return real(*a, **k)

    monkeypatch.setattr(weak_roi, "weak_roi_annotation", fails_on_second)
    assert main([*argv, "--tumour", "n", "--overwrite"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "roi"]  # no temporary folder
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert "--tumour p" in (out / "DERIVED.md").read_text()  # the old dataset, whole
    monkeypatch.setattr(weak_roi, "weak_roi_annotation", real)
    assert main([*argv, "--tumour", "n", "--overwrite"]) == 0
    assert "--tumour n" in (out / "DERIVED.md").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "roi"]


def test_ki67_tables_quote_image_names_with_commas_and_refuse_reserved_names(tmp_path, capsys):
    import csv

    from PIL import Image

    from cellmaps.cli import main

    model = untrained_ki67_model(tmp_path)
    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("a,b", 'say "hi"'):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)).save(
            images / f"{name}.png"
        )
    out = tmp_path / "out"
    assert main(["ki67", str(model), str(images), "--out", str(out), "--quiet"]) == 0
    for table, width in (("ki67.csv", 4), ("counts.csv", None)):
        with (out / table).open(newline="") as fh:
            rows = list(csv.reader(fh))
        width = width or len(rows[0])
        assert all(len(r) == width for r in rows), table
        assert sorted(r[0] for r in rows[1:] if r[0] != "pooled") == ["a,b", 'say "hi"']
    # an image named like the summary row is refused before anything is written
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(images / "pooled.png")
    out2 = tmp_path / "out2"
    assert main(["ki67", str(model), str(images), "--out", str(out2), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pooled.png" in err and "reserved" in err
    assert not (out2 / "ki67.csv").exists() and not (out2 / "points").exists()


def test_non_tumour_points_are_the_detections_away_from_every_annotation():
    from cellmaps.io.points import Points
    from cellmaps.weak_roi import NON_TUMOUR, add_non_tumour_points

    pts = Points(np.array([[10.0, 10.0], [50.0, 50.0]]), np.array(["p", "n"], object))
    # gaps to the nearest annotation: 2 (same nucleus), 28.3, 13 (> 12), 11.9 (< 12)
    det = np.array([[12.0, 10.0], [30.0, 30.0], [50.0, 63.0], [50.0, 38.1]])
    out = add_non_tumour_points(pts, det, min_gap=12.0)
    assert out.coords.tolist() == [[10, 10], [50, 50], [30, 30], [50, 63]]
    assert out.labels.tolist() == ["p", "n", NON_TUMOUR, NON_TUMOUR]
    # no annotation at all: every detection is non-tumour; no detection: unchanged
    none = Points(np.zeros((0, 2)), np.array([], object))
    assert len(add_non_tumour_points(none, det, 12.0).coords) == 4
    assert add_non_tumour_points(pts, np.zeros((0, 2)), 12.0).labels.tolist() == ["p", "n"]


def test_non_tumour_points_skip_the_border_and_dab_stained_detections():
    from cellmaps.io.points import Points
    from cellmaps.weak_roi import add_non_tumour_points, dab_threshold

    pts = Points(np.array([[50.0, 50.0]]), np.array(["negative"], object))
    # all far from the annotation; 2nd 1 px from the top edge, 3rd on DAB above the limit
    det = np.array([[20.0, 20.0], [1.0, 40.0], [80.0, 80.0], [70.0, 20.0]])
    dab = np.array([0.02, 0.02, 0.4, 0.1])
    out = add_non_tumour_points(pts, det, 10.0, (100, 100), edge=3.0, dab=dab, max_dab=0.104)
    assert out.coords.tolist() == [[50, 50], [20, 20], [70, 20]]
    # a detection at row 98 of a 100-row image is 1 px from the bottom edge: left out
    out = add_non_tumour_points(pts, np.array([[98.0, 20.0]]), 10.0, (100, 100), edge=3.0)
    assert len(out.coords) == 1
    # the limit is the geometric mean of the median DAB at positive and negative cells
    assert dab_threshold(np.array([0.4, 0.5, 0.9]), np.array([0.01, 0.02, 0.5])) == pytest.approx(
        0.1
    )


def test_dab_density_is_high_on_brown_and_low_on_blue_nuclei():
    """Two discs stained in stain space (scikit-image hed2rgb): one haematoxylin only, one DAB
    only; the DAB density at the brown disc is far above the blue one's and the glass's."""
    from skimage.color import hed2rgb

    from cellmaps.weak_roi import dab_density

    yy, xx = np.mgrid[:80, :80]
    hed = np.zeros((80, 80, 3))
    hed[(yy - 20) ** 2 + (xx - 20) ** 2 <= 64, 0] = 0.08  # blue
    hed[(yy - 60) ** 2 + (xx - 60) ** 2 <= 64, 2] = 0.08  # brown
    rgb = np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    blue, brown, glass = dab_density(rgb, np.array([[20, 20], [60, 60], [5, 70]]), 6.0)
    assert brown > 0.05 and brown > 10 * max(abs(blue), abs(glass))


def test_weak_roi_adds_non_tumour_nuclei_to_train_images_only(tmp_path, monkeypatch, capsys):
    """A stand-in detector that finds the annotated nuclei (a pixel off) plus one unannotated
    nucleus far from all of them: the train image's points gain exactly that one as
    'non_tumour'; the test image keeps its source points (linked)."""
    import cellmaps.model
    from cellmaps.cli import main
    from cellmaps.io.points import Points

    root = _two_image_dataset(tmp_path / "d", [True, True])
    (root / "splits.csv").write_text("id,split\ni0,train\ni1,test\n")
    # a source that already labels one nucleus non_tumour: it is not counted as added
    csv = root / "points" / "i0.csv"
    csv.write_text(csv.read_text().replace(",n\n", ",non_tumour\n", 1))
    src = Dataset(root)
    assert src.points("i0").labels.tolist().count("non_tumour") == 1
    # every annotated point lies in [8, 56]²: this one is > 5 px from all and 4 px from the
    # border, more than the edge margin (half a radius)
    extra = np.array([[4.0, 4.0]])

    from scipy.spatial import cKDTree

    # the detector runs at the data's object scale: half the lower quartile of the points'
    # nearest-neighbour spacing over the annotated non-test images (cellmaps.io.scale; the
    # test split's points must not choose it), computed here
    def spacing(ids):
        return np.concatenate(
            [cKDTree(src.points(i).coords).query(src.points(i).coords, k=2)[0][:, 1] for i in ids]
        )

    nn = spacing(["i0"])
    assert np.percentile(nn, 25) != np.percentile(spacing(["i0", "i1"]), 25)  # can tell
    sizes = []

    class Finder:
        train_radius = 5.0

        def detect(self, image, object_size=None):
            sizes.append(object_size)
            k = next(i for i in src.ids() if np.array_equal(src.image(i), image))
            return Points(np.concatenate([src.points(k).coords + 1, extra]), None)

    monkeypatch.setattr(cellmaps.model.Model, "load", staticmethod(lambda path: Finder()))
    out = tmp_path / "roi"
    argv = ["weak-roi", str(root), "--out", str(out), "--tumour", "p", "--quiet"]
    assert main([*argv, "--other-nuclei", "finder.safetensors", "--min-gap", "5"]) == 0
    assert "added 1 non-tumour nuclei" in capsys.readouterr().out
    ds = Dataset(out)
    train = ds.points("i0")
    assert train.labels.tolist() == [*src.points("i0").labels.tolist(), "non_tumour"]
    assert np.allclose(train.coords[-1], extra[0])
    assert (out / "points" / "i1.csv").is_symlink()  # test truth untouched
    assert "non_tumour" in (out / "DERIVED.md").read_text()
    assert sizes == [pytest.approx(np.percentile(nn, 25) / 2)]  # the train image only
    # without --min-gap the gap is 1.5 radii and the border margin half a radius; moved 1 px
    # from the border, the extra nucleus is left out (within the margin)
    radius = np.percentile(nn, 25) / 2
    assert 2 < radius / 2 < 4
    from cellmaps.weak_roi import derive_weak_roi_dataset

    s = derive_weak_roi_dataset(root, tmp_path / "r2", ["p"], other_nuclei="f", progress=False)
    assert s["non_tumour_rule"]["min_gap"] == pytest.approx(1.5 * radius)
    assert s["non_tumour_rule"]["edge"] == pytest.approx(0.5 * radius)
    assert s["non_tumour_rule"]["max_dab"] is None  # no positive / negative classes
    extra[:] = [[1.0, 30.0]]
    s = derive_weak_roi_dataset(root, tmp_path / "r3", ["p"], other_nuclei="f", progress=False)
    assert s["non_tumour_added"] == 0 and s["non_tumour_detections"] == 7
    assert main([*argv, "--overwrite", "--other-nuclei", "f", "--min-gap", "0"]) == 2
    assert "min_gap" in capsys.readouterr().err


def test_class_gain_changes_only_the_class_decision():
    from cellmaps.postprocess import find_peaks_per_class

    maps = np.zeros((2, 32, 32), np.float32)
    maps[0, 8, 8], maps[1, 8, 8] = 0.5, 0.6  # class 1 wins by 0.1 at gain 1
    maps[0, 24, 24], maps[1, 24, 24] = 0.9, 0.1  # class 0 wins at any gain tried
    c1, s1, k1 = find_peaks_per_class(maps, 0.3, 3)
    c2, s2, k2 = find_peaks_per_class(maps, 0.3, 3, class_gain=np.array([1.3, 1.0]))
    assert c1.tolist() == c2.tolist() and s1.tolist() == s2.tolist()
    assert dict(zip(map(tuple, c1.tolist()), k1.tolist(), strict=True)) == {(8, 8): 1, (24, 24): 0}
    assert dict(zip(map(tuple, c2.tolist()), k2.tolist(), strict=True)) == {(8, 8): 0, (24, 24): 0}
    # 0.5 · 1.19 = 0.595 < 0.6: still class 1
    _, _, k3 = find_peaks_per_class(maps, 0.3, 3, class_gain=np.array([1.19, 1.0]))
    assert sorted(k3.tolist()) == [0, 1]


def test_tune_class_gain_picks_the_factor_that_matches_the_annotated_index():
    """A stand-in Ki67 model whose nucleus i has positive-map value p_i and negative-map
    value 1: it calls i positive when gain · p_i > 1. Truth: 5 of 10 positive; p = 0.9 for
    three of them, 1.2 for two, 0.5 for the negatives. At gain 1 the index is 0.2, from
    1.122 (0.9 · 1.122 = 1.01) it is 0.5 until 0.5 · gain > 1 (gain 2 is not > 2); the
    smallest such factor (nearest 1) is chosen."""
    from cellmaps.io.points import Points
    from cellmaps.postprocess.decode import DecodeParams
    from cellmaps.tune import tune_class_gain

    p = np.array([0.9, 0.9, 0.9, 1.2, 1.2, 0.5, 0.5, 0.5, 0.5, 0.5])

    class StandIn:
        decode = DecodeParams(classes=("positive", "negative"))

        def detect(self, image):
            g = self.decode.class_gains()[0]
            labels = np.where(g * p > 1.0, "positive", "negative").astype(object)
            return Points(np.zeros((len(p), 2)), labels)

    m = StandIn()
    found = tune_class_gain(m, [np.zeros((4, 4))], [(5, 5)], progress=False)
    assert found["gain"] == pytest.approx(1.122)
    assert found["mae_at_1"] == pytest.approx(0.3) and found["mae"] == pytest.approx(0.0)
    assert m.decode["class_gain"] == {"positive": pytest.approx(1.122)}
    m.decode = m.decode.replace(class_gain={"mitotic": 2.0})
    with pytest.raises(ValueError, match="mitotic"):
        m.decode.class_gains()


def test_cli_tune_class_gain_stores_the_factor_with_the_lowest_index_error(tmp_path, capsys):
    """A 2-iteration KiNet model on positive / negative points: `tune --class-gain` stores a
    factor of the grid, and the MAE it reports at factor 1 and at the chosen factor equal the
    per-image index MAE recomputed here from the saved model's detections. A model whose
    classes are not positive / negative is refused."""
    from cellmaps.cli import main
    from cellmaps.metrics.counts import ki67_index
    from cellmaps.model import Model
    from cellmaps.training import train
    from cellmaps.tune import CLASS_GAIN_GRID

    root = _two_image_dataset(tmp_path / "d", [True, True])
    for csv in (root / "points").glob("*.csv"):
        csv.write_text(
            csv.read_text().replace(",p\n", ",positive\n").replace(",n\n", ",negative\n")
        )
    (root / "splits.csv").write_text("id,split\ni0,train\ni1,val\n")
    path = tmp_path / "k.safetensors"
    train(small_kinet(), [(str(root), "train", 1.0)], str(path), None)
    assert main(["tune", str(path), "--data", str(root), "--class-gain", "--quiet"]) == 0
    out = capsys.readouterr().out
    model = Model.load(path)
    gain = model.decode["class_gain"]["positive"]
    assert gain in CLASS_GAIN_GRID and f"positive class gain {gain:g}" in out
    ds = Dataset(root)
    labels = np.asarray(ds.points("i1").labels).astype(str)
    truth = ki67_index(np.sum(labels == "positive"), np.sum(labels == "negative"))

    def mae(g):
        model.decode = model.decode.replace(class_gain={"positive": g})
        found = np.asarray(model.detect(ds.image("i1")).labels).astype(str)
        return abs(ki67_index(np.sum(found == "positive"), np.sum(found == "negative")) - truth)

    tuned = model.training["class_gain_tuning"]
    assert tuned["mae"] == pytest.approx(mae(gain)) and tuned["mae_at_1"] == pytest.approx(mae(1.0))
    assert tuned["mae"] <= min(mae(g) for g in (0.25, 1.0, 4.0)) + 1e-12
    # a detector without Ki67 classes is refused with its classes named
    for csv in (root / "points").glob("*.csv"):
        csv.write_text(csv.read_text().replace(",positive\n", ",p\n"))
    other = tmp_path / "o.safetensors"
    train(small_kinet(), [(str(root), "train", 1.0)], str(other), None)
    assert main(["tune", str(other), "--data", str(root), "--class-gain", "--quiet"]) == 2
    assert "not a Ki67 model" in capsys.readouterr().err


def test_weak_roi_overwrite_never_replaces_an_annotated_dataset(tmp_path, capsys):
    """`weak-roi SRC --out OTHER_DATASET --overwrite` replaced the whole folder, annotations
    included; now only a dataset weak-roi derived (its DERIVED.md) is replaced."""
    from cellmaps.cli import main

    root = _two_image_dataset(tmp_path / "d", [True, True])
    other = _two_image_dataset(tmp_path / "other", [True, True])
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    argv = ["weak-roi", str(root), "--out", str(other), "--tumour", "p", "--quiet"]
    assert main([*argv, "--overwrite"]) == 2
    assert "replaces only a dataset weak-roi derived" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before
