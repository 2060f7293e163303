"""Weakly supervised multi-task recipe (Chamanzar & Nie 2020): shared head, scheduler,
point-only training (no mask opened), argmax instances, GeoJSON points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cellmaps.errors import CellmapsInputError
from cellmaps.io import Dataset
from cellmaps.losses import channel_mse
from cellmaps.postprocess import argmax_instances
from cellmaps.recipes import load_recipe, validate_recipe
from cellmaps.targets.weak import mask_filtered_repel, mask_labels

torch.set_num_threads(2)

RADIUS = 6


def synthetic_image(rng: np.random.Generator, size: int = 96, n: int = 9):
    """An H&E-like RGB image of purple discs (some touching) on pink, with the disc
    centres and the instance mask."""
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), np.uint16)
    centres = []
    while len(centres) < n:
        c = rng.uniform(RADIUS + 2, size - RADIUS - 2, 2)
        d = [np.hypot(*(c - p)) for p in centres]
        if d and min(d) < 2 * RADIUS - 1:  # overlapping, not just touching
            continue
        centres.append(c)
        mask[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= RADIUS**2] = len(centres)
    img = np.empty((size, size, 3), np.float32)
    img[:] = (235, 180, 210)
    img[mask > 0] = (110, 60, 150)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.array(centres), mask


def write_points_dataset(root, n_images: int, seed: int, masks: bool = True) -> None:
    import tifffile

    rng = np.random.default_rng(seed)
    for sub in ("images", "points") + (("masks",) if masks else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        img, centres, mask = synthetic_image(rng)
        Image.fromarray(img).save(root / "images" / f"s{k}.png")
        lines = ["x,y,label"] + [f"{c:.2f},{r:.2f},nucleus" for r, c in centres]
        (root / "points" / f"s{k}.csv").write_text("\n".join(lines) + "\n")
        if masks:
            tifffile.imwrite(root / "masks" / f"s{k}.tif", mask)


def tiny_recipe(iterations: int, combine: str = "round_robin") -> dict:
    r = load_recipe("weakly-points")
    r["net"].update(width=8, decoder_base=8)
    r["training"].update(
        iterations=iterations, batch=4, crop=64, val_every=iterations, precision="fp32",
        train_radius=None,
    )  # fmt: skip
    r["combine"]["kind"] = combine
    r["decode"]["min_distance"] = 4
    r["inference"].update(tile=96, stride=64, trim=8, batch=2)
    return r


# -- recipe and losses -------------------------------------------------------------------------
def test_three_tasks_share_one_two_channel_head_in_scheduler_order():
    from cellmaps.model import head_specs
    from cellmaps.training.fit import task_losses

    r = load_recipe("weakly-points")
    assert [h.name for h in head_specs(r)] == ["nucleus"]
    assert head_specs(r)[0].channels == 2
    assert [t["name"] for t in r["tasks"]] == ["voronoi", "repel", "cluster"]
    from cellmaps.losses import build_combiner

    rr = build_combiner("round_robin", ["voronoi", "repel", "cluster"], {})
    assert [rr.active(i) for i in range(7)] == ["voronoi", "repel", "cluster"] * 2 + ["voronoi"]
    # every task's loss reads the shared head: here a 2-channel logit map
    logits = torch.zeros(1, 2, 8, 8, requires_grad=True)
    vor = torch.full((1, 1, 8, 8), 255, dtype=torch.uint8)
    vor[0, 0, 2, 2], vor[0, 0, 5, 5] = 1, 0
    targets = {
        "voronoi_labels": vor,
        "cluster_labels": torch.ones(1, 1, 8, 8, dtype=torch.uint8),
        "filtered_repel": torch.full((1, 1, 8, 8), 0.25),
    }
    losses = task_losses({"nucleus": logits}, targets, r["tasks"])
    assert torch.allclose(losses["voronoi"], torch.tensor([np.log(2.0)], dtype=torch.float32))
    assert torch.allclose(losses["cluster"], torch.tensor([np.log(2.0)], dtype=torch.float32))
    # softmax of equal logits: nucleus probability 0.5 everywhere, (0.5 - 0.25)^2
    assert torch.allclose(losses["repel"], torch.tensor([0.0625]))


def test_shared_head_must_agree_and_decode_task_names_the_head():
    r = load_recipe("weakly-points")
    r["tasks"][1]["channels"] = 1
    with pytest.raises(CellmapsInputError, match="share head 'nucleus' but differ in channels"):
        validate_recipe(r)
    r = load_recipe("weakly-points")
    r["decode"]["task"] = "repel"
    with pytest.raises(CellmapsInputError, match="name the head"):
        validate_recipe(r)


def test_channel_mse_reads_one_channel():
    pred = torch.tensor([[[[0.2, 0.8]], [[0.8, 0.2]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    # channel 1: (0.8 - 1)^2 and (0.2 - 0)^2 → mean 0.04
    assert torch.allclose(channel_mse(pred, target, channel=1), torch.tensor([0.04]))
    assert torch.allclose(
        channel_mse(pred, target, channel=0), torch.tensor([0.64 * 0.5 + 0.64 * 0.5])
    )


def test_mask_labels_and_mask_filtered_repel():
    mask = np.zeros((20, 20), np.uint16)
    mask[2:6, 2:6] = 1
    mask[10:15, 10:15] = 7
    lab = mask_labels(mask)
    assert lab.dtype == np.uint8 and lab.sum() == 16 + 25 and set(np.unique(lab)) == {0, 1}
    rep = mask_filtered_repel(mask, np.array([[3.5, 3.5], [12.0, 12.0]]))
    assert (rep[mask == 0] == 0).all() and rep[12, 12] == pytest.approx(1.0)
    # at (3, 3): d1 = √0.5, d2 = dist to (12, 12) → 1 / (1 + 0.05 d1 (1 + d1/d2))
    d1, d2 = np.hypot(0.5, 0.5), np.hypot(9, 9)
    assert rep[3, 3] == pytest.approx(1 / (1 + 0.05 * d1 * (1 + d1 / d2)), rel=1e-5)


# -- instances ---------------------------------------------------------------------------------
def test_argmax_instances_split_touching_discs_at_their_seeds():
    yy, xx = np.mgrid[:40, :60]
    a = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 60.0)
    b = np.exp(-((yy - 20) ** 2 + (xx - 32) ** 2) / 60.0)
    prob = np.maximum(a, b)  # two blobs merged above 0.5 along the neck
    assert argmax_instances(prob, np.zeros((0, 2))).max() == 1  # no seed: one component
    lab = argmax_instances(prob, np.array([[20, 20], [20, 32]]))
    assert lab.max() == 2
    assert lab[20, 20] != lab[20, 32] and lab[20, 25] == lab[20, 20] and lab[20, 27] == lab[20, 32]
    assert ((lab > 0) == (prob > 0.5)).all()  # the argmax mask is kept, only split
    # seeds outside the mask or the image are ignored; a speck under min_area is dropped
    prob[2:4, 50:52] = 0.9
    lab = argmax_instances(prob, np.array([[20, 20], [20, 32], [0, 0], [-5, 99]]), min_area=5)
    assert lab.max() == 2 and lab[2, 50] == 0


# -- training from points only ---------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny weakly-points model trained on synthetic points, with Dataset.mask made to
    fail: a mask opened during training would raise."""
    from cellmaps.training import train

    root = tmp_path_factory.mktemp("wp") / "data"
    write_points_dataset(root, 6, seed=1)
    opened = []
    orig = Dataset.mask

    def no_masks(self, *a, **k):
        opened.append(a)
        raise AssertionError("a mask was opened during points-only training")

    Dataset.mask = no_masks
    try:
        out = root.parent / "wp.safetensors"
        model = train(tiny_recipe(420), [(str(root), None, 1.0)], out, progress=False)
    finally:
        Dataset.mask = orig
    assert not opened
    return model, root.parent


def test_trains_from_points_without_opening_a_mask(tmp_path):
    from cellmaps.training import train

    root = tmp_path / "data"
    write_points_dataset(root, 2, seed=3, masks=False)  # no masks/ folder at all
    model = train(
        tiny_recipe(3), [(str(root), None, 1.0)], tmp_path / "m.safetensors", progress=False
    )
    assert model.recipe["name"] == "weakly-points"


def test_points_only_model_detects_and_outlines_unseen_images(trained, tmp_path):
    """Quality floor on unseen synthetic images: detection F1 and AJI of `predict --masks`."""
    import tifffile

    from cellmaps.cli import main
    from cellmaps.metrics import aji
    from cellmaps.metrics.matching import match_hungarian

    model, folder = trained
    test = tmp_path / "test"
    write_points_dataset(test, 3, seed=99)
    out = tmp_path / "pred"
    assert main(["predict", str(folder / "wp.safetensors"), str(test / "images"), "--out",
                 str(out), "--masks", "--quiet"]) == 0  # fmt: skip
    ds, pred = Dataset(test), Dataset(out)
    tp = n_t = n_p = 0
    ajis = []
    for i in ds.ids():
        t, p = ds.points(i).coords, pred.points(i).coords
        m = match_hungarian(t, p, 4.0)
        tp += len(m.truth_idx)
        n_t, n_p = n_t + len(t), n_p + len(p)
        ajis.append(aji(ds.mask(i), tifffile.imread(out / "masks" / f"{i}.tif")))
    f1 = 2 * tp / (n_t + n_p)
    assert f1 >= 0.85, f1
    assert np.mean(ajis) >= 0.5, ajis


def test_geojson_points_stand_in_for_points_csv(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "points").mkdir()
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "images" / "a.png")
    feats = [
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[10.5, 5.5], [30.5, 20.5]]},
         "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}}},
    ]  # fmt: skip
    (root / "points" / "a.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": feats})
    )
    pts = Dataset(root).points("a")
    # QuPath's pixel corners → cellmaps' pixel centres: x 10.5 → col 10, y 5.5 → row 5
    assert np.allclose(pts.coords, [[5.0, 10.0], [20.0, 30.0]])
    assert list(pts.labels) == ["Tumor", "Tumor"]
    feats[0]["geometry"]["coordinates"].append([80.0, 5.0])  # outside the 40-px-wide image
    (root / "points" / "a.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": feats})
    )
    with pytest.raises(CellmapsInputError, match="a.geojson"):
        Dataset(root).points("a")
    poly = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [5, 1], [5, 5], [1, 1]]]},
    }
    (root / "points" / "a.geojson").write_text(json.dumps([poly]))
    with pytest.raises(CellmapsInputError, match="no point"):
        Dataset(root).points("a")


def test_trainer_steps_follow_the_round_robin_schedule(tmp_path):
    """Iteration i minimises only the loss of task i mod 3 (Eq. 4); the naive sum all three."""
    from cellmaps.training.data import load_training_data
    from cellmaps.training.fit import Trainer

    root = tmp_path / "data"
    write_points_dataset(root, 2, seed=5, masks=False)
    for combine in ("round_robin", "sum"):
        r = tiny_recipe(6, combine)
        data = load_training_data([(str(root), None, 1.0)], r, progress=False)
        trainer = Trainer(r, data, tmp_path / f"{combine}.safetensors", progress=False)
        for i in range(6):
            row = trainer.step()
            parts = {k: row[f"loss_{k}"] for k in ("voronoi", "repel", "cluster")}
            want = parts[["voronoi", "repel", "cluster"][i % 3]]
            if combine == "sum":
                want = sum(parts.values())
            assert row["loss"] == pytest.approx(want, rel=1e-5), (combine, i, row)


def test_min_peak_distance_is_2_5_um_when_the_pixel_size_is_known(tmp_path):
    """Trained with --pixel-size, the model sets its peak distance to 2.5 µm in net pixels
    (0.5 µm/px → 5 px, 0.25 µm/px → 10 px) and tuning on validation keeps it; without a
    pixel size tuning chooses the distance."""
    from cellmaps.training import train

    root = tmp_path / "data"
    write_points_dataset(root, 2, seed=7, masks=False)
    src, val = [(str(root), None, 1.0)], [(str(root), None)]
    for um_per_px, want in ((0.5, 5), (0.25, 10)):
        r = tiny_recipe(2)
        model = train(r, src, tmp_path / f"m{want}.safetensors", val, progress=False,
                      pixel_size=um_per_px)  # fmt: skip
        assert model.decode["min_distance"] == want
        assert model.training["train_radius_um"] == pytest.approx(
            model.training["train_radius"] * um_per_px
        )
    r = tiny_recipe(2)
    r["decode"]["min_distance"] = 9  # outside the tuning grid (2..6): tuning replaces it
    model = train(r, src, tmp_path / "free.safetensors", val, progress=False)
    assert model.decode["min_distance"] != 9


def test_cli_encoder_weights_and_combine_are_checked_before_training(tmp_path, capsys):
    """--encoder-weights needs a ResNet U-Net recipe and an existing file; --combine takes
    only the known combiners; each refused with one line and exit 2, nothing written."""
    from cellmaps.cli import main

    root = tmp_path / "data"
    write_points_dataset(root, 1, seed=0, masks=False)
    weights = tmp_path / "resnet.safetensors"
    weights.write_bytes(b"not read: the checks come first")
    base = ["train", "--data", str(root), "--out", str(tmp_path / "m.safetensors")]
    cases = [
        (["--recipe", "micronet", "--encoder-weights", str(weights)], "needs a ResNet U-Net recipe"),
        (["--recipe", "weakly-points", "--encoder-weights", str(tmp_path / "no.pth")],
         "encoder weights file does not exist"),
    ]  # fmt: skip
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(base + ["--recipe", "weakly-points", "--combine", "average"])
    assert exc.value.code == 2 and "--combine" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_combine_sets_the_recipe_combiner(tmp_path, capsys):
    from cellmaps.cli import main
    from cellmaps.model import Model

    root = tmp_path / "data"
    write_points_dataset(root, 2, seed=0, masks=False)
    out = tmp_path / "m.safetensors"
    argv = ["train", "--recipe", "weakly-points", "--data", str(root), "--split", "",
            "--val-split", "", "--iterations", "2", "--crop", "64", "--batch", "2",
            "--combine", "uncertainty", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert Model.load(out).recipe["combine"]["kind"] == "uncertainty"


def test_repel_loss_reads_the_nucleus_channel_of_the_shared_head():
    """The recipe's repel task (Eq. 3) compares the softmax head's nucleus channel (1), not
    its background channel (0), with the filtered repel code: logits (0, 2) everywhere give
    p(nucleus) = σ(2) = 0.8808, so against a code of 1 the loss is (1 − 0.8808)² = 0.01420
    (hand computed), where the background channel would give 0.8808² = 0.7758."""
    import torch

    from cellmaps.recipes import load_recipe
    from cellmaps.training.fit import task_losses

    tasks = [t for t in load_recipe("weakly-points")["tasks"] if t["name"] == "repel"]
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 2.0
    target = torch.ones(1, 1, 4, 4)
    loss = task_losses({"nucleus": logits}, {"filtered_repel": target}, tasks)["repel"]
    assert float(loss) == pytest.approx((1 - 1 / (1 + np.exp(-2.0))) ** 2, rel=1e-5)
    assert float(loss) == pytest.approx(0.01420, abs=1e-5)
