"""Nets (torch): U-Net with N decoders, residual U-Net with multi-context aggregation,
ResNet-encoder U-Net, and a registry that builds them from a recipe's ``net`` section."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from cellmaps.nets.blocks import ACTIVATIONS, HeadSpec, apply_activation
from cellmaps.nets.cascade import CascadedUNet
from cellmaps.nets.residual_unet import ResidualUNet
from cellmaps.nets.resnet_unet import ResNetUNet, load_encoder_weights
from cellmaps.nets.split_nets import BranchNet, DoubleUNet
from cellmaps.nets.unet import MultiDecoderUNet


def _build_unet(in_channels, heads, **options):
    by_name = {h.name: h for h in heads}
    groups = options.pop("decoders", None) or [[h.name] for h in heads]
    decoders = [[by_name[n] for n in g] for g in groups]
    cross = {int(k): int(v) for k, v in (options.pop("cross", None) or {}).items()}
    return MultiDecoderUNet(in_channels, decoders, cross=cross, **options)


def _build_residual_unet(in_channels, heads, **options):
    roi = options.pop("roi_head", None)
    roi_spec = next((h for h in heads if h.name == roi), None) if roi else None
    main = [h for h in heads if h is not roi_spec]
    return ResidualUNet(in_channels, main, roi_head=roi_spec, **options)


@dataclass(frozen=True)
class NetEntry:
    """A registered net: its builder and the recipe ``net`` keys it takes."""

    build: Callable[..., nn.Module]
    options: tuple[str, ...]


# The one place a net is named: the recipe schema's ``net.kind`` choices and the options
# passed from a recipe both come from here.
NETS: dict[str, NetEntry] = {
    "unet": NetEntry(
        _build_unet, ("base", "depth", "dropout", "decoders", "cross", "output_stride")
    ),
    "residual_unet": NetEntry(
        _build_residual_unet,
        ("base", "depth", "dropout", "mca_levels", "roi_head", "output_stride"),
    ),
    "resnet_unet": NetEntry(ResNetUNet, ("resnet_depth", "width", "decoder_base", "dropout")),
    "cascade": NetEntry(CascadedUNet, ("base", "depth", "dropout")),
    "branch_net": NetEntry(BranchNet, ("base", "depth", "dropout")),
    "double_unet": NetEntry(DoubleUNet, ("base", "depth", "dropout")),
}


def build_net(kind: str, in_channels: int, heads: Sequence[HeadSpec], **options) -> nn.Module:
    """Build a net by name.

    ``unet`` takes ``decoders`` (list of lists of head names; default one decoder per
    head), ``cross`` ({j: i}), ``base``, ``depth``, ``dropout``, ``output_stride``. ``residual_unet`` takes
    ``base``, ``depth``, ``dropout``, ``mca_levels``, ``roi_head`` (name of a head
    that becomes the sibling ROI branch) and ``output_stride`` (1, 2 or 4: the level the
    heads work at, their logits resized to the input). ``resnet_unet`` takes ``resnet_depth``,
    ``width``, ``decoder_base``, ``dropout``. ``cascade`` (two U-Nets in series, the
    second fed the first head's output) takes ``base``, ``depth``, ``dropout``; so do
    DeepSplit's ``branch_net`` and ``double_unet`` (segmentation head, separation head).
    """
    if kind not in NETS:
        raise ValueError(f"unknown net {kind!r}; known: {sorted(NETS)}")
    return NETS[kind].build(in_channels, list(heads), **options)


def net_from_config(net_cfg: dict, in_channels: int, heads: Sequence[HeadSpec]) -> nn.Module:
    """Build the net of a recipe's ``net`` section (only the keys its kind takes)."""
    entry = NETS[net_cfg["kind"]]
    opts = {k: net_cfg[k] for k in entry.options if net_cfg.get(k) is not None}
    return build_net(net_cfg["kind"], in_channels, heads, **opts)


__all__ = [
    "ACTIVATIONS",
    "NETS",
    "HeadSpec",
    "BranchNet",
    "CascadedUNet",
    "DoubleUNet",
    "MultiDecoderUNet",
    "NetEntry",
    "ResNetUNet",
    "ResidualUNet",
    "apply_activation",
    "build_net",
    "load_encoder_weights",
    "net_from_config",
]
