"""U-Net with one shared encoder and N decoders (DeepDistance, DeepSplit and their variants)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellmaps.nets.blocks import ConvBlock, Head, HeadSpec, output_level, pad_to


class Decoder(nn.Module):
    """Up-sampling path: 2×2 transposed conv, concatenation with the encoder skip (and,
    optionally, with another decoder's features at the same level), ConvBlock; from the
    bottom up to level ``stop_level`` (0: full resolution)."""

    def __init__(
        self,
        widths: Sequence[int],
        dropout: float,
        cross_widths: Sequence[int] | None = None,
        stop_level: int = 0,
    ):
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        levels = len(widths) - 1 - stop_level  # up steps from the bottom to ``stop_level``
        for i in range(levels):
            cin, cout = widths[-1 - i], widths[-2 - i]
            extra = cross_widths[i] if cross_widths else 0
            self.ups.append(nn.ConvTranspose2d(cin, cout, 2, stride=2))
            self.blocks.append(ConvBlock(2 * cout + extra, cout, dropout))

    def forward(
        self, feats: list[torch.Tensor], cross: list[torch.Tensor] | None = None
    ) -> list[torch.Tensor]:
        x = feats[-1]
        outs = []
        for i, (up, block) in enumerate(zip(self.ups, self.blocks, strict=True)):
            skip = feats[-2 - i]
            parts = [skip, pad_to(up(x), skip)]
            if cross is not None:
                parts.append(cross[i])
            x = block(torch.cat(parts, 1))
            outs.append(x)
        return outs


class MultiDecoderUNet(nn.Module):
    """U-Net with a shared encoder and one decoder per group of heads.

    Parameters
    ----------
    in_channels : int
    decoders : list of list of HeadSpec
        Heads per decoder (DeepDistance: [[inner], [outer]] or [[inner], [outer], [cls]]).
    base : int
        Width of the first level (doubled at each level; U-Net uses 64, we default to 16).
    depth : int
        Number of 2×2 poolings.
    dropout : float
        Dropout after every ConvBlock (DeepDistance/DeepSplit: 0.2).
    cross : dict[int, int], optional
        ``{j: i}``: decoder j also receives decoder i's features at every level
        (DeepSplit's cross connections from the segmentation to the separation decoder).
    output_stride : int
        1, 2 or 4 (not in the papers; the speed issue): the decoders stop one or two levels
        early, the heads work there (1/2 or 1/4 of the input's resolution, with the
        encoder's width at that level) and their logits are resized bilinearly to the input's
        size, so every output is still a full-resolution map.

    Any input size works: the input is reflect-padded to a multiple of 2**depth and the
    outputs are cropped back.
    """

    def __init__(
        self,
        in_channels: int,
        decoders: Sequence[Sequence[HeadSpec]],
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.2,
        cross: dict[int, int] | None = None,
        output_stride: int = 1,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride
        level = output_level(output_stride, depth)
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [
                ConvBlock(in_channels if i == 0 else widths[i - 1], widths[i], dropout)
                for i in range(depth + 1)
            ]
        )
        self.cross = dict(cross or {})
        for j, i in self.cross.items():
            if not (0 <= i < len(decoders) and 0 <= j < len(decoders)) or i >= j:
                raise ValueError(f"cross connection {j}<-{i}: source decoder must come first")
        cross_w = [widths[-2 - k] for k in range(depth - level)]
        self.decoders = nn.ModuleList(
            [
                Decoder(widths, dropout, cross_w if j in self.cross else None, level)
                for j in range(len(decoders))
            ]
        )
        self.heads = nn.ModuleList(
            [nn.ModuleList([Head(widths[level], h) for h in group]) for group in decoders]
        )
        self.head_specs = [h for group in decoders for h in group]

    def decoder_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each decoder's last features (at 1/output_stride of the resolution) for the input
        padded to a multiple of 2**depth; callers crop (and resize) to the input's size."""
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        feats = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        dec_out: list[list[torch.Tensor]] = []
        for j, dec in enumerate(self.decoders):
            cross = dec_out[self.cross[j]] if j in self.cross else None
            dec_out.append(dec(feats, cross))
        return [levels[-1] for levels in dec_out]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x.shape[-2:]
        m = 2**self.depth
        padded = (h + (-h) % m, w + (-w) % m)
        out = {}
        for last, heads in zip(self.decoder_features(x), self.heads, strict=True):
            for head in heads:
                y = head(last)
                if self.output_stride > 1:
                    y = F.interpolate(y, size=padded, mode="bilinear", align_corners=False)
                out[head.spec.name] = y[..., :h, :w]
        return out
