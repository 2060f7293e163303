"""Optimisers named in the recipes: SGD (Nesterov), Adam, AdaDelta, Ranger (RAdam + Lookahead)."""

from __future__ import annotations

from collections.abc import Iterable

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


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    kind, lr, wd = cfg["kind"], cfg["lr"], cfg["weight_decay"]
    if kind == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"], weight_decay=wd
        )
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if kind == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    if kind == "ranger":
        return Lookahead(torch.optim.RAdam(params, lr=lr, weight_decay=wd))
    raise ValueError(f"unknown optimizer {kind!r}")
