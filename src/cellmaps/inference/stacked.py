"""Small images stacked into one batch of the net (torch).

A small image runs as one tile (:meth:`~cellmaps.inference.tiles.TiledInferer.for_shape`),
one forward pass of batch 1; on two cores a batch of several such tiles runs faster per
tile than each alone. Stacking is done by recording and replaying the forward calls of each
image's own pipeline, so every image is cut, padded, blended and decoded exactly as it is
alone; only the net sees the tiles of several images at once:

1. each image's pipeline runs with a :class:`ForwardRecorder`, which keeps the tiles it is
   given and answers zeros (decoding zero maps costs little);
2. :func:`stacked_outputs` runs the recorded tiles of every image, stacked by shape,
   ``batch`` at a time;
3. each image's pipeline runs again with a :class:`ForwardReplay` of its own outputs.

:func:`run_stacked` does the three steps; :meth:`cellmaps.model.Model.detect_many` (a folder
of small images) and the automatic scale estimate (the crops of several factors,
:func:`cellmaps.inference.scale.scale_response`) use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import torch

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
T = TypeVar("T")


class ForwardRecorder:
    """A stand-in for the net that records every batch of tiles and answers zero maps of
    each head's channel count (``channels``: head name → channels)."""

    def __init__(self, channels: Mapping[str, int]) -> None:
        self.channels = dict(channels)
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(x)
        b, _, h, w = x.shape
        return {name: torch.zeros(b, c, h, w) for name, c in self.channels.items()}


class ForwardReplay:
    """Answers the recorded forward calls, in order, with outputs computed beforehand;
    refuses a call that is not the one recorded (the pipeline must run the same way twice)."""

    def __init__(self, calls: Sequence[torch.Tensor], outputs: Sequence[dict[str, torch.Tensor]]):
        self.calls, self.outputs, self.next = list(calls), list(outputs), 0

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.next
        if k >= len(self.calls) or not torch.equal(x, self.calls[k]):
            raise RuntimeError("stacked inference: a forward call differs from the recorded one")
        self.next += 1
        return self.outputs[k]


def stacked_outputs(
    forward: Forward, calls: Sequence[Sequence[torch.Tensor]], batch: int
) -> list[list[dict[str, torch.Tensor]]]:
    """The outputs of ``forward`` for every recorded call of every image (``calls[i][k]``:
    image i's k-th batch of tiles), computed on the tiles of all images stacked by tile shape,
    at most ``batch`` tiles per forward pass. Returns ``outputs[i][k]`` like ``calls``."""
    tiles: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}  # shape → (image, call, row)
    for i, image_calls in enumerate(calls):
        for k, x in enumerate(image_calls):
            for r in range(x.shape[0]):
                tiles.setdefault(tuple(x.shape[1:]), []).append((i, k, r))
    rows: dict[tuple[int, int, int], dict[str, torch.Tensor]] = {}
    for where in tiles.values():
        for start in range(0, len(where), max(1, batch)):
            part = where[start : start + max(1, batch)]
            out = forward(torch.stack([calls[i][k][r] for i, k, r in part]))
            for j, key in enumerate(part):
                rows[key] = {name: t[j] for name, t in out.items()}
    return [
        [
            {
                name: torch.stack([rows[(i, k, r)][name] for r in range(x.shape[0])])
                for name in rows[(i, k, 0)]
            }  # fmt: skip
            for k, x in enumerate(image_calls)
        ]
        for i, image_calls in enumerate(calls)
    ]


def run_stacked(
    runs: Sequence[Callable[[Forward], T]],
    forward: Forward,
    channels: Mapping[str, int],
    batch: int,
) -> list[T]:
    """Each ``run(forward)`` (an image's pipeline given the net to call) with the tiles of
    all runs stacked: every run once with a :class:`ForwardRecorder`, the recorded tiles
    through ``forward`` by :func:`stacked_outputs`, then every run again with a
    :class:`ForwardReplay` of its own outputs. Returns the second runs' results. Each run
    is made twice, so costly work that does not depend on the net (resampling an image)
    belongs before it, not in it. Memory: the outputs of every recorded tile are held at
    once."""
    if len(runs) < 2 or batch <= 1:  # nothing to stack: each run calls the net itself
        return [run(forward) for run in runs]
    recorders = [ForwardRecorder(channels) for _ in runs]
    for run, rec in zip(runs, recorders, strict=True):
        run(rec)
    outputs = stacked_outputs(forward, [r.calls for r in recorders], batch)
    return [
        run(ForwardReplay(rec.calls, out))
        for run, rec, out in zip(runs, recorders, outputs, strict=True)
    ]
