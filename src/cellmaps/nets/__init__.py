"""Nets (torch): U-Net with N decoders, residual U-Net with multi-context aggregation,
ResNet-encoder U-Net, and a registry that builds them from a recipe's ``net`` section."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cellmaps.nets.blocks import ACTIVATIONS, HeadSpec, apply_activation
from cellmaps.nets.cascade import CascadedUNet
from cellmaps.nets.residual_unet import ResidualUNet
from cellmaps.nets.resnet_unet import ResNetUNet, load_encoder_weights
from cellmaps.nets.unet import MultiDecoderUNet

NETS = ("unet", "residual_unet", "resnet_unet", "cascade")


def build_net(kind: str, in_channels: int, heads: Sequence[HeadSpec], **options) -> nn.Module:
    """Build a net by name.

    ``unet`` takes ``decoders`` (list of lists of head names; default one decoder per
    head), ``cross`` ({j: i}), ``base``, ``depth``, ``dropout``. ``residual_unet`` takes
    ``base``, ``depth``, ``dropout``, ``mca_levels`` and ``roi_head`` (name of a head
    that becomes the sibling ROI branch). ``resnet_unet`` takes ``resnet_depth``,
    ``width``, ``decoder_base``, ``dropout``. ``cascade`` (two U-Nets in series, the
    second fed the first head's output) takes ``base``, ``depth``, ``dropout``.
    """
    heads = list(heads)
    by_name = {h.name: h for h in heads}
    if kind == "unet":
        groups = options.pop("decoders", None) or [[h.name] for h in heads]
        decoders = [[by_name[n] for n in g] for g in groups]
        cross = {int(k): int(v) for k, v in (options.pop("cross", None) or {}).items()}
        return MultiDecoderUNet(in_channels, decoders, cross=cross, **options)
    if kind == "residual_unet":
        roi = options.pop("roi_head", None)
        roi_spec = by_name.get(roi) if roi else None
        main = [h for h in heads if h is not roi_spec]
        return ResidualUNet(in_channels, main, roi_head=roi_spec, **options)
    if kind == "resnet_unet":
        return ResNetUNet(in_channels, heads, **options)
    if kind == "cascade":
        return CascadedUNet(in_channels, heads, **options)
    raise ValueError(f"unknown net {kind!r}; known: {NETS}")


__all__ = [
    "ACTIVATIONS",
    "NETS",
    "HeadSpec",
    "CascadedUNet",
    "MultiDecoderUNet",
    "ResNetUNet",
    "ResidualUNet",
    "apply_activation",
    "build_net",
    "load_encoder_weights",
]
