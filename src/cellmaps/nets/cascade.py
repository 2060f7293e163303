"""Two U-Nets in series (DeepDistance's CascadedClassificationInner, after Ram et al. 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cellmaps.nets.blocks import HeadSpec, apply_activation
from cellmaps.nets.unet import MultiDecoderUNet


class CascadedUNet(nn.Module):
    """The first U-Net maps the image to the first head (e.g. cell-pixel classification);
    the second U-Net sees only that head's activated output (e.g. the cell posterior) and
    maps it to the remaining heads (e.g. the inner distance). No features are shared; both
    are trained end to end through the activation.

    Parameters
    ----------
    in_channels : int
    heads : list of HeadSpec
        At least two: ``heads[0]`` for the first net, the rest for the second.
    base, depth, dropout :
        As :class:`MultiDecoderUNet`, for both nets.
    """

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[HeadSpec],
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        heads = list(heads)
        if len(heads) < 2:
            raise ValueError("a cascade needs two heads (first net, second net)")
        self.first_spec = heads[0]
        self.first = MultiDecoderUNet(in_channels, [[heads[0]]], base, depth, dropout)
        self.second = MultiDecoderUNet(heads[0].channels, [heads[1:]], base, depth, dropout)
        self.head_specs = heads

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.first(x)
        name = self.first_spec.name
        posterior = apply_activation(out[name], self.first_spec.activation)
        return {name: out[name], **self.second(posterior.to(x.dtype))}
