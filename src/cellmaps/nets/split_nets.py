"""DeepSplit's alternative architectures (Torr et al., seeds/deepsplit.md §2.3 and
Appendix Fig. A.1 / A.2): Branch-Net and Double-U-Net. Both are a U-Net for the
segmentation head plus added layers for the separation head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellmaps.nets.blocks import ConvBlock, Head, HeadSpec, apply_activation
from cellmaps.nets.unet import MultiDecoderUNet


def _two_heads(heads: Sequence[HeadSpec], what: str) -> tuple[HeadSpec, HeadSpec]:
    heads = list(heads)
    if len(heads) != 2:
        raise ValueError(f"{what} takes two heads (segmentation, separation), got {len(heads)}")
    return heads[0], heads[1]


class BranchNet(nn.Module):
    """U-Net for ``heads[0]`` (segmentation); an auxiliary branch of three more ConvBlocks
    on the U-Net's last features gives ``heads[1]`` (separation) — Fig. A.1. Cumulative
    training freezes ``branch.`` and ``separation_head.`` in its first stage."""

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[HeadSpec],
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        seg, sep = _two_heads(heads, "branch_net")
        self.unet = MultiDecoderUNet(in_channels, [[seg]], base, depth, dropout)
        self.branch = nn.Sequential(*[ConvBlock(base, base, dropout) for _ in range(3)])
        self.separation_head = Head(base, sep)
        self.head_specs = [seg, sep]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        last = self.unet.decoder_features(x)[0]
        seg_head = self.unet.heads[0][0]
        return {
            seg_head.spec.name: seg_head(last)[..., :h, :w],
            self.separation_head.spec.name: self.separation_head(self.branch(last))[..., :h, :w],
        }


class DoubleUNet(nn.Module):
    """U-Net for ``heads[0]`` (segmentation) followed by a second, smaller U-Net (half the
    width, one level less) that sees the image and the first net's activated output and
    gives ``heads[1]`` (separation) — Fig. A.2. Cumulative training freezes ``second.`` in
    its first stage."""

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[HeadSpec],
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        seg, sep = _two_heads(heads, "double_unet")
        self.seg_spec = seg
        self.first = MultiDecoderUNet(in_channels, [[seg]], base, depth, dropout)
        self.second = MultiDecoderUNet(
            in_channels + seg.channels, [[sep]], max(base // 2, 4), max(depth - 1, 1), dropout
        )
        self.head_specs = [seg, sep]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.first(x)
        posterior = apply_activation(out[self.seg_spec.name], self.seg_spec.activation)
        return {**out, **self.second(torch.cat([x, posterior.to(x.dtype)], 1))}
