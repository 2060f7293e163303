"""Engine: nets, losses, recipes, training (incl. exact resume), tiled inference, decoding,
model files and the train/tune/predict CLI. Small nets and images keep it fast."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cellmaps.cli import main
from cellmaps.errors import CellmapsInputError
from cellmaps.inference import predict_tiled, tile_starts
from cellmaps.losses import (
    RoundRobin,
    Staged,
    UncertaintyWeighting,
    WeightedSum,
    correlation_penalty,
    masked_cross_entropy,
    weighted_bce,
    weighted_mse,
)
from cellmaps.model import Model
from cellmaps.modelfile import load_model_file, read_state_dict
from cellmaps.nets import HeadSpec, build_net
from cellmaps.postprocess import find_peaks, find_peaks_per_class, h_maxima_peaks_reference
from cellmaps.recipes import list_recipes, load_recipe, validate_recipe
from cellmaps.targets import proximity
from cellmaps.training.data import load_training_data, make_batch
from cellmaps.training.fit import Trainer

torch.set_num_threads(2)


# -- nets --------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("size", [(75, 75), (33, 50)])
def test_every_net_runs_on_odd_sizes_and_channel_counts(channels, size):
    heads = [HeadSpec("a", 2, "softmax"), HeadSpec("b", 1, "sigmoid")]
    nets = [
        build_net("unet", channels, heads, base=4, depth=3, decoders=[["a"], ["b"]], cross={1: 0}),
        build_net(
            "unet",
            channels,
            heads,
            base=4,
            depth=3,
            decoders=[["a"], ["b"]],
            cross={1: 0},
            output_stride=2,
        ),  # fmt: skip
        build_net("residual_unet", channels, heads, base=4, depth=4, roi_head="b"),
        build_net("residual_unet", channels, heads, base=4, depth=4, output_stride=2),
        build_net("residual_unet", channels, heads, base=4, depth=4, output_stride=4),
        build_net("resnet_unet", channels, heads, resnet_depth=18, width=8, decoder_base=4),
    ]
    x = torch.randn(2, channels, *size)
    for net in nets:
        net.eval()
        out = net(x)
        assert set(out) == {"a", "b"}
        assert out["a"].shape == (2, 2, *size) and out["b"].shape == (2, 1, *size)


def test_residual_unet_has_ten_numbered_blocks_and_freezing_works():
    from cellmaps.training.fit import freeze_blocks

    net = build_net("residual_unet", 3, [HeadSpec("p")], base=4, depth=4)
    blocks = net.numbered_blocks()
    assert len(blocks) == 10
    freeze_blocks(net, 3)
    for k, block in enumerate(blocks, start=1):
        assert all(p.requires_grad == (k > 3) for p in block.parameters())
    with pytest.raises(CellmapsInputError, match="only 10 blocks"):
        freeze_blocks(net, 11)


@pytest.mark.parametrize("stride", [2, 4])
def test_output_stride_heads_are_the_coarse_heads_resized_bilinearly(stride):
    """At output stride s the heads see the decoder at 1/s resolution (one full-resolution
    up block fewer per halving) and their logits are that map resized bilinearly: computed
    here from the output block's own result, by hand with F.interpolate."""
    import torch.nn.functional as F

    net = build_net("residual_unet", 3, [HeadSpec("p", 2)], base=4, depth=4,
                    output_stride=stride).eval()  # fmt: skip
    full = build_net("residual_unet", 3, [HeadSpec("p", 2)], base=4, depth=4)
    assert len(net.up) == len(full.up) - (stride.bit_length() - 1)
    seen = {}
    net.output.register_forward_hook(lambda m, i, o: seen.update(coarse=o[0]))
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        out = net(x)["p"]
    assert seen["coarse"].shape[-2:] == (64 // stride, 48 // stride)
    expected = F.interpolate(seen["coarse"], size=(64, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
    # the stride-1 net's parameter names are those of models saved before output_stride
    assert set(full.state_dict()) >= {"up.3.up.weight", "output.mca.0.weight"}
    assert "up.3.up.weight" not in net.state_dict()


@pytest.mark.parametrize("stride", [2, 4])
def test_unet_output_stride_heads_are_the_coarse_heads_resized_and_cropped(stride):
    """The U-Net at output stride s: each decoder stops log2(s) levels early (the cross
    connections too), the heads see 1/s of the padded input, and their logits are that map
    resized bilinearly to the padded size and cropped: computed here by hand."""
    import torch.nn.functional as F

    heads = [HeadSpec("a", 2, "softmax"), HeadSpec("b", 1, "sigmoid")]
    opts = dict(base=4, depth=3, decoders=[["a"], ["b"]], cross={1: 0})
    net = build_net("unet", 3, heads, output_stride=stride, **opts).eval()
    full = build_net("unet", 3, heads, **opts)
    for dec, dec_full in zip(net.decoders, full.decoders, strict=True):
        assert len(dec.ups) == len(dec_full.ups) - (stride.bit_length() - 1)
    x = torch.randn(1, 3, 61, 45)  # padded to 64 × 48 (depth 3: multiples of 8)
    with torch.no_grad():
        last = net.decoder_features(x)
        out = net(x)
    assert [f.shape[-2:] for f in last] == [(64 // stride, 48 // stride)] * 2
    for feats, group in zip(last, net.heads, strict=True):
        for head in group:
            coarse = head(feats)
            expected = F.interpolate(coarse, size=(64, 48), mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[head.spec.name], expected[..., :61, :45])
    assert "decoders.0.ups.2.weight" in full.state_dict()
    assert "decoders.0.ups.2.weight" not in net.state_dict()


def test_output_stride_in_recipes():
    """Stride 1 is left out of a validated recipe (saved models keep their fingerprints);
    2 is kept and builds a stride-2 net; 3, or a stride on a net that has none, is refused."""
    from cellmaps.nets import net_from_config

    r = load_recipe("micronet")
    assert "output_stride" not in r["net"]
    assert (
        "output_stride"
        not in validate_recipe({**r, "net": {**r["net"], "output_stride": 1}})["net"]
    )
    two = validate_recipe({**r, "net": {**r["net"], "output_stride": 2}})
    assert two["net"]["output_stride"] == 2
    assert net_from_config(two["net"], 3, [HeadSpec("p")]).output_stride == 2
    with pytest.raises(CellmapsInputError, match="output_stride"):
        validate_recipe({**r, "net": {**r["net"], "output_stride": 3}})
    u = load_recipe("deepsplit")
    two = validate_recipe({**u, "net": {**u["net"], "output_stride": 2}})
    assert net_from_config(two["net"], 3, [HeadSpec("segmentation", 2), HeadSpec(
        "separation", 2)]).output_stride == 2  # fmt: skip
    c = load_recipe("branch-net")
    with pytest.raises(CellmapsInputError, match="needs a net that takes it"):
        validate_recipe({**c, "net": {**c["net"], "output_stride": 2}})


def test_resnet_encoder_loads_user_weights_by_torchvision_names(tmp_path):
    from cellmaps.nets import load_encoder_weights

    a = build_net("resnet_unet", 3, [HeadSpec("p")], resnet_depth=18, width=8)
    state = {k: v + 1.0 for k, v in a.encoder.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 64)
    torch.save(state, tmp_path / "resnet.pth")
    b = build_net("resnet_unet", 1, [HeadSpec("p")], resnet_depth=18, width=8)
    missing = load_encoder_weights(b, tmp_path / "resnet.pth")
    assert missing == []
    assert torch.equal(b.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert b.encoder.conv1.weight.shape[1] == 1  # 3-channel stem adapted to 1 channel


# -- losses ------------------------------------------------------------------------------------
def test_weighted_mse_by_hand():
    y = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]]])  # mean 0.5
    p = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # ½[(0 + 5·0.5)·1 + (2 + 2.5)·1] / 4 = ½(2.5 + 4.5)/4
    assert weighted_mse(p, y, lam=5).item() == pytest.approx(0.5 * 7.0 / 4)


def test_weighted_mse_weighs_an_empty_sample_like_the_batch_background():
    """Eq. 2 gives an all-zero target weight 0 everywhere (an empty-image negative would teach
    nothing); the default borrows the batch's mean ȳ for it. Worked by hand: sample 0 as in
    the test above (ȳ 0.5), sample 1 empty with a spurious peak of 2 predicted at one pixel:
    ½·(0 + 5·0.5)·2² / 4 = 1.25. Sample 0 keeps Eq. 2's value."""
    y = torch.tensor([[[[0.0, 2.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    p = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])
    assert weighted_mse(p, y, lam=5).tolist() == pytest.approx([0.5 * 7.0 / 4, 1.25])
    assert weighted_mse(p, y, lam=5, empty="zero").tolist() == pytest.approx([0.5 * 7.0 / 4, 0])
    # a batch of empty samples only: nothing to borrow, Eq. 2's 0
    assert weighted_mse(p[1:], y[1:], lam=5).tolist() == [0.0]
    # per channel: channel 1 is empty in sample 0 only, and borrows sample 1's channel-1 mean
    y2 = torch.zeros(2, 2, 2, 2)
    y2[0, 0, 0, 0] = 4.0  # sample 0: channel 0 mean 1, channel 1 empty
    y2[1, 1, 0, 0] = 8.0  # sample 1: channel 1 mean 2, channel 0 empty
    p2 = y2.clone()
    p2[0, 1, 1, 1] = 1.0  # error 1 on sample 0's empty channel
    # ½·(0 + 5·2)·1 / 4 = 1.25
    assert weighted_mse(p2, y2, lam=5).tolist() == pytest.approx([1.25, 0.0])
    with pytest.raises(ValueError, match="empty"):
        weighted_mse(p, y, empty="none")


def test_masked_cross_entropy_ignores_unlabelled_pixels():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    labels = torch.full((1, 3, 3), 255)
    labels[0, 0, 0], labels[0, 1, 1] = 1, 0
    loss = masked_cross_entropy(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits[0, :, [0, 1], [0, 1]].T, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.sum().backward()
    g = logits.grad.abs().sum(1)[0]
    assert g[0, 0] > 0 and g[1, 1] > 0 and g[0, 1] == 0 and g[2, 2] == 0
    assert masked_cross_entropy(logits, torch.full((1, 3, 3), 255)).item() == 0.0


def test_weighted_bce_and_correlation_penalty():
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]]])
    w = torch.tensor([[[[3.0, 1.0]]]])
    assert weighted_bce(logits, target, w).item() == pytest.approx(np.log(2))
    maps = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]], [[1.0, 1.0]]]])  # (1, 3, 1, 2)
    # pairs: (0,1): 3, (0,2): 3, (1,2): 3 → 9 / 2 pixels
    assert correlation_penalty(maps).item() == pytest.approx(4.5)


def test_combiners():
    losses = {"a": torch.tensor(1.0), "b": torch.tensor(10.0), "c": torch.tensor(100.0)}
    assert WeightedSum({"a": 1, "b": 0.1, "c": 0}).forward(losses, 0).item() == pytest.approx(2.0)
    rr = RoundRobin(["a", "b", "c"])
    assert [rr.forward(losses, i).item() for i in range(4)] == [1.0, 10.0, 100.0, 1.0]
    st = Staged(
        [
            {"iterations": 5, "weights": {"a": 1.0}},
            {"iterations": 5, "weights": {"a": 0.3, "b": 1.0}},
        ]
    )
    assert st.forward(losses, 4).item() == 1.0 and st.forward(losses, 5).item() == pytest.approx(
        10.3
    )
    uw = UncertaintyWeighting(["a", "b"])
    total = uw.forward(losses, 0)
    total.backward()
    assert total.item() == pytest.approx(11.0) and uw.log_vars.grad is not None


# -- recipes ------------------------------------------------------------------------------------
def test_bundled_recipes_validate_and_bad_keys_are_named():
    assert "micronet" in list_recipes()
    for name in list_recipes():
        load_recipe(name)
    raw = yaml.safe_load(open(load_recipe.__globals__["recipe_path"]("micronet")))
    bad = json.loads(json.dumps(raw))
    bad["optimizer"]["momentun"] = 0.9
    with pytest.raises(CellmapsInputError, match="unknown recipe key 'optimizer.momentun'"):
        validate_recipe(bad, "r.yaml")
    bad = json.loads(json.dumps(raw))
    bad["tasks"][0]["loss"] = "l1"
    with pytest.raises(CellmapsInputError, match=r"'tasks\[0\].loss' must be one of"):
        validate_recipe(bad, "r.yaml")
    bad = json.loads(json.dumps(raw))
    bad["training"]["iterations"] = "many"
    with pytest.raises(CellmapsInputError, match="'training.iterations' must be int"):
        validate_recipe(bad, "r.yaml")


# -- a tiny synthetic dataset ---------------------------------------------------------------------
def tiny_recipe(**training):
    r = load_recipe("micronet")
    r["net"].update(base=4, depth=2)
    r["training"].update(
        iterations=6, batch=2, crop=48, val_every=3, checkpoint_every=3, precision="fp32"
    )
    r["training"].update(training)
    r["schedule"]["monitor"] = "loss"
    r["augment"].update(rotate=10.0, elastic=1.0)
    r["inference"].update(tile=64, stride=48)
    return r


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Dark discs on a light background with their centres as points (train and val)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "images").mkdir()
    (root / "points").mkdir()
    rng = np.random.default_rng(0)
    splits = ["id,split,group"]
    for k in range(4):
        img = np.full((80, 90, 3), 210, np.uint8)
        pts = rng.uniform(8, [72, 82], size=(10, 2))
        yy, xx = np.mgrid[:80, :90]
        for r, c in pts:
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 16] = (80, 40, 120)
        img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{k}.png")
        rows = ["x,y,label"] + [f"{c:.2f},{r:.2f},nucleus" for r, c in pts]
        (root / "points" / f"im{k}.csv").write_text("\n".join(rows) + "\n")
        splits.append(f"im{k},{'val' if k == 3 else 'train'},g")
    (root / "splits.csv").write_text("\n".join(splits) + "\n")
    return root


def test_augmented_batches_keep_image_and_targets_aligned(tiny_dataset):
    r = tiny_recipe()
    r["augment"].update(rotate=30.0, elastic=2.0, color=0.0)
    data = load_training_data([(str(tiny_dataset), "train", 1.0)], r, progress=False)
    x, t, w, present = make_batch(data, np.random.default_rng(1), 8, 48, r["augment"])
    assert (
        x.shape == (8, 3, 48, 48)
        and t["proximity"].shape == (8, 1, 48, 48)
        and w.tolist() == [1.0] * 8
        and present["proximity"].tolist() == [1.0] * 8
    )
    # proximity peaks sit on dark nucleus pixels after the same warp/flip as the image
    dark = x.mean(1) < 0  # standardised: nuclei are below the mean
    peak = t["proximity"][:, 0] > 4.0
    assert peak.sum() > 0 and dark[peak].float().mean() > 0.9


def test_tile_sampling_and_staged_freezing(tiny_dataset, tmp_path):
    from cellmaps.training.data import tile_origins

    r = tiny_recipe(iterations=4, sampling="tiles", tile_stride=24)
    r["net"].update(kind="unet", depth=2, decoders=[["proximity"], ["aux"]])
    r["tasks"].append({**r["tasks"][0], "name": "aux"})
    r["combine"].update(
        kind="staged",
        stages=[
            {"iterations": 2, "weights": {"proximity": 1.0}, "freeze": ["decoders.1", "heads.1"]},
            {"iterations": 2, "weights": {"proximity": 0.3, "aux": 1.0}},
        ],
    )
    r = validate_recipe(r)
    data = load_training_data([(str(tiny_dataset), "train", 1.0)], r, progress=False)
    tiles = tile_origins(data, 48, 24)
    assert (
        len(tiles) == 3 * 3 * 3 and (0, 32, 42) in tiles
    )  # 80x90 images: rows 0,24,32; cols 0,24,42
    tr = Trainer(r, data, tmp_path / "s.safetensors", progress=False)
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    tr.step()
    tr.step()
    after = tr.net.state_dict()
    assert torch.equal(before["decoders.1.ups.0.weight"], after["decoders.1.ups.0.weight"])
    assert not torch.equal(before["decoders.0.ups.0.weight"], after["decoders.0.ups.0.weight"])
    tr.step()
    assert not torch.equal(
        before["decoders.1.ups.0.weight"], tr.net.state_dict()["decoders.1.ups.0.weight"]
    )


def test_a_few_training_steps_lower_the_loss_on_a_real_crop(crchisto):
    from cellmaps.io import Dataset, normalize_image
    from cellmaps.training.data import Sample, TrainingData

    r = tiny_recipe()
    r["optimizer"].update(kind="adam", lr=0.003)
    ds = Dataset(crchisto)
    img = normalize_image(ds.image("crc_img1"))[:128, :128].transpose(2, 0, 1).copy()
    pts = ds.points("crc_img1").coords
    pts = pts[(pts < 127.5).all(1)]
    target = proximity(pts, (128, 128), scale=5)[None]
    data = TrainingData([Sample("crc_img1", img, {"proximity": target})], r["tasks"])
    data.mean, data.std = img.mean((1, 2)), img.std((1, 2))
    trainer = Trainer(r, data, "/tmp/unused.safetensors", progress=False)
    rng = np.random.default_rng(0)
    x, t, w, _ = make_batch(
        data, rng, 2, 96, {**r["augment"], "rotate": 0.0, "elastic": 0.0, "color": 0.0}
    )
    from cellmaps.training.fit import task_losses

    losses = []
    for _ in range(25):
        trainer.net.train()
        out = trainer.net(x)
        loss = task_losses(out, t, r["tasks"])["proximity"].mean()
        trainer.opt.zero_grad()
        loss.backward()
        trainer.opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resume_reproduces_the_uninterrupted_run_exactly(tiny_dataset, tmp_path):
    r = tiny_recipe()
    data = load_training_data([(str(tiny_dataset), "train", 1.0)], r, progress=False)
    full = Trainer(r, data, tmp_path / "full.safetensors", progress=False)
    full.fit()
    r_half = tiny_recipe(iterations=3)
    half = Trainer(r_half, data, tmp_path / "half.safetensors", progress=False)
    half.fit()  # stops after 3 iterations and leaves half.safetensors.ckpt
    resumed = Trainer(r, data, tmp_path / "half.safetensors", progress=False)
    resumed.resume()
    assert resumed.iteration == 3
    resumed.fit()
    a, b = full.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full.log.csv").read_text().splitlines()[0].startswith("iteration")


def test_corrupt_checkpoint_is_refused(tiny_dataset, tmp_path):
    r = tiny_recipe()
    data = load_training_data([(str(tiny_dataset), "train", 1.0)], r, progress=False)
    tr = Trainer(r, data, tmp_path / "m.safetensors", progress=False)
    with pytest.raises(CellmapsInputError, match="no checkpoint"):
        tr.resume()
    (tmp_path / "m.safetensors.ckpt").write_bytes(b"garbage")
    with pytest.raises(CellmapsInputError, match="checkpoint is corrupt"):
        tr.resume()


# -- inference ---------------------------------------------------------------------------------
def test_tile_starts_cover_the_axis():
    assert tile_starts(100, 64, 32) == [0, 32, 36]
    assert tile_starts(50, 64, 32) == [0]


@pytest.mark.parametrize(
    "depth,tile,stride,trim", [(1, 64, 32, 16), (1, 48, 16, 16), (2, 96, 48, 24)]
)
def test_tiled_prediction_equals_whole_image_away_from_borders(depth, tile, stride, trim):
    torch.manual_seed(0)
    net = build_net("unet", 3, [HeadSpec("p", 2)], base=4, depth=depth, dropout=0.0).eval()
    img = torch.randn(1, 3, 128, 96)

    def forward(x):
        with torch.no_grad():
            return net(x)

    whole = forward(img)["p"][0].numpy()
    tiled = predict_tiled(forward, img[0].numpy(), tile=tile, stride=stride, batch=3, trim=trim)[
        "p"
    ]
    assert tiled.shape == whole.shape
    b = 24
    assert np.allclose(tiled[:, b:-b, b:-b], whole[:, b:-b, b:-b], atol=1e-5)
    g = predict_tiled(
        forward, img[0].numpy(), tile=tile, stride=stride, blend="gaussian", trim=trim
    )["p"]
    assert np.allclose(g[:, b:-b, b:-b], whole[:, b:-b, b:-b], atol=1e-5)


def test_small_image_runs_as_one_tile_of_its_padded_size():
    """A 512² image with the bundled tiling (384 / 352: margin 16) runs one 544² tile (512 +
    2 × 16, a multiple of 32) instead of four 384² tiles; a 200 × 300 image one 352² tile
    instead of a 384² one; large images keep the grid. The single tile sees the image
    reflect-padded by the margin: with a 'net' that subtracts each tile's mean (any change
    of the tile changes every output pixel) the map equals that computed on np.pad."""
    from cellmaps.inference.tiles import TiledInferer

    inf = TiledInferer(tile=384, stride=352, trim=16)
    assert inf.for_shape(512, 512).tile == 544 and inf.tiles_over(512, 512) == 1
    assert inf.for_shape(200, 300).tile == 352
    assert inf.for_shape(2048, 2048) is inf and inf.tiles_over(2048, 2048) == 36
    assert inf.for_shape(1000, 1000) is inf  # 1056² would be above 2 × 384 on a side
    img = np.random.default_rng(0).random((1, 200, 300)).astype(np.float32)
    seen = []

    def forward(x):
        seen.append(tuple(x.shape))
        return {"m": x - x.mean(dim=(2, 3), keepdim=True)}

    out = inf.predict(forward, img)["m"][0]
    assert seen == [(1, 1, 352, 352)]
    m = inf.margin
    padded = np.pad(img[0], ((m, 352 - 200 - m), (m, 352 - 300 - m)), mode="reflect")
    assert np.allclose(out, img[0] - padded.mean(), atol=1e-5)
    # a block of rows streamed on its own gets the whole image's single tile
    rows = [band for _, band in inf.stream(forward, lambda i0, i1, j0, j1: img[:, i0:i1, j0:j1],
                                           (200, 300), rows=(50, 120))]  # fmt: skip
    assert np.allclose(np.concatenate([b["m"] for b in rows], 1)[0], out[50:120], atol=1e-6)


# -- decoding ----------------------------------------------------------------------------------
def test_peaks_are_found_at_known_positions_and_xi_suppresses():
    pts = np.array([[10.0, 12.0], [30.0, 40.0], [50.0, 15.0]])
    m = np.maximum(
        proximity(pts[:2], (64, 64), scale=5), 0.3 * proximity(pts[2:], (64, 64), scale=5)
    )
    coords, scores = find_peaks(m, xi=0.2, min_distance=3)
    assert np.allclose(np.sort(coords, 0), np.sort(pts, 0))
    coords, _ = find_peaks(m, xi=0.5, min_distance=3)
    assert len(coords) == 2
    assert find_peaks(np.zeros((5, 5)))[0].shape == (0, 2)
    plateau = np.zeros((9, 9))
    plateau[3:5, 3:6] = 1.0
    c, _ = find_peaks(plateau)
    assert c.tolist() == [[3.5, 4.0]]


def test_per_class_peaks_take_the_argmax_class():
    a = proximity(np.array([[10.0, 10.0]]), (32, 32))
    b = proximity(np.array([[20.0, 22.0]]), (32, 32))
    maps = np.stack([a, b * 0.9, 0.5 * a])  # class 2 echoes class 0 at a lower level
    coords, scores, cls = find_peaks_per_class(maps, xi=0.5, min_distance=3)
    order = np.argsort(coords[:, 0])
    assert np.allclose(coords[order], [[10, 10], [20, 22]]) and cls[order].tolist() == [0, 1]


def test_h_maxima_reference_drops_shallow_peaks():
    m = np.zeros((20, 20))
    m[5, 5] = 1.0
    m[14, 14] = 0.15
    assert h_maxima_peaks_reference(m, 0.1).tolist() == [[5.0, 5.0], [14.0, 14.0]]
    assert h_maxima_peaks_reference(m, 0.2).tolist() == [[5.0, 5.0]]


# -- model files ---------------------------------------------------------------------------------
def tiny_model():
    r = tiny_recipe()
    return Model(r, 3, [0.5, 0.5, 0.5], [0.2, 0.2, 0.2], training={"label": "nucleus"})


def test_model_file_round_trip(tmp_path):
    m = tiny_model()
    m.save(tmp_path / "m.safetensors")
    back = Model.load(tmp_path / "m.safetensors")
    img = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    a, b = m.predict_maps(img)["proximity"], back.predict_maps(img)["proximity"]
    assert np.array_equal(a, b)
    assert back.recipe == m.recipe and back.decode == m.decode
    # float16 storage halves the file and changes the maps only at float16 precision
    m.save(tmp_path / "h.safetensors", half=True)
    half = Model.load(tmp_path / "h.safetensors")
    size = (tmp_path / "h.safetensors").stat().st_size, (tmp_path / "m.safetensors").stat().st_size
    float_bytes = sum(v.numel() * 4 for v in m.net.state_dict().values() if v.is_floating_point())
    assert abs((size[1] - size[0]) - float_bytes / 2) < 1024  # only the header differs besides
    assert all(
        v.dtype == torch.float32 for v in half.net.state_dict().values() if v.is_floating_point()
    )
    c = half.predict_maps(img)["proximity"]
    assert np.abs(c - a).max() <= 0.02 * np.abs(a).max()


def test_pickled_truncated_and_foreign_model_files_are_refused(tmp_path):
    torch.save({"w": torch.zeros(2), "evil": {"a": 1}}, tmp_path / "p.safetensors")
    with pytest.raises(CellmapsInputError, match="refusing a pickled"):
        Model.load(tmp_path / "p.safetensors")
    m = tiny_model()
    m.save(tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CellmapsInputError, match="cut.safetensors: (corrupt or truncated|not a cellmaps model)"
    ):
        Model.load(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CellmapsInputError, match="without cellmaps metadata"):
        load_model_file(tmp_path / "plain.safetensors")
    with pytest.raises(CellmapsInputError, match="does not exist"):
        Model.load(tmp_path / "none.safetensors")
    assert set(read_state_dict(tmp_path / "m.safetensors")) == set(m.net.state_dict())


# -- CLI: train → tune → predict → evaluate --------------------------------------------------------
def test_cli_train_tune_predict_evaluate(tiny_dataset, tmp_path, capsys):
    recipe = tiny_recipe(iterations=4, val_every=2, checkpoint_every=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "train",
                "--recipe",
                str(path),
                "--data",
                str(tiny_dataset),
                "--out",
                str(model),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        model.is_file()
        and (tmp_path / "m.loss.png").is_file()
        and (tmp_path / "m.log.csv").is_file()
    )
    m = Model.load(model)
    m.decode = m.decode.replace(xi=0.987)  # not on the tuning grid: tune must replace it
    m.save(model)
    assert main(["tune", str(model), "--data", str(tiny_dataset), "--split", "val", "--quiet"]) == 0
    printed = capsys.readouterr().out
    best_xi = float(printed.split("best xi = ")[1].split()[0])
    assert Model.load(model).decode["xi"] == pytest.approx(best_xi)  # stored in the model
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(tiny_dataset), "--out", str(out), "--quiet"]) == 0
    for k in range(4):
        assert (out / "points" / f"im{k}.csv").is_file() and (
            out / "overlays" / f"im{k}.png"
        ).is_file()
        assert (
            json.loads((out / "geojson" / f"im{k}.geojson").read_text())["type"]
            == "FeatureCollection"
        )
    assert (out / "counts.csv").read_text().startswith("id,count")
    val_out = tmp_path / "pred_val"
    assert (
        main(
            [
                "predict",
                str(model),
                str(tiny_dataset),
                "--split",
                "val",
                "--out",
                str(val_out),
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (val_out / "points").iterdir()) == ["im3.csv"]
    report = tmp_path / "eval.json"
    argv = ["evaluate", "--truth", str(tiny_dataset), "--pred", str(out), "--json", str(report)]
    assert main([*argv, "--quiet"]) == 0
    s = json.loads(report.read_text())["summary"]
    assert s["n_images"] == 4 and s["tp"] + s["fn"] == 40  # 10 discs in each of 4 images
    n_pred = sum(
        len((out / "points" / f"im{k}.csv").read_text().splitlines()) - 1 for k in range(4)
    )
    assert s["tp"] + s["fp"] == n_pred
    assert s["f1"] == pytest.approx(2 * s["tp"] / (2 * s["tp"] + s["fp"] + s["fn"]))
    assert main(["predict", str(model), str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "no such image file or folder" in capsys.readouterr().err


def test_model_input_channels_are_matched_or_refused():
    m = tiny_model()
    grey16 = (np.random.default_rng(0).random((40, 44)) * 65535).astype(np.uint16)
    x = m.prepare(grey16)
    assert x.shape == (3, 40, 44) and np.allclose(x[0], x[1])
    with pytest.raises(
        CellmapsInputError, match=r"image has 4 channels \(numbered 0 to 3\), the model expects 3"
    ):
        m.prepare(np.zeros((10, 10, 4), np.uint8), "four.tif")
    assert m.predict_maps(grey16)["proximity"].shape == (1, 40, 44)


def test_recipes_command_lists_every_recipe(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in list_recipes():
        assert name in out
    assert "MicroNet" in out


def test_large_images_are_decoded_in_strips_exactly_like_the_whole_map():
    from scipy import ndimage

    from cellmaps.inference.stream import (
        BandDecoder,
        finish_candidates,
        peak_chunk_decoder,
        peak_overlap,
    )

    m = tiny_model()
    m.decode = m.decode.replace(xi=0.3, min_distance=3)
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((700, 90)), 2).astype(np.float32)
    prox = ndimage.gaussian_filter(img, 1)[None]
    whole = m.decode_maps({"proximity": prox})
    base = img[..., None]
    decoder = BandDecoder(
        peak_chunk_decoder(m, lambda i0, i1, j0, j1: base[i0:i1, j0:j1], img.shape),
        (0, 700),
        peak_overlap(3),
        chunk=128,
        top_task="proximity",
    )
    for r0 in range(0, 700, 37):  # map rows arrive in bands of another size
        decoder.feed(r0, {"proximity": prox[:, r0 : r0 + 37]})
    strips = finish_candidates(m, decoder.finish())
    assert len(whole) > 50
    assert np.array_equal(np.sort(whole.coords, 0), np.sort(strips.coords, 0))
    assert np.allclose(np.sort(whole.scores), np.sort(strips.scores))


def test_bundled_default_model_runs_on_the_sample_image(tmp_path, capsys):
    from cellmaps.model import default_model_path, load_model

    path = default_model_path()
    assert path.stat().st_size <= 5_000_000
    model = load_model()
    assert model.training["n_images"] > 0 and "description" in model.training
    out = tmp_path / "sample-results"
    assert main(["predict", "--sample", "--out", str(out), "--quiet"]) == 0
    lines = (out / "points" / "ihc.csv").read_text().splitlines()
    assert lines[0] == "x,y,label,score"
    # independent checks by colour deconvolution (scikit-image rgb2hed): the detections sit on
    # stained nuclei, and their number is within 2× of the Otsu haematoxylin blob count
    from scipy import ndimage
    from skimage import color, filters, measure

    from cellmaps.io import read_image, read_points
    from cellmaps.predict import sample_image_path

    img = read_image(sample_image_path())
    hed = color.rgb2hed(img)
    stain = filters.gaussian(
        np.maximum(hed[..., 0] / hed[..., 0].std(), hed[..., 2] / hed[..., 2].std()), 1
    )
    near = ndimage.maximum_filter(stain, size=7)  # the stain within 3 px of a point
    rc = np.rint(read_points(out / "points" / "ihc.csv").coords).astype(int)
    on_stain = np.mean(near[rc[:, 0], rc[:, 1]] > np.percentile(stain, 70))
    assert on_stain >= 0.9  # random points: about 0.6
    h = hed[..., 0]
    labels = measure.label(h > filters.threshold_otsu(h))
    n_blobs = int((np.bincount(labels.ravel())[1:] > 30).sum())  # blobs larger than 30 px
    assert 0.5 * n_blobs <= len(rc) <= 2 * n_blobs
    assert (out / "overlays" / "ihc.png").is_file() and (out / "geojson" / "ihc.geojson").is_file()
    assert (out / "counts.csv").read_text().splitlines()[1].startswith("ihc,")


def test_predict_names_a_bad_image_and_keeps_earlier_outputs(tmp_path, capsys):
    import tifffile

    model = tmp_path / "m.safetensors"
    tiny_model().save(model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(imgs / "a_good.png")
    bad = np.zeros((40, 40, 3), np.float32)
    bad[3, 4] = np.nan
    tifffile.imwrite(imgs / "b_bad.tif", bad, photometric="rgb")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(imgs), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "b_bad.tif" in err and "NaN" in err
    assert (out / "points" / "a_good.csv").is_file()  # written before the failure, intact
    assert not any(p.name.startswith(".") for p in (out / "points").iterdir())  # no temp files left


@pytest.fixture(scope="module")
def tiny_mask_dataset(tmp_path_factory):
    """Touching grey discs with instance masks and centroid points (train and val)."""
    import tifffile

    from cellmaps.io import mask_centroids

    root = tmp_path_factory.mktemp("tinymasks")
    for sub in ("images", "masks", "points", "rois"):
        (root / sub).mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:72, :72]
    splits = ["id,split,group"]
    for k in range(3):
        mask = np.zeros((72, 72), np.uint16)
        for i, (r, c) in enumerate(rng.uniform(10, 62, size=(8, 2)), start=1):
            mask[(yy - r) ** 2 + (xx - c) ** 2 <= 49] = i
        img = np.where(mask > 0, 180, 60).astype(np.uint8) + rng.integers(0, 20, mask.shape).astype(
            np.uint8
        )
        Image.fromarray(img).save(root / "images" / f"m{k}.png")
        tifffile.imwrite(root / "masks" / f"m{k}.tif", mask)
        cents, _ = mask_centroids(mask)
        # two classes (for KiNet's per-class maps) and a left/right ROI, half annotated
        rows = ["x,y,label"] + [
            f"{c:.2f},{r:.2f},{'big' if i % 2 else 'small'}" for i, (r, c) in enumerate(cents)
        ]
        roi = np.where(xx < 36, 1, 2).astype(np.uint8)
        roi[:36] = 0
        Image.fromarray(roi).save(root / "rois" / f"m{k}.png")
        (root / "points" / f"m{k}.csv").write_text("\n".join(rows) + "\n")
        splits.append(f"m{k},{'val' if k == 2 else 'train'},g")
    (root / "splits.csv").write_text("\n".join(splits) + "\n")
    return root


@pytest.mark.parametrize("name", list_recipes())
def test_every_bundled_recipe_trains_tunes_and_detects(name, tiny_mask_dataset, tmp_path):
    from cellmaps.training import train

    r = load_recipe(name)
    r["net"].update(base=4, depth=2)
    r["training"].update(
        iterations=3, batch=2, crop=48, val_every=3, checkpoint_every=3, precision="fp32"
    )
    if r["training"]["sampling"] == "tiles":
        r["training"]["tile_stride"] = 24
    r["inference"].update(tile=64, stride=48)
    root = str(tiny_mask_dataset)
    model = train(
        r, [(root, "train", 1.0)], tmp_path / "m.safetensors", [(root, "val")], progress=False
    )
    assert Model.load(tmp_path / "m.safetensors").decode == model.decode
    image = np.asarray(Image.open(tiny_mask_dataset / "images" / "m2.png"))
    pts = model.detect(image)
    assert pts.coords.shape[1] == 2 and (pts.scores is not None)
    # Three steps train nothing, so the quality floor is on the rest of the pipeline: with the
    # net's maps replaced by the maps it is trained to give (the recipe's targets of this
    # validation image) the recipe's decoding at its default setting must find every disc
    # it can tell apart — all of them, or for a decoder of the foreground alone (touching
    # discs are one region) every disc that touches no other.
    from skimage.measure import label

    from cellmaps.io import Dataset
    from cellmaps.metrics import match_points
    from cellmaps.recipes import task_head
    from cellmaps.training.data import load_training_data

    data = load_training_data(
        [(root, "val", 1.0)], r, progress=False, classes=model.training.get("classes")
    )
    targets = data.samples[0].targets
    ideal = {}
    for t in r["tasks"]:
        m = targets[t["target"]].astype(np.float32)
        head = task_head(t)
        if t["activation"] != "softmax":
            ideal[head] = m
        elif t["loss"] == "channel_mse":  # the probability its loss asks of that channel
            two = np.repeat(1.0 - m, t["channels"], axis=0)
            two[t["loss_options"]["channel"]] = m[0]
            ideal[head] = two
        else:
            ideal.setdefault(head, np.zeros((t["channels"], *m.shape[1:]), np.float32))
    from cellmaps.postprocess.decode import Maps

    maps = Maps(ideal)  # the ideal maps, as if predicted on the image
    maps.input_shape = image.shape[:2]
    model.decode = dict(load_recipe(name)["decode"], min_score=0.0)
    found = model.decode_maps(maps)
    ds = Dataset(tiny_mask_dataset)
    truth, mask = ds.points("m2").coords, ds.mask("m2")
    tp = match_points(truth, found.coords, 6.0).tp
    if r["decode"].get("task") == "cells" and not r["decode"].get("boundary_task"):
        regions = label(mask > 0)
        alone = sum(len(np.unique(mask[regions == k])) == 1 for k in range(1, regions.max() + 1))
        assert 0 < alone < len(truth) and tp >= alone, (tp, alone)
    elif r["decode"].get("boundary_task") or r["decode"]["kind"] == "split":
        # components after subtracting the boundary (or, for a U-Net without one, of the
        # cell pixels it is trained on): a disc mostly hidden under its neighbours keeps
        # fewer interior pixels than min_area and cannot be found
        from skimage.transform import resize

        bt = r["decode"].get("boundary_task")
        band = (  # at the training scale
            ideal[bt][0] >= 0.5 if bt else ideal[r["decode"]["task"]][0] < 0.5
        )
        band = resize(band, mask.shape, order=0, preserve_range=True, anti_aliasing=False) > 0
        interior = [((mask == i) & ~band).sum() for i in range(1, mask.max() + 1)]
        big = sum(a >= r["decode"]["min_area"] for a in interior)
        # the split decoder's watershed seeds are min_distance apart: a sliver of a disc at
        # the area limit, touching a neighbour at a corner, can share its neighbour's seed
        slack = 1 if r["decode"]["kind"] == "split" else 0
        assert 0 < big < len(truth) and tp >= big - slack, (tp, interior)
    else:
        assert tp == len(truth) == 8, (tp, len(found))


@pytest.mark.parametrize("tile,stride,trim", [(32, 24, 2), (40, 16, 6)])
def test_tiled_prediction_mirrors_the_image_at_its_borders(tile, stride, trim):
    """Border pixels see the image mirrored about its edge (reflect padding, edge not
    repeated: ... c b | a b c ...): with a 3×3 mean filter as the 'net' the tiled map equals
    scipy's ``uniform_filter(mode='mirror')`` everywhere, borders included, and differs from
    edge padding (``mode='nearest'``) on the border."""
    from scipy import ndimage

    img = np.random.default_rng(0).random((2, 50, 70)).astype(np.float32)
    kernel = torch.full((2, 1, 3, 3), 1 / 9)

    def forward(x):
        return {"m": torch.nn.functional.conv2d(x, kernel, padding=1, groups=2)}

    tiled = predict_tiled(forward, img, tile=tile, stride=stride, batch=2, trim=trim)["m"]
    mirror = np.stack([ndimage.uniform_filter(c, 3, mode="mirror") for c in img])
    nearest = np.stack([ndimage.uniform_filter(c, 3, mode="nearest") for c in img])
    assert np.allclose(tiled, mirror, atol=1e-6)
    assert not np.allclose(tiled[:, 0], nearest[:, 0], atol=1e-3)
