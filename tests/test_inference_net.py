"""The prediction net: BatchNorm folded into the convolutions gives the same outputs as the
trained net with its BatchNorm layers, for every bundled recipe's net, and the folded
copy is remade when the weights change (validation during training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cellmaps.model import Model
from cellmaps.nets.blocks import apply_activation, fold_batchnorm
from cellmaps.recipes import list_recipes, load_recipe

RECIPES = list_recipes()


def randomised(model: Model) -> Model:
    """Give every BatchNorm non-trivial statistics and affine parameters, as training
    would (fresh layers are the identity and would hide a wrong fold)."""
    g = torch.Generator().manual_seed(0)
    for m in model.net.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


def resnet_recipe(depth: int) -> dict:
    recipe = load_recipe("micronet")
    recipe["net"] = {**recipe["net"], "kind": "resnet_unet", "resnet_depth": depth,
                     "width": 8, "decoder_base": 8}  # fmt: skip
    return recipe


@pytest.mark.parametrize("name", RECIPES + ["resnet18", "resnet50"])
def test_folded_net_matches_the_net_with_batchnorm(name):
    recipe = resnet_recipe(int(name[6:])) if name.startswith("resnet") else load_recipe(name)
    torch.manual_seed(0)
    model = randomised(Model(recipe, 3, [0.5] * 3, [0.2] * 3))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.net.modules())
    folded = model._inference_net()
    assert n_bn == 0 or not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref = model.net.eval()(x)
        out = folded(x.contiguous(memory_format=torch.channels_last))
    for k in ref:
        scale = float(ref[k].abs().max()) + 1e-6
        assert torch.allclose(out[k], ref[k], atol=2e-5 * scale, rtol=1e-4), k


def test_fold_by_hand():
    """conv (weight 2, bias 1) then BN (mean 3, var 3.5, ε 0.5, γ 5, β 6) on x = 1:
    ((2·1 + 1 − 3) / 2) · 5 + 6 = 6, and on x = 3: ((6 + 1 − 3) / 2) · 5 + 6 = 16."""
    conv = nn.Conv2d(1, 1, 1)
    bn = nn.BatchNorm2d(1, eps=0.5).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(3.5)
        bn.weight.fill_(5.0)
        bn.bias.fill_(6.0)
    net = fold_batchnorm(nn.Sequential(conv, bn))
    assert isinstance(net[1], nn.Identity)
    x = torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1)
    assert net(x).flatten().tolist() == pytest.approx([6.0, 16.0])


def test_folded_copy_follows_the_weights():
    model = randomised(Model(load_recipe("micronet"), 3, [0.5] * 3, [0.2] * 3))
    model.recipe["training"]["precision"] = "fp32"  # compared with fp32 below (bf16 CPUs)
    x = torch.randn(1, 3, 64, 64)
    first = model._inference_net()
    assert model._inference_net() is first  # cached while the weights stay
    before = model.forward(x)
    with torch.no_grad():  # an optimiser step changes weights in place
        next(model.net.parameters()).mul_(1.5)
    assert model._inference_net() is not first
    after = model.forward(x)
    assert any(not torch.allclose(before[k], after[k]) for k in before)
    with torch.no_grad():
        ref = model.net.eval()(x)
    for k in ref:
        expected = apply_activation(ref[k], model.activations[k])
        assert torch.allclose(after[k], expected, atol=1e-4)


def test_model_trim_meets_a_users_tile_and_stride():
    """A model's 16-px trim with --tile 64 --stride 48 (16 px of overlap) is cut to 8, so
    every pixel is still covered: a per-pixel net gives back its input exactly."""
    from cellmaps.inference import predict_tiled
    from cellmaps.inference.tiles import TiledInferer

    assert TiledInferer(tile=64, stride=48, trim=16).trim == 8
    assert TiledInferer(tile=384, stride=352, trim=16).trim == 16
    assert TiledInferer(tile=256, stride=192).trim == 16  # auto: a quarter of the overlap
    img = np.random.default_rng(0).random((1, 150, 130)).astype(np.float32)
    out = predict_tiled(lambda x: {"p": x}, img, tile=64, stride=48, batch=2, trim=16)["p"]
    assert np.allclose(out, img, atol=1e-6)
