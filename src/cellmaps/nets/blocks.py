"""Small named building blocks shared by the nets (plain PyTorch)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("identity", "relu", "sigmoid", "softmax")


@dataclass(frozen=True)
class HeadSpec:
    """One output of a net: a name, a channel count and the output activation."""

    name: str
    channels: int = 1
    activation: str = "identity"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"head {self.name!r}: activation must be one of {ACTIVATIONS}")
        if self.channels < 1:
            raise ValueError(f"head {self.name!r}: channels must be ≥ 1")


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    """The paper's output activation; 'softmax' runs over the channel axis."""
    if activation == "relu":
        return F.relu(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "softmax":
        return torch.softmax(x, dim=1)
    return x


class Head(nn.Module):
    """1×1 convolution to the head's channels. ``forward`` returns raw logits; the
    activation is applied by the net (losses on logits are more stable, e.g. BCE, CE)."""

    def __init__(self, in_channels: int, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv2d(in_channels, spec.channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBlock(nn.Module):
    """U-Net block: two 3×3 convolutions with ReLU, optional dropout (DeepDistance, DeepSplit)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(
                nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=not batchnorm)
            )
            if batchnorm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class StridedPointwiseConv(nn.Conv2d):
    """A 1×1 convolution with stride s computed as a 1×1 convolution of ``x[..., ::s, ::s]``
    (the same numbers). Written out because torch 2.13's CPU backward of a strided 1×1
    convolution on channels_last tensors with fewer than 16 input channels corrupts the
    heap (seen here with base widths 4 and 8). Parameter names are those of nn.Conv2d."""

    def __init__(self, cin: int, cout: int, stride: int = 1, bias: bool = False) -> None:
        super().__init__(cin, cout, 1, bias=bias)
        self.step = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step > 1:
            x = x[..., :: self.step, :: self.step]
        return F.conv2d(x, self.weight, self.bias)


class ResidualBlock(nn.Module):
    """Residual block of MicroNet/KiNet: conv-BN-ELU, conv-BN, add the shortcut, ELU.

    ``stride=2`` makes the first convolution strided (down-sampling); a 1×1 (strided)
    projection matches the shortcut when the shape changes. Dropout follows the convolutions.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(StridedPointwiseConv(cin, cout, stride), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.elu(self.bn1(self.conv1(x)))
        y = self.drop(self.bn2(self.conv2(y)))
        return F.elu(y + self.short(x))


def pad_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Zero-pad (or crop) ``x`` at the bottom/right so its H, W equal ``ref``'s
    (MicroNet: a 75×75 map down-sampled to 37×37 comes back as 74×74 and is padded to 75)."""
    dh = ref.shape[-2] - x.shape[-2]
    dw = ref.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh))


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` followed by the eval-mode ``bn`` as one convolution:
    W' = W·s, b' = (b − μ)·s + β with s = γ / sqrt(σ² + ε) per output channel."""
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        fused.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the convolution before it, in place: inside
    ``nn.Sequential`` (conv, BN pairs) and the ``convN``/``bnN`` attribute pairs of
    residual blocks (:class:`ResidualBlock`, the ResNet encoder's blocks), each of which
    applies ``bnN`` right after ``convN``. The same function of the input up to float
    rounding, one pass over the activations fewer per convolution (inference only: the
    statistics are frozen)."""
    for child in module.modules():
        if isinstance(child, nn.Sequential):
            items = list(child._modules.items())
            for (k1, a), (k2, b) in zip(items, items[1:], strict=False):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    child._modules[k1] = _folded_conv(a, b)
                    child._modules[k2] = nn.Identity()
        for i in range(1, 4):  # residual blocks' conv1/bn1 … conv3/bn3
            conv, bn = getattr(child, f"conv{i}", None), getattr(child, f"bn{i}", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(child, f"conv{i}", _folded_conv(conv, bn))
                setattr(child, f"bn{i}", nn.Identity())
    return module


def output_level(output_stride: int, depth: int) -> int:
    """The decoder level the heads work at for ``output_stride`` (1 → 0, 2 → 1, 4 → 2)."""
    if output_stride not in (1, 2, 4) or output_stride >= 2**depth:
        raise ValueError(
            f"output_stride must be 1, 2 or 4 and below 2**depth ({2**depth}), got {output_stride}"
        )
    return output_stride.bit_length() - 1
