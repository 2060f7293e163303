"""U-Net with a ResNet-18/34/50 encoder (weakly supervised multi-task, Chamanzar & Nie 2020).

Written in plain PyTorch because torchvision does not import beside the local CPU torch
build. Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``…)
so a ResNet state dict the user supplies (e.g. ImageNet weights saved by torchvision) loads
into the encoder with :func:`load_encoder_weights`; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellmaps.modelfile import read_state_dict
from cellmaps.nets.blocks import ConvBlock, Head, HeadSpec, StridedPointwiseConv, pad_to


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(
                StridedPointwiseConv(cin, planes, stride), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or cin != out:
            self.downsample = nn.Sequential(
                StridedPointwiseConv(cin, out, stride), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


RESNET_LAYOUTS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class ResNetEncoder(nn.Module):
    """ResNet stem + four stages; ``width`` 64 = standard ResNet (needed for ImageNet weights)."""

    def __init__(self, in_channels: int, depth: int = 50, width: int = 64) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        block, counts = RESNET_LAYOUTS[depth]
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        self.channels = [width]
        for i, n in enumerate(counts):
            planes = width * 2**i
            layers = []
            for k in range(n):
                layers.append(block(cin, planes, 2 if (k == 0 and i > 0) else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            self.channels.append(cin)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x0 = F.relu(self.bn1(self.conv1(x)))  # /2
        x1 = self.layer1(F.max_pool2d(x0, 3, 2, 1))  # /4
        x2 = self.layer2(x1)  # /8
        x3 = self.layer3(x2)  # /16
        x4 = self.layer4(x3)  # /32
        return [x0, x1, x2, x3, x4]


class ResNetUNet(nn.Module):
    """U-Net decoder on a ResNet encoder; output at full input resolution.

    Parameters
    ----------
    heads : list of HeadSpec
        The weakly supervised paper uses one head with two channels (nucleus/background).
    resnet_depth : {18, 34, 50}
    width : int
        ResNet stem width (64 = standard; smaller for CPU experiments).
    decoder_base : int
        Width of the finest decoder level.
    """

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[HeadSpec],
        resnet_depth: int = 50,
        width: int = 64,
        decoder_base: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, resnet_depth, width)
        enc = self.encoder.channels  # widths at /2, /4, /8, /16, /32
        dec = [decoder_base * 2**i for i in range(5)]  # /1 ... /16
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        cin = enc[4]
        skips = [enc[3], enc[2], enc[1], enc[0], in_channels]
        for lv, skip_c in zip(range(4, -1, -1), skips, strict=True):
            self.ups.append(nn.ConvTranspose2d(cin, dec[lv], 2, stride=2))
            self.blocks.append(ConvBlock(dec[lv] + skip_c, dec[lv], dropout))
            cin = dec[lv]
        self.heads = nn.ModuleList([Head(dec[0], h) for h in heads])
        self.head_specs = list(heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
        feats = self.encoder(xp)
        skips = [feats[3], feats[2], feats[1], feats[0], xp]
        y = feats[4]
        for up, block, skip in zip(self.ups, self.blocks, skips, strict=True):
            y = block(torch.cat([skip, pad_to(up(y), skip)], 1))
        return {hd.spec.name: hd(y)[..., :h, :w] for hd in self.heads}


def load_encoder_weights(net: ResNetUNet, path: str | os.PathLike) -> list[str]:
    """Load a torchvision-style ResNet state dict (safetensors, or a torch file loaded with
    ``weights_only=True``) into the encoder. ``fc.*`` keys are skipped; a first convolution
    with a different channel count is adapted by averaging/repeating over channels.
    Returns the names of encoder parameters that were *not* in the file."""
    state = read_state_dict(path)
    own = net.encoder.state_dict()
    new = {}
    for k, v in state.items():
        if k.startswith("fc.") or k not in own:
            continue
        if k == "conv1.weight" and v.shape[1] != own[k].shape[1]:
            mean = v.mean(1, keepdim=True)
            v = mean.repeat(1, own[k].shape[1], 1, 1) * (3.0 / own[k].shape[1])
        if v.shape != own[k].shape:
            raise ValueError(
                f"{path}: {k} has shape {tuple(v.shape)}, the encoder needs {tuple(own[k].shape)}"
            )
        new[k] = v
    net.encoder.load_state_dict(new, strict=False)
    return sorted(set(own) - set(new))
