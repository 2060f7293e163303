"""Optimisers and learning-rate schedules named in the recipes.

Optimisers: SGD (Nesterov), Adam, AdamW, AdaDelta, Ranger (RAdam + Lookahead). Schedules
(``optimizer.schedule``), all by iteration and all after an optional linear warm-up:
``plateau`` (÷10 when validation stops improving), ``constant``, ``cosine`` (to
``final_lr`` × lr at the last iteration) and ``onecycle`` (warm-up from lr/25, then cosine).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around an inner optimiser: every ``k`` steps the slow
    weights move ``alpha`` of the way to the fast weights, and the fast weights restart
    there. Written here because torch has no Lookahead; Ranger = Lookahead(RAdam)."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        self.inner = inner
        self.k, self.alpha = k, alpha
        self.param_groups = inner.param_groups
        self.defaults = inner.defaults
        self.state = inner.state
        self._steps = 0
        self._slow = [[p.detach().clone() for p in g["params"]] for g in self.param_groups]

    def step(self, closure=None):
        loss = self.inner.step(closure)
        self._steps += 1
        if self._steps % self.k == 0:
            with torch.no_grad():
                for group, slow in zip(self.param_groups, self._slow, strict=True):
                    for p, s in zip(group["params"], slow, strict=True):
                        s.add_(p - s, alpha=self.alpha)
                        p.copy_(s)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "steps": self._steps, "slow": self._slow}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self._steps = state["steps"]
        with torch.no_grad():
            for mine, theirs in zip(self._slow, state["slow"], strict=True):
                for a, b in zip(mine, theirs, strict=True):
                    a.copy_(b)


OPTIMIZERS: dict[str, Callable[[list, dict], torch.optim.Optimizer]] = {
    "sgd": lambda ps, c: torch.optim.SGD(
        ps,
        lr=c["lr"],
        momentum=c["momentum"],
        nesterov=c["nesterov"],
        weight_decay=c["weight_decay"],
    ),
    "adam": lambda ps, c: torch.optim.Adam(ps, lr=c["lr"], weight_decay=c["weight_decay"]),
    "adamw": lambda ps, c: torch.optim.AdamW(ps, lr=c["lr"], weight_decay=c["weight_decay"]),
    "adadelta": lambda ps, c: torch.optim.Adadelta(ps, lr=c["lr"], weight_decay=c["weight_decay"]),
    "ranger": lambda ps, c: Lookahead(
        torch.optim.RAdam(ps, lr=c["lr"], weight_decay=c["weight_decay"])
    ),
}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    """The recipe's optimiser (``optimizer.kind``, one of :data:`OPTIMIZERS`) over the
    trainable parameters."""
    params = [p for p in params if p.requires_grad]
    if cfg["kind"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg['kind']!r}; known: {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[cfg["kind"]](params, cfg)


# -- learning-rate schedules by iteration -----------------------------------------------------------
ONECYCLE_START = 1.0 / 25.0  # one-cycle's initial lr / max lr (PyTorch's div_factor 25)


def _cosine(progress: float, final: float) -> float:
    """1 at progress 0, ``final`` at progress 1, half a cosine in between."""
    progress = min(max(progress, 0.0), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(
    schedule: str, iteration: int, total: int, warmup: float = 0.0, final: float = 0.01
) -> float:
    """Multiplier of the base learning rate for the step taken at ``iteration`` (0-based)
    of ``total``.

    ``warmup`` is the share of the run (0..1) over which the rate rises linearly: from
    lr/W at the first step to lr at step W (``onecycle``: from lr/25, with 0.3 of the run
    when ``warmup`` is 0). After it, ``constant`` and ``plateau`` stay at 1 (the plateau
    rule then divides the rate on validation), ``cosine`` and ``onecycle`` follow half a
    cosine from 1 to ``final`` at the last step.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; known: {SCHEDULES}")
    if schedule == "onecycle" and warmup <= 0:
        warmup = 0.3
    n_warm = int(round(warmup * total))
    if iteration < n_warm:
        if schedule == "onecycle":
            return ONECYCLE_START + (1 - ONECYCLE_START) * iteration / n_warm
        return (iteration + 1) / n_warm
    if schedule in ("constant", "plateau"):
        return 1.0
    span = max(total - 1 - n_warm, 1)
    return _cosine((iteration - n_warm) / span, final)


SCHEDULES = ("plateau", "constant", "cosine", "onecycle")
