"""DeepSplit post-processing: border lengths, border-length-limited cuts, separation."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.postprocess.split import border_lengths, merge_long_borders, split_instances


def discs(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, np.int32)
    for i, (r, c) in enumerate(centres, start=1):
        out[((yy - r) ** 2 + (xx - c) ** 2 <= radius**2) & (out == 0)] = i
    return out


def test_border_lengths_count_pixel_edges_by_hand():
    lab = np.zeros((8, 10), np.int32)
    lab[1:6, 1:4] = 1  # 5 rows tall
    lab[1:6, 4:7] = 2  # shares a 5-edge vertical border with 1
    lab[6, 4:7] = 3  # under 2: a 3-edge horizontal border; touches 1 only at a corner
    assert border_lengths(lab) == {(1, 2): 5, (2, 3): 3}
    assert border_lengths(np.zeros((4, 4), np.int32)) == {}
    merged = merge_long_borders(lab, max_border=4)  # 1-2 (5 edges) merge, 2-3 (3) stay cut
    assert merged.max() == 2 and merged[3, 2] == merged[3, 5] != merged[6, 5]
    # a border exactly max_border long counts as long ("max_border pixel edges or longer")
    at = merge_long_borders(lab, max_border=5)
    assert at.max() == 2 and at[3, 2] == at[3, 5] != at[6, 5]
    assert merge_long_borders(lab, max_border=6).max() == 3  # nothing that long: all cut
    assert merge_long_borders(lab, max_border=3).max() == 1  # both borders long: one cell


def test_two_touching_discs_are_cut_a_wide_necked_dumbbell_is_not():
    touching = discs((40, 60), [(20, 20), (20, 38)], 10) > 0  # chord ~ 9 px
    lab, cen = split_instances(touching.astype(float), max_border=12)
    assert lab.max() == 2 and len(cen) == 2
    assert lab[20, 20] != lab[20, 38] and ((lab > 0) == touching).all()
    assert np.allclose(sorted(cen[:, 1]), [20, 38], atol=1.5)
    dumbbell = discs((40, 70), [(20, 20), (20, 46)], 10) > 0
    dumbbell[13:27, 20:46] = True  # a neck 14 px wide
    lab, _ = split_instances(dumbbell.astype(float), max_border=12)
    assert lab.max() == 1
    # the same dumbbell with every cut kept is cut (at its neck, into the bulbs and the neck)
    assert split_instances(dumbbell.astype(float), max_border=None)[0].max() >= 2


def test_separation_map_splits_cells_merged_along_a_long_contact():
    truth = discs((40, 60), [(20, 20), (20, 34)], 10)  # chord ~ 14 px: too long to cut
    seg = (truth > 0).astype(float)
    assert split_instances(seg, max_border=12)[0].max() == 1
    sep = np.zeros_like(seg)
    edge = (truth == 1) & (np.roll(truth, -1, 1) == 2)  # the contact line
    sep[np.nonzero(edge)[0], np.nonzero(edge)[1]] = 1.0
    sep[np.nonzero(edge)[0], np.nonzero(edge)[1] + 1] = 1.0
    lab, _ = split_instances(seg, sep, max_border=12)
    assert lab.max() == 2 and ((lab > 0) == (truth > 0)).all()  # contact pixels given back
    from cellmaps.metrics import aji

    assert aji(truth, lab) > 0.9


def test_small_objects_and_holes():
    seg = np.zeros((30, 30))
    seg[5:15, 5:15] = 1
    seg[9, 9] = 0  # a hole
    seg[11:14, 11:14] = 0  # a 9-px hole: larger than max_hole 5, kept
    seg[25:27, 25:27] = 1  # 4 px
    lab, cen = split_instances(seg, min_size=5, max_hole=5)
    assert lab.max() == 1 and lab[9, 9] == 1 and lab[25, 25] == 0 and lab[12, 12] == 0
    rr, cc = np.nonzero(lab)
    assert np.allclose(cen, [[rr.mean(), cc.mean()]])
    with pytest.raises(ValueError, match="differ"):
        split_instances(seg, np.zeros((3, 3)))
    assert split_instances(np.zeros((5, 5)))[0].max() == 0


def test_scaled_stages_keep_their_proportions():
    from cellmaps.training.fit import scaled_stages

    stages = [{"iterations": 2000, "weights": {"a": 1}}, {"iterations": 2000, "weights": {"b": 1}}]
    assert [s["iterations"] for s in scaled_stages(stages, 600)] == [300, 300]
    assert [s["iterations"] for s in scaled_stages(stages, 7)] == [4, 3]  # last takes the rest
    three = [{"iterations": 1}, {"iterations": 2}, {"iterations": 1}]
    assert [s["iterations"] for s in scaled_stages(three, 100)] == [25, 50, 25]
    assert scaled_stages(stages, 600)[1]["weights"] == {"b": 1}


def write_touching_pairs(root, n_images: int, seed: int) -> None:
    """Fluorescence-like 64² images of four cell pairs pressed together along a contact
    (~11 px) longer than the border limit the tests use (8 px), so only the separation map
    can split them; a faint dark line marks where the cells meet."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        mask = np.zeros((64, 64), np.int32)
        n = 0
        for r0, c0 in ((16, 16), (16, 48), (48, 16), (48, 48)):
            angle = rng.uniform(0, np.pi)
            d = np.array([np.sin(angle), np.cos(angle)]) * 4.5
            centre = np.array([r0, c0]) + rng.uniform(-2, 2, 2)
            pair = discs((64, 64), [tuple(centre - d), tuple(centre + d)], 7)
            mask[pair > 0] = pair[pair > 0] + n
            n += 2
        img = np.where(mask > 0, 170, 30) + rng.normal(0, 8, mask.shape)
        edge = np.zeros(mask.shape, bool)
        for ax in (0, 1):
            nb = np.roll(mask, 1, ax)
            edge |= (nb != mask) & (mask > 0) & (nb > 0)
        img[edge] -= 60
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"p{k}.png")
        tifffile.imwrite(root / "masks" / f"p{k}.tif", mask.astype(np.uint16))


def test_deepsplit_trains_and_splits_touching_cells_end_to_end(tmp_path):
    """deepsplit (cumulative: 300 segmentation-only steps, then 300 with separation) on
    synthetic touching pairs: instances of unseen images with AJI above a floor, and the
    same model with its separation map left out merges the pairs (far lower AJI)."""
    from cellmaps.io import Dataset
    from cellmaps.metrics import aji
    from cellmaps.model import segment_image
    from cellmaps.recipes import load_recipe
    from cellmaps.training import train

    write_touching_pairs(tmp_path / "train", 6, seed=0)
    write_touching_pairs(tmp_path / "test", 2, seed=1)
    r = load_recipe("deepsplit")
    r["net"].update(base=8, depth=2)
    r["training"].update(iterations=600, batch=4, crop=48, val_every=600, precision="fp32")
    r["optimizer"]["lr"] = 3e-3
    r["decode"]["max_border"] = 8
    r["inference"].update(tile=64, stride=48, trim=8)
    model = train(r, [(str(tmp_path / "train"), None, 1.0)], tmp_path / "ds.safetensors",
                  progress=False)  # fmt: skip
    ds = Dataset(tmp_path / "test")
    with_sep, without = [], []
    for i in ds.ids():
        with_sep.append(aji(ds.mask(i), segment_image(model, ds.image(i))[1]))
        with model.decoding(boundary_task=None):
            without.append(aji(ds.mask(i), segment_image(model, ds.image(i))[1]))
    assert np.mean(with_sep) >= 0.75, (with_sep, without)
    assert np.mean(without) < 0.6, (with_sep, without)


@pytest.mark.parametrize(
    "name, frozen, trained",
    [
        ("deepsplit", "decoders.1.ups.0.weight", "decoders.0.ups.0.weight"),
        ("branch-net", "branch.0.body.0.weight", "unet.decoders.0.ups.0.weight"),
        ("double-unet", "second.encoder.0.body.0.weight", "first.decoders.0.ups.0.weight"),
    ],
)
def test_cumulative_training_switches_stage(name, frozen, trained, tmp_path):
    """Stage 1 (half the run, however long): the separation layers do not move, the
    segmentation layers do; stage 2 trains the separation layers."""
    import torch

    from cellmaps.recipes import load_recipe
    from cellmaps.training.data import load_training_data
    from cellmaps.training.fit import Trainer

    write_touching_pairs(tmp_path / "d", 1, seed=0)
    r = load_recipe(name)
    r["net"].update(base=4, depth=2)
    r["training"].update(iterations=4, batch=1, crop=48, precision="fp32")
    data = load_training_data([(str(tmp_path / "d"), None, 1.0)], r, progress=False)
    tr = Trainer(r, data, tmp_path / "m.safetensors", progress=False)
    assert [s["iterations"] for s in tr.recipe["combine"]["stages"]] == [2, 2]
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    params = dict(tr.net.named_parameters())
    tr.step()
    tr.step()
    # frozen, not merely weighted 0 (with weight 0 alone Adam would not move them either)
    assert not params[frozen].requires_grad and params[trained].requires_grad
    mid = {k: v.clone() for k, v in tr.net.state_dict().items()}
    assert torch.equal(before[frozen], mid[frozen])
    assert not torch.equal(before[trained], mid[trained])
    tr.step()
    assert params[frozen].requires_grad
    assert not torch.equal(mid[frozen], tr.net.state_dict()[frozen])


def test_tune_max_border_keeps_short_cuts_and_long_waists(tmp_path, monkeypatch):
    """On ideal maps (cell pixels, no separation) of two touching discs (two cells, a
    9-edge contact) and a dumbbell with a wide neck (one cell; the watershed cuts it along
    borders of 18 and 19 edges), the limit chosen cuts the first and not the second (12 or
    16); 4 and 8 merge the discs, 24 and no limit cut the dumbbell, all with a lower CDS.
    `cellmaps tune` stores the limit in the model."""
    import tifffile
    from PIL import Image

    from cellmaps.cli import main
    from cellmaps.model import Model
    from cellmaps.recipes import load_recipe
    from cellmaps.tune import tune_split

    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    touching = discs((40, 70), [(20, 20), (20, 38)], 10)
    dumbbell = (discs((40, 70), [(20, 20), (20, 46)], 10) > 0).astype(np.int32)
    dumbbell[13:27, 20:46] = 1
    for name, mask in (("touching", touching), ("dumbbell", dumbbell)):
        Image.fromarray(np.where(mask > 0, 200, 20).astype(np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        tifffile.imwrite(root / "masks" / f"{name}.tif", mask.astype(np.uint16))
    (root / "splits.csv").write_text("id,split\ntouching,val\ndumbbell,val\n")

    def ideal_maps(self, image, *_a, **_k):
        grey = np.asarray(image, np.float32)
        cells = ((grey[..., 0] if grey.ndim == 3 else grey) > 100).astype(np.float32)
        return {"segmentation": cells[None], "separation": np.zeros_like(cells)[None]}

    monkeypatch.setattr(Model, "predict_maps", ideal_maps)
    model = Model(load_recipe("deepsplit"), 3, [0.5] * 3, [0.2] * 3, training={"label": "cell"})
    best = tune_split(model, [(str(root), "val")], progress=False)
    cds = {r["max_border"]: r["cds"] for r in best["curve"] if r["cell_threshold"] == 0.3}
    assert best["max_border"] in (12, 16) and model.decode["max_border"] == best["max_border"]
    assert best["cds"] == 1.0 and max(cds[4], cds[8], cds[24], cds[None]) < 1.0
    path = tmp_path / "m.safetensors"
    model.decode = model.decode.replace(max_border=None)
    model.save(path)
    assert main(["tune", str(path), "--data", str(root), "--split", "val", "--quiet"]) == 0
    assert Model.load(path).decode["max_border"] in (12, 16)


def test_tune_split_chooses_the_thresholds_the_maps_need(tmp_path, monkeypatch):
    """Maps biased like a class-weighted net's: a row of three cells pressed together (long
    contacts) whose contact pixels have separation probability 0.35, a faint cell at 0.45
    and a background smear at 0.35. Only cell threshold 0.4 (finds the faint cell, not the
    smear) with separation threshold 0.3 (cuts the row) gets every cell; the 0.5 defaults
    merge the row and lose the faint cell."""
    import tifffile
    from PIL import Image

    from cellmaps.model import Model
    from cellmaps.recipes import load_recipe
    from cellmaps.targets import separation
    from cellmaps.tune import tune_split

    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    row = discs((40, 80), [(20, 16), (20, 30), (20, 44)], 10)  # chords ~14 px: not cut
    faint = discs((40, 80), [(20, 66)], 8)
    truth = np.where(faint > 0, 4, row)
    maps = np.where(row > 0, 0.9, 0.0) + np.where(faint > 0, 0.45, 0.0)
    maps[2:8, 60:78] = 0.35  # smear: an object only at threshold 0.3
    sep = np.where(separation(row) > 0, 0.35, 0.0)
    Image.fromarray((maps * 255).astype(np.uint8)).save(root / "images" / "a.png")
    tifffile.imwrite(root / "masks" / "a.tif", truth.astype(np.uint16))
    (root / "splits.csv").write_text("id,split\na,val\n")
    monkeypatch.setattr(Model, "predict_maps", lambda self, image, *a, **k: {
        "segmentation": maps[None].astype(np.float32), "separation": sep[None].astype(np.float32)})  # fmt: skip
    model = Model(load_recipe("deepsplit"), 3, [0.5] * 3, [0.2] * 3, training={"label": "cell"})
    model.decode = model.decode.replace(max_border=12, min_area=20)
    default = {(r["cell_threshold"], r["separation_threshold"]): r["cds"]
               for r in tune_split(model, [(str(root), "val")], progress=False)["curve"]
               if r["max_border"] == 12}  # the first two stages (and 12 in the third)  # fmt: skip
    best = model.decode
    assert best["cell_threshold"] == 0.4 and best["separation_threshold"] == 0.3
    assert default[(0.5, 0.5)] < 0.5 and max(default.values()) == 1.0


def test_tune_seed_distance_keeps_a_peanut_whole_and_cuts_a_touching_pair(tmp_path, monkeypatch):
    """Ideal maps (no separation, every cut kept) of one peanut-shaped cell (two discs of
    radius 8, centres 7 px apart: two distance-transform maxima 7 apart) and two touching
    cells (radius 6, centres 11 apart). Seeds 3–7 px apart cut the peanut, 12 merge the
    pair; only 9 gets both right, and tuning chooses it."""
    import tifffile
    from PIL import Image

    from cellmaps.model import Model
    from cellmaps.recipes import load_recipe
    from cellmaps.tune import SEED_DISTANCE_GRID, tune_split

    root = tmp_path / "d"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    peanut = (discs((40, 80), [(20, 16), (20, 23)], 8) > 0).astype(np.int32)
    pair = discs((40, 80), [(20, 52), (20, 63)], 6)
    truth = np.where(pair > 0, pair + 1, peanut)
    Image.fromarray(np.where(truth > 0, 200, 20).astype(np.uint8)).save(root / "images" / "a.png")
    tifffile.imwrite(root / "masks" / "a.tif", truth.astype(np.uint16))
    (root / "splits.csv").write_text("id,split\na,val\n")
    cells = (truth > 0).astype(np.float32)
    monkeypatch.setattr(Model, "predict_maps", lambda self, image, *a, **k: {
        "segmentation": cells[None], "separation": np.zeros_like(cells)[None]})  # fmt: skip
    model = Model(load_recipe("deepsplit"), 3, [0.5] * 3, [0.2] * 3, training={"label": "cell"})
    model.decode = model.decode.replace(max_border=None, min_area=20)
    best = tune_split(model, [(str(root), "val")], {"min_distance": SEED_DISTANCE_GRID}, False)
    cds = {r["min_distance"]: r["cds"] for r in best["curve"]}
    assert best["min_distance"] == 9 and model.decode["min_distance"] == 9 and cds[9] == 1.0
    assert max(cds[3], cds[5], cds[7], cds[12]) < 1.0, cds


def test_deepsplit_on_real_fluorescent_nuclei_reaches_a_quality_floor(tmp_path):
    """The deepsplit recipe as bundled (per-image percentile intensities, cumulative
    stages), small (base 8) and short (300 iterations on a fifth of DSB 2018's train
    images), segments held-out val images with a Dice and a cell detection score above
    floors set well under what it reaches (README "Split touching cells")."""
    from cellmaps.io import Dataset
    from cellmaps.metrics import dice
    from cellmaps.metrics.segmentation import instance_scores
    from cellmaps.model import segment_image
    from cellmaps.recipes import load_recipe
    from cellmaps.training import train
    from tests.conftest import shared_dataset

    root = shared_dataset("dsb2018_fluo")
    r = load_recipe("deepsplit")
    r["net"].update(base=8, depth=3)
    r["training"].update(iterations=300, batch=4, crop=96, train_radius=8.0, val_every=300,
                         precision="fp32")  # fmt: skip
    r["optimizer"]["lr"] = 2e-3
    r["inference"].update(tile=192, stride=160)
    model = train(r, [(str(root), "train", 1.0, 0.2)], tmp_path / "ds.safetensors",
                  progress=False)  # fmt: skip
    ds = Dataset(root)
    dscs, tp, fp, fn = [], 0, 0, 0
    for i in ds.ids("val")[:8]:
        truth = ds.mask(i)
        labels = segment_image(model, ds.image(i))[1]
        dscs.append(dice(truth, labels))
        s = instance_scores(truth, labels, 0.5)
        tp, fp, fn = tp + s["tp"], fp + s["fp"], fn + s["fn"]
    cds = 2 * tp / (2 * tp + fp + fn)
    # measured: DSC 0.855, CDS 0.782 (fp32, AMD EPYC); floors leave room for other CPUs
    assert np.mean(dscs) >= 0.78 and cds >= 0.70, (np.mean(dscs), cds)


def write_two_magnifications(root) -> None:
    """Two images of the same discs, one at radius 10 and one at radius 5 (a set taken at two
    magnifications), and one with two discs only (too few to measure its own radius)."""
    import tifffile
    from PIL import Image

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    big = discs((120, 120), [(25, 25), (25, 70), (70, 25), (70, 70)], 10)
    small = discs((120, 120), [(20, 20), (20, 50), (50, 20), (50, 50), (80, 80)], 5)
    pair = discs((120, 120), [(30, 30), (80, 80)], 10)
    for name, mask in (("big", big), ("small", small), ("pair", pair)):
        Image.fromarray(np.where(mask > 0, 200, 20).astype(np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        tifffile.imwrite(root / "masks" / f"{name}.tif", mask.astype(np.uint16))
    (root / "splits.csv").write_text("id,split\nbig,train\nsmall,train\npair,train\n")


@pytest.mark.parametrize("scale", ["source", "image"])
def test_per_image_object_scale_brings_every_image_to_the_object_size(tmp_path, scale):
    """object_size 5: with object_scale "image" the radius-10 image is halved and the
    radius-5 one kept; "source" applies the set's one factor (median radius of all 11
    discs = 10 here, so both are halved). The two-disc image keeps the source factor."""
    from cellmaps.errors import CellmapsInputError
    from cellmaps.recipes import load_recipe, validate_recipe
    from cellmaps.training.data import load_training_data

    root = tmp_path / "d"
    write_two_magnifications(root)
    r = load_recipe("deepsplit")
    r["training"].update(train_radius=5.0, object_scale=scale)
    data = load_training_data([(str(root), "train", 1.0)], validate_recipe(r), progress=False)
    shapes = {s.image_id: s.image.shape[1:] for s in data.samples}
    source = data.object_sizes[0]["factor"]
    assert source == pytest.approx(0.5, abs=0.03)
    side = {k: v[0] for k, v in shapes.items()}  # square images: one side says it
    assert abs(side["big"] - 60) <= 2 and abs(side["pair"] - 60) <= 2
    # a pixel disc of radius 5 has 81 px (equivalent radius 5.08): 120 · 5 / 5.08 = 118
    assert abs(side["small"] - (118 if scale == "image" else 60)) <= 2
    with pytest.raises(CellmapsInputError, match="object_scale"):
        validate_recipe({**r, "training": {**r["training"], "object_scale": "tile"}})
    with pytest.raises(CellmapsInputError, match="object_scale.*train_radius is set"):
        bad = {**r["training"], "train_radius": None, "object_scale": "image"}
        validate_recipe({**r, "training": bad})


def test_split_models_estimate_each_images_scale_from_their_own_instances(monkeypatch):
    """A DeepSplit model trained at radius 8 (on images whose cells had radius 8) shown an
    image of radius-16 discs: at factor f its instances have radius 16·f net px, and the
    factor where that is 8 is 0.5. A net that cuts cells larger than 12 net px into quarters
    (as a net shown objects far above its size fragments them) also gives 8 px pieces at
    factor 1, the training scale: an estimate iterated from there stays at 1, the scan
    still finds 0.5. An empty image keeps the training-image factor (1)."""
    from cellmaps.io.scale import rescale_image
    from cellmaps.model import Model
    from cellmaps.postprocess.decode import Maps
    from cellmaps.recipes import load_recipe

    centres = [(r, c) for r in (40, 128, 216) for c in (40, 128, 216)]
    fragments = {"on": False}

    def ideal_maps(self, image, *_a, scale=1.0, **_k):
        # the maps an ideal net gives: the image's bright pixels, resampled by `scale`
        cells = (rescale_image(np.asarray(image, np.float32), scale) > 100).astype(np.float32)
        if fragments["on"] and 16 * scale > 12 and cells.any():
            h, w = np.asarray(image).shape[:2]
            for r, c in centres:  # the crop is central: shift the centres with it
                rr = int(round((r - (256 - h) / 2) * scale))
                cc = int(round((c - (256 - w) / 2) * scale))
                cells[max(rr - 1, 0) : rr + 1, :] = 0
                cells[:, max(cc - 1, 0) : cc + 1] = 0
        maps = Maps(segmentation=cells[None], separation=np.zeros_like(cells)[None])
        maps.input_shape = np.asarray(image).shape[:2]
        return maps

    monkeypatch.setattr(Model, "predict_maps", ideal_maps)
    r = load_recipe("deepsplit")
    r["inference"]["object_size"] = "auto"
    training = {"label": "cell", "train_radius": 8.0, "data_object_size": 8.0}
    model = Model(r, 3, [0.5] * 3, [0.2] * 3, training=training)
    model.decode = model.decode.replace(max_border=None, min_area=5, min_distance=3)
    image = np.where(discs((256, 256), centres, 16) > 0, 200, 0).astype(np.uint8)
    assert model.input_scale(image=image) == pytest.approx(0.5, rel=0.05)
    fragments["on"] = True
    assert model.input_scale(image=image) == pytest.approx(0.5, rel=0.05)
    assert model.input_scale(image=np.zeros((256, 256), np.uint8)) == 1.0
    assert model.input_scale(object_size=4.0, image=image) == 2.0  # a given size wins


def test_cli_per_image_scale_needs_an_object_size(tmp_path, capsys):
    """`cellmaps train --per-image-scale` without a radius to bring images to is refused
    with a message naming the missing option; with one, the model file records the
    per-image scale and the auto input scale."""
    from cellmaps.cli import main
    from cellmaps.model import Model

    root = tmp_path / "d"
    write_two_magnifications(root)
    out = tmp_path / "m.safetensors"
    args = ["train", "--recipe", "deepsplit", "--data", str(root), "--out", str(out)]
    args += ["--iterations", "2", "--crop", "32", "--val-split", "", "--quiet", "--per-image-scale"]
    assert main(args) != 0
    assert "--train-radius" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--train-object-size", "5"]) == 0
    m = Model.load(out)
    assert m.recipe["training"]["object_scale"] == "image"
    assert m.recipe["inference"]["object_size"] == "auto"
