"""Losses (torch) and the ways several task losses combine.

Every loss returns one value per sample, shape (B,), so that samples can be weighted
(dataset balancing, MicroNet's L = γ·L_target + L_auxiliary) before averaging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = 255


def mse(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error per sample (DeepDistance's regression loss); ``weights`` (B, 1,
    H, W), when given, multiplies each pixel's error (0 = ignore)."""
    err = (pred.float() - target) ** 2
    if weights is not None:
        err = err * weights
    return err.flatten(1).mean(1)


def weighted_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    lam: float = 5.0,
    weights: torch.Tensor | None = None,
    empty: str = "batch",
) -> torch.Tensor:
    """Weighted MSE, MicroNet Eq. 2 / KiNet Eq. 2 (per class):

    L = ½ Σ_{u,v,s} (y + λ·ȳ_s)(ŷ − y)², normalised by the number of pixels H·W,
    where ȳ_s is the mean of the target's channel s in this sample. ``weights`` (B, 1, H,
    W), when given, multiplies each pixel's term (0 = ignore, e.g. around nuclei whose
    class is unknown).

    On a sample whose channel s holds no object (ȳ_s = 0: an empty-image negative, a crop of
    stroma, a KiNet class absent from the crop) Eq. 2 weighs every pixel 0, so whatever the
    net predicts there costs nothing and training on empty images teaches it nothing (the
    bundled detector still peaked on noise after 10 % empty crops). ``empty="batch"`` (the
    default) gives such a channel the mean ȳ_s of the batch's samples that do hold objects,
    i.e. the background weight of a typical crop; ``empty="zero"`` is Eq. 2 as printed.
    Samples with objects are weighted exactly as in Eq. 2 either way.
    """
    if empty not in ("batch", "zero"):
        raise ValueError(f"weighted_mse: empty must be 'batch' or 'zero', not {empty!r}")
    pred = pred.float()
    ybar = target.mean(dim=(2, 3), keepdim=True)
    if empty == "batch":
        ybar = ybar_for_empty_channels(ybar)
    per_pixel = 0.5 * (target + lam * ybar) * (pred - target) ** 2
    if weights is not None:
        per_pixel = per_pixel * weights
    return per_pixel.sum(dim=(1, 2, 3)) / (target.shape[-1] * target.shape[-2])


def ybar_for_empty_channels(ybar: torch.Tensor) -> torch.Tensor:
    """Per-sample channel means (B, S, 1, 1) where each zero entry is replaced by the mean of
    the batch's nonzero entries of that channel (left 0 if the channel is empty in every
    sample); detached, so it only weighs the loss."""
    has = ybar > 0
    n = has.sum(dim=0, keepdim=True)
    batch_mean = (ybar * has).sum(dim=0, keepdim=True) / n.clamp(min=1)
    return torch.where(has, ybar, batch_mean).detach()


def channel_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    channel: int = 1,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chamanzar & Nie Eq. 3: mean squared error between one channel of an activated
    multi-channel head (the nucleus probability of a softmax head) and a one-channel target
    (the filtered repel code), per sample."""
    return mse(pred[:, channel : channel + 1], target, weights)


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Partial cross-entropy: mean over the pixels whose label is not ``ignore_index``
    (Voronoi labels, KiNet's partially annotated ROIs). A sample with no labelled pixel
    contributes 0."""
    labels = labels.long()
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    keep = (labels != ignore_index).float()
    n = keep.flatten(1).sum(1)
    return (per_pixel * keep).flatten(1).sum(1) / n.clamp(min=1)


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy on logits, each pixel weighted by a weight map (DeepSplit:
    U-Net weight map for segmentation, 1/5/22.6 for separation); weighted mean per sample."""
    per_pixel = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    if weights is None:
        return per_pixel.flatten(1).mean(1)
    return (per_pixel * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp(min=1e-8)


def correlation_penalty(maps: torch.Tensor) -> torch.Tensor:
    """KiNet Eq. 3's inter-class term Σ_{s<t} ĥ_s · ĥ_t, per sample, normalised by the
    pixel count (multiply by η, 1e-6 in the paper). ``maps`` is (B, K, H, W)."""
    maps = maps.float()
    k = maps.shape[1]
    total = maps.new_zeros(maps.shape[0])
    for s in range(k - 1):
        for t in range(s + 1, k):
            total = total + (maps[:, s] * maps[:, t]).flatten(1).sum(1)
    return total / (maps.shape[-1] * maps.shape[-2])


LOSSES = {
    "mse": mse,
    "channel_mse": channel_mse,
    "weighted_mse": weighted_mse,
    "masked_cross_entropy": masked_cross_entropy,
    "weighted_bce": weighted_bce,
}


# -- combiners ----------------------------------------------------------------------------------
class Combiner(nn.Module):
    """Turns per-task losses (each a scalar) into the loss to minimise at an iteration."""

    def forward(
        self, losses: dict[str, torch.Tensor], iteration: int
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class WeightedSum(Combiner):
    """Σ_i w_i L_i (DeepDistance: unit weights, 0.1 for the classification task)."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self.weights = dict(weights)

    def forward(self, losses, iteration):
        return sum(self.weights.get(k, 1.0) * v for k, v in losses.items())


class RoundRobin(Combiner):
    """Chamanzar & Nie's scheduler: iteration i uses only the loss of task i mod T."""

    def __init__(self, order: Sequence[str]) -> None:
        super().__init__()
        self.order = list(order)

    def active(self, iteration: int) -> str:
        return self.order[iteration % len(self.order)]

    def forward(self, losses, iteration):
        return losses[self.active(iteration)]


class UncertaintyWeighting(Combiner):
    """Learned task uncertainty (Kendall et al. 2018): Σ_i exp(−s_i)·L_i + s_i with
    s_i = log σ_i² learned (the ½ factors folded into s_i)."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.log_vars = nn.Parameter(torch.zeros(len(self.names)))

    def forward(self, losses, iteration):
        total = 0.0
        for i, name in enumerate(self.names):
            total = total + torch.exp(-self.log_vars[i]) * losses[name] + self.log_vars[i]
        return total


class Staged(Combiner):
    """Staged training (DeepSplit's cumulative learning): a list of stages, each with an
    iteration count and per-task weights; stage k applies from the end of stage k−1."""

    def __init__(self, stages: Sequence[dict]) -> None:
        super().__init__()
        self.stages = [dict(s) for s in stages]
        self.ends = []
        total = 0
        for s in self.stages:
            total += int(s["iterations"])
            self.ends.append(total)

    def stage(self, iteration: int) -> int:
        for k, end in enumerate(self.ends):
            if iteration < end:
                return k
        return len(self.stages) - 1

    def forward(self, losses, iteration):
        w = self.stages[self.stage(iteration)]["weights"]
        return sum(w.get(k, 0.0) * v for k, v in losses.items())


def _staged(tasks, weights, stages) -> Staged:
    if not stages:
        raise ValueError("combine kind 'staged' needs 'stages'")
    return Staged(stages)


# name -> builder(task names, task weights, stages); the recipe schema's choices come from here
COMBINERS = {
    "sum": lambda tasks, weights, stages: WeightedSum(weights),
    "round_robin": lambda tasks, weights, stages: RoundRobin(tasks),
    "uncertainty": lambda tasks, weights, stages: UncertaintyWeighting(tasks),
    "staged": _staged,
}


def build_combiner(
    kind: str, tasks: Sequence[str], weights: dict[str, float], stages=None
) -> Combiner:
    """The combiner named ``kind`` (one of :data:`COMBINERS`)."""
    if kind not in COMBINERS:
        raise ValueError(f"unknown combiner {kind!r}; known: {sorted(COMBINERS)}")
    return COMBINERS[kind](list(tasks), weights, stages)
