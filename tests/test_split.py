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
    """Fluorescence-like images of cell pairs pressed together along a contact longer than
    the watershed's border limit, so only the separation map can split them."""
    import tifffile
    from PIL import Image

    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        mask = np.zeros((96, 96), np.int32)
        n = 0
        for r0 in (24, 72):
            for c0 in (22, 70):
                angle = rng.uniform(0, np.pi)
                d = np.array([np.sin(angle), np.cos(angle)]) * 5.0
                centre = np.array([r0, c0]) + rng.uniform(-3, 3, 2)
                pair = discs((96, 96), [tuple(centre - d), tuple(centre + d)], 8)
                mask[pair > 0] = pair[pair > 0] + n
                n += 2
        img = np.where(mask > 0, 170, 30) + rng.normal(0, 8, mask.shape)
        img[np.roll(mask, 1, 1) != mask] -= 40  # a faint dark line where cells meet
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"p{k}.png")
        tifffile.imwrite(root / "masks" / f"p{k}.tif", mask.astype(np.uint16))


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
    tr.step()
    tr.step()
    mid = {k: v.clone() for k, v in tr.net.state_dict().items()}
    assert torch.equal(before[frozen], mid[frozen])
    assert not torch.equal(before[trained], mid[trained])
    tr.step()
    assert not torch.equal(mid[frozen], tr.net.state_dict()[frozen])
