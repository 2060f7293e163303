"""Sliding-window prediction with overlap blending (torch), for images of any size.

:class:`TiledInferer` holds the tiling (tile, stride, trim, batch, blend). It predicts a
whole in-memory image (:meth:`TiledInferer.predict`) or *streams* an image of any size row
band by row band (:meth:`TiledInferer.stream`): it reads only the rows one row of tiles
needs, keeps the blended maps of at most one tile's height of rows, and hands finished map
rows to the caller (a decoder) as soon as no later tile touches them. Both go through the
same code, tiles on the same global grid and batches within one row of tiles, so a streamed
image gives bit-identical maps to the whole image — and so does any band of rows of it
streamed on its own (how a slide is split between workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
# read_rows(i0, i1) → the image rows [i0, i1) as (C, i1 - i0, W) float32, ready for the net
RowReader = Callable[[int, int], np.ndarray]
# skip_tile(r0, r1, c0, c1) → True when the tile over those image rows/cols can be left out
TileFilter = Callable[[int, int, int, int], bool]


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering [0, length) with the given stride; the last tile ends at length."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def blend_window(tile: int, mode: str, trim: int) -> np.ndarray:
    """Per-pixel weight of a tile: 'mean' = 1 (0 on the ``trim`` px at each edge), or
    'gaussian' (σ = tile/8, MONAI's default) times the same trim mask."""
    w = np.ones((tile, tile), dtype=np.float32)
    if mode == "gaussian":
        ax = np.arange(tile) - (tile - 1) / 2
        g = np.exp(-(ax**2) / (2 * (tile / 8) ** 2))
        w = np.outer(g, g).astype(np.float32)
    elif mode != "mean":
        raise ValueError(f"blend must be 'mean' or 'gaussian', got {mode!r}")
    if trim:
        w[:trim] = w[-trim:] = 0
        w[:, :trim] = w[:, -trim:] = 0
    return w


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for positions outside it mirrored without
    repeating the edge, as ``np.pad(mode='reflect')`` does (periodically for pads longer
    than the axis), so any padded row or column can be read straight from the source."""
    index = np.asarray(index, dtype=np.int64)
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    k = np.mod(index, period)
    return np.where(k < length, k, period - k)


@dataclass
class TiledInferer:
    """The tiling of sliding-window prediction.

    The image is (virtually) reflect-padded by ``margin = max((tile − stride) // 2, trim)``
    on every side, so border pixels get context too; tiles are cut at ``stride`` on that
    padded grid and run ``batch`` at a time; each tile's outputs (after the head
    activations, computed by ``forward``) are weighted by :func:`blend_window` — ``trim`` px
    at each tile edge, where zero padding inside the net distorts outputs, get weight 0
    (default (tile − stride) // 4) — summed and divided by the summed weights (DeepDistance
    §3.3: overlapping predictions averaged per pixel).
    """

    tile: int = 256
    stride: int = 192
    batch: int = 4
    blend: str = "mean"
    trim: int | None = None

    def __post_init__(self) -> None:
        if self.stride < 1 or self.stride > self.tile:
            raise ValueError(f"stride must be in 1..tile ({self.tile}), got {self.stride}")
        self.trim = (self.tile - self.stride) // 4 if self.trim is None else int(self.trim)
        if 2 * self.trim >= self.tile or self.tile - 2 * self.trim < self.stride:
            raise ValueError(
                f"trim {self.trim} leaves gaps between tiles of {self.tile} at stride {self.stride}"
            )
        self.margin = max((self.tile - self.stride) // 2, self.trim)
        self.weight = blend_window(self.tile, self.blend, self.trim)

    def grid(self, height: int, width: int) -> tuple[list[int], list[int]]:
        """Tile row and column origins on the padded grid of an image (H, W)."""
        m, t = self.margin, self.tile
        ph, pw = max(height + 2 * m, t), max(width + 2 * m, t)
        return tile_starts(ph, t, self.stride), tile_starts(pw, t, self.stride)

    def tiles_over(self, height: int, width: int, rows: tuple[int, int] | None = None) -> int:
        """How many tiles :meth:`stream` runs for image ``rows`` (all by default)."""
        return len(self._tile_rows_for(height, width, rows)) * len(self.grid(height, width)[1])

    def _tile_rows_for(self, height: int, width: int, rows) -> list[int]:
        a, b = (0, height) if rows is None else rows
        starts = self.grid(height, width)[0]
        lo, hi = a + self.margin, b + self.margin  # padded rows wanted
        return [r for r in starts if r < hi and r + self.tile > lo]

    def stream(
        self,
        forward: Forward,
        read_rows: RowReader,
        shape: tuple[int, int],
        rows: tuple[int, int] | None = None,
        skip_tile: TileFilter | None = None,
        progress: bool = False,
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Blended maps of image ``rows`` = [a, b) (all rows by default), in order.

        Yields ``(r0, maps)`` with ``maps[name]`` of shape (C_head, n, W) for image rows
        [r0, r0 + n); the yielded bands are consecutive and cover [a, b) exactly. Only the
        rows one row of tiles needs are read at a time. Tiles for which ``skip_tile`` says
        True are not run (their pixels get no weight; pixels no run tile covers are 0).
        """
        h, w = shape
        a, b = (0, h) if rows is None else (max(0, rows[0]), min(h, rows[1]))
        m, t = self.margin, self.tile
        col_starts = self.grid(h, w)[1]
        pw = max(w + 2 * m, t)
        cols = reflect_index(np.arange(pw) - m, w)
        row_starts = self._tile_rows_for(h, w, (a, b))
        acc: dict[str, np.ndarray] = {}
        norm = np.zeros((0, pw), np.float32)
        acc0 = row_starts[0] if row_starts else a + m  # padded row of acc[:, 0]
        emitted = a + m  # next padded row to hand out
        bar = tqdm(total=len(row_starts) * len(col_starts), desc="tiles", unit="tile",
                   disable=not progress, leave=False)  # fmt: skip
        for k, r in enumerate(row_starts):
            # grow the accumulators to cover this row of tiles
            need = r + t - acc0
            if norm.shape[0] < need:
                extra = need - norm.shape[0]
                norm = np.concatenate([norm, np.zeros((extra, pw), np.float32)])
                for name in acc:
                    acc[name] = np.concatenate(
                        [acc[name], np.zeros((acc[name].shape[0], extra, pw), np.float32)], 1
                    )
            band = None
            run = [
                q
                for q in col_starts
                if skip_tile is None
                or not skip_tile(max(r - m, 0), min(r + t - m, h), max(q - m, 0), min(q + t - m, w))
            ]
            if run:
                idx = reflect_index(np.arange(r, r + t) - m, h)
                lo = int(idx.min())
                band = read_rows(lo, int(idx.max()) + 1)[:, idx - lo][:, :, cols]
            for j in range(0, len(run), self.batch):
                chunk = run[j : j + self.batch]
                x = np.stack([band[:, :, q : q + t] for q in chunk])
                out = forward(torch.from_numpy(np.ascontiguousarray(x)))
                for name, tensor in out.items():
                    arr = tensor.float().cpu().numpy()
                    if name not in acc:
                        acc[name] = np.zeros((arr.shape[1], norm.shape[0], pw), np.float32)
                    for q, a_tile in zip(chunk, arr, strict=True):
                        acc[name][:, r - acc0 : r - acc0 + t, q : q + t] += a_tile * self.weight
                for q in chunk:
                    norm[r - acc0 : r - acc0 + t, q : q + t] += self.weight
            bar.update(len(col_starts))
            # rows no later tile touches are final
            done = row_starts[k + 1] if k + 1 < len(row_starts) else b + m
            done = min(done, b + m)
            if done > emitted:
                if not acc:  # nothing run yet (every tile skipped): zero maps of the heads
                    probe = read_rows(0, min(h, 1))
                    x = np.zeros((1, probe.shape[0], t, t), np.float32)
                    acc = {
                        name: np.zeros((o.shape[1], norm.shape[0], pw), np.float32)
                        for name, o in forward(torch.from_numpy(x)).items()
                    }
                yield emitted - m, self._finish(acc, norm, emitted - acc0, done - acc0, m, w)
                emitted = done
            drop = emitted - acc0
            if drop > 0 and k + 1 < len(row_starts):
                drop = min(drop, row_starts[k + 1] - acc0)
                norm = norm[drop:]
                for name in acc:
                    acc[name] = acc[name][:, drop:]
                acc0 += drop
        bar.close()

    @staticmethod
    def _finish(acc, norm, i0, i1, m, w) -> dict[str, np.ndarray]:
        n = np.maximum(norm[i0:i1], 1e-12)
        return {
            name: (a[:, i0:i1] / n)[:, :, m : m + w].astype(np.float32) for name, a in acc.items()
        }

    def predict(
        self, forward: Forward, image: np.ndarray, progress: bool = False
    ) -> dict[str, np.ndarray]:
        """Every head's blended map for a whole (C, H, W) float32 image (name → (C, H, W))."""
        c, h, w = image.shape
        parts: dict[str, list[np.ndarray]] = {}
        for _, maps in self.stream(
            forward, lambda i0, i1: image[:, i0:i1], (h, w), None, None, progress
        ):
            for name, arr in maps.items():
                parts.setdefault(name, []).append(arr)
        return {name: np.concatenate(p, axis=1) for name, p in parts.items()}


def predict_tiled(
    forward: Forward,
    image: np.ndarray,
    tile: int = 256,
    stride: int = 192,
    batch: int = 4,
    blend: str = "mean",
    trim: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Predict every head on a (C, H, W) float32 image tile by tile and blend the overlaps
    (:class:`TiledInferer` with these settings). Memory for the net grows with ``tile`` and
    ``batch``; the output maps are the size of the image.

    Returns
    -------
    dict name → (C_head, H, W) float32
    """
    return TiledInferer(tile, stride, batch, blend, trim).predict(forward, image, progress)
