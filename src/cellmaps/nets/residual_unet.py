"""Residual U-Net with multi-context aggregation (MicroNet; KiNet with the ROI branch)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellmaps.nets.blocks import Head, HeadSpec, ResidualBlock, output_level, pad_to


class UpBlock(nn.Module):
    """Transposed conv ×2, zero-pad to the skip's size, concatenate, residual block."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = ResidualBlock(cout + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([skip, pad_to(self.up(x), skip)], 1))


class OutputBlock(nn.Module):
    """Multi-context aggregation + output transition (MicroNet Fig. 2).

    Transposed convolutions bring the outputs of the down-sampling blocks at several
    depths to the output level (full resolution, ``level`` 0, in the paper); they are added
    to the last decoder features and fed to two 3×3 convolutions (the output transition),
    then to the heads. At ``level`` k the block works at 1/2**k of the input's resolution
    with the encoder's width there.
    """

    def __init__(
        self,
        widths: Sequence[int],
        mca_levels: Sequence[int],
        heads: Sequence[HeadSpec],
        level: int = 0,
    ):
        super().__init__()
        c = widths[level]
        self.mca_levels = list(mca_levels)
        if any(lv <= level or lv >= len(widths) for lv in self.mca_levels):
            raise ValueError(
                f"mca_levels must lie between the output level {level} and the depth "
                f"{len(widths) - 1} (exclusive), got {self.mca_levels}"
            )
        self.mca = nn.ModuleList(
            [
                nn.ConvTranspose2d(widths[lv], c, 2 ** (lv - level), stride=2 ** (lv - level))
                for lv in self.mca_levels
            ]
        )
        self.transition = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ELU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ELU(inplace=True),
        )
        self.heads = nn.ModuleList([Head(c, h) for h in heads])

    def forward(self, x: torch.Tensor, down: list[torch.Tensor]) -> list[torch.Tensor]:
        for lv, tconv in zip(self.mca_levels, self.mca, strict=True):
            x = x + pad_to(tconv(down[lv]), x)
        y = self.transition(x)
        return [head(y) for head in self.heads]


class ROIBranch(nn.Module):
    """KiNet's sibling ROI branch: one more residual block after the shared encoder,
    then as many up-sampling residual blocks as needed to reach full resolution (five for
    depth 4), two 3×3 convolutions and a head (softmax over ROI classes)."""

    def __init__(self, widths: Sequence[int], head: HeadSpec) -> None:
        super().__init__()
        self.extra = ResidualBlock(widths[-1], widths[-1], stride=2)
        self.ups = nn.ModuleList()
        cin = widths[-1]
        for lv in range(len(widths) - 1, -1, -1):
            self.ups.append(UpBlock(cin, widths[lv], widths[lv]))
            cin = widths[lv]
        self.out = nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
            nn.ELU(inplace=True),
            nn.Conv2d(widths[0], widths[0], 3, padding=1),
            nn.ELU(inplace=True),
        )
        self.head = Head(widths[0], head)

    def forward(self, down: list[torch.Tensor]) -> torch.Tensor:
        x = self.extra(down[-1])
        for up, skip in zip(self.ups, reversed(down), strict=True):
            x = up(x, skip)
        return self.head(self.out(x))


class ResidualUNet(nn.Module):
    """MicroNet / KiNet network.

    Input transition (one 3×3 conv), ``depth`` residual down blocks joined by strided
    convolutions (widths double except for the last block), ``depth`` up blocks with
    transposed convolutions and zero-padded concatenation, multi-context aggregation, an
    output transition and the heads. Dropout (default 0.5) in the last two down blocks.

    ``output_stride`` 2 or 4 (not in the papers; the speed issue): the decoder stops one or
    two levels early, the multi-context aggregation, output transition and heads work there
    (at 1/2 or 1/4 of the input's resolution, with the encoder's width at that level), and
    the heads' logits are resized bilinearly to the input's size. Every output is a
    full-resolution map, so targets, losses and decoding are those of stride 1 and no
    sub-pixel offsets are needed; the full-resolution decoder block and output transition,
    two thirds of the net's time at stride 1, are what is saved.

    Blocks are numbered 1..2·depth+2 for freezing (10 for depth 4): 1 = input transition,
    2..depth+1 = down blocks, depth+2..2·depth+1 = up blocks, 2·depth+2 = output block
    (one or two up blocks fewer at output stride 2 or 4).
    The ROI branch, when present, is not numbered (it is a sibling, never frozen by k).
    """

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[HeadSpec],
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.5,
        mca_levels: Sequence[int] | None = None,
        roi_head: HeadSpec | None = None,
        output_stride: int = 1,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride
        level = output_level(output_stride, depth)
        widths = [base * 2 ** min(i, depth - 1) for i in range(depth + 1)]
        self.widths = widths
        self.input_transition = nn.Sequential(
            nn.Conv2d(in_channels, base, 3, padding=1, bias=False),
            nn.BatchNorm2d(base),
            nn.ELU(inplace=True),
        )
        self.down = nn.ModuleList()
        for i in range(depth):
            drop = dropout if i >= depth - 2 else 0.0
            self.down.append(ResidualBlock(widths[i], widths[i + 1], stride=2, dropout=drop))
        self.up = nn.ModuleList(
            [UpBlock(widths[i + 1], widths[i], widths[i]) for i in range(depth - 1, level - 1, -1)]
        )
        levels = list(mca_levels) if mca_levels is not None else list(range(level + 1, depth))
        self.output = OutputBlock(widths, levels, heads, level)
        self.head_specs = list(heads) + ([roi_head] if roi_head else [])
        self.roi = ROIBranch(widths, roi_head) if roi_head else None

    def numbered_blocks(self) -> list[nn.Module]:
        """The 2·depth+2 addressable blocks, in order (block k is element k−1)."""
        return [self.input_transition, *self.down, *self.up, self.output]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        x = self.input_transition(x)
        down = [x]
        for block in self.down:
            down.append(block(down[-1]))
        y = down[-1]
        skips = down[len(down) - 1 - len(self.up) : -1]  # the levels the decoder reaches
        for up, skip in zip(self.up, reversed(skips), strict=True):
            y = up(y, skip)
        outs = self.output(y, down)
        if self.output_stride > 1:
            outs = [F.interpolate(o, size=size, mode="bilinear", align_corners=False) for o in outs]
        result = {spec.name: o for spec, o in zip(self.head_specs, outs, strict=False)}
        if self.roi is not None:
            result[self.head_specs[-1].name] = self.roi(down)
        return result
