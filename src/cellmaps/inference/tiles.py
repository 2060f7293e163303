"""Sliding-window prediction with overlap blending (torch), for images of any size.

:class:`TiledInferer` holds the tiling (tile, stride, trim, batch, blend). It predicts a
whole in-memory image (:meth:`TiledInferer.predict`) or *streams* an image of any size row
band by row band (:meth:`TiledInferer.stream`): it reads only the rows one row of tiles
needs, keeps the blended maps of at most one tile's height of rows, and hands finished map
rows to the caller (a decoder) as soon as no later tile touches them. Both go through the
same code, tiles on the same global grid and batches within one row of tiles, so a streamed
image gives bit-identical maps to the whole image — and so does any block of it streamed on
its own (how a slide is split between workers), for nets whose output for a tile does not
depend on the batch size (the bundled models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from cellmaps.recipes import tiling_options

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]
# a small image runs as one tile of its padded size, rounded up to this many px (the nets
# pad to a multiple of their total downsampling, at most 32, themselves: reading real
# reflected pixels instead costs nothing), when that tile has fewer pixels than the grid's
# tiles and a side of at most SINGLE_TILE_MAX × the tile (memory stays within a few tiles')
SINGLE_TILE_MULTIPLE = 32
SINGLE_TILE_MAX = 2.0
# read(i0, i1, j0, j1) → image rows [i0, i1) × cols [j0, j1) as (C, n, m) float32 for the net
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
    (default (tile − stride) // 4; at most (tile − stride) // 2, so tiles still cover every
    pixel) — summed and divided by the summed weights (DeepDistance §3.3: overlapping
    predictions averaged per pixel).
    """

    tile: int = 256
    stride: int = 192
    batch: int = 4
    blend: str = "mean"
    trim: int | None = None

    def __post_init__(self) -> None:
        if self.stride < 1 or self.stride > self.tile:
            raise ValueError(f"stride must be in 1..tile ({self.tile}), got {self.stride}")
        # a model's trim meets the tile and stride a user asks for (--tile/--stride): at
        # most half the overlap, so neighbouring tiles still cover every pixel
        overlap = self.tile - self.stride
        self.trim = overlap // 4 if self.trim is None else min(int(self.trim), overlap // 2)
        if self.trim < 0:
            raise ValueError(f"trim must be ≥ 0, got {self.trim}")
        self.margin = overlap // 2  # ≥ trim
        self.weight = blend_window(self.tile, self.blend, self.trim)

    @classmethod
    def from_recipe(cls, recipe: dict, **overrides) -> TiledInferer:
        """The tiling a recipe's ``inference`` section names, with ``overrides`` (tile,
        stride, batch, blend, trim; None = the recipe's)."""
        opts = tiling_options(recipe)
        opts.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**opts)

    def for_shape(self, height: int, width: int) -> TiledInferer:
        """The tiling an image (H, W) runs with: this one, or for a small image one tile of
        its padded size (rounded up to :data:`SINGLE_TILE_MULTIPLE`) with the same margin,
        trim and blend, when that tile has fewer pixels than this grid's tiles and a side of
        at most :data:`SINGLE_TILE_MAX` × ``tile`` — a 512² image otherwise runs four 384²
        tiles (2.25× its pixels). The choice depends on the image's shape alone, so a block
        of an image streamed on its own gets the whole image's tiling."""
        if self.stride == self.tile:  # already one tile per position: no overlap to save
            return self
        q = SINGLE_TILE_MULTIPLE
        side = -(-(max(height, width) + 2 * self.margin) // q) * q
        rows, cols = self.grid(height, width)
        if side > SINGLE_TILE_MAX * self.tile or side**2 >= len(rows) * len(cols) * self.tile**2:
            return self
        one = replace(self, tile=side, stride=side, trim=0)  # stride = tile: one tile
        one.margin, one.trim = self.margin, self.trim  # keep the border context and trim
        one.weight = blend_window(side, self.blend, self.trim)
        return one

    def grid(self, height: int, width: int) -> tuple[list[int], list[int]]:
        """Tile row and column origins on the padded grid of an image (H, W)."""
        m, t = self.margin, self.tile
        ph, pw = max(height + 2 * m, t), max(width + 2 * m, t)
        return tile_starts(ph, t, self.stride), tile_starts(pw, t, self.stride)

    def tiles_over(self, height: int, width: int, rows: tuple[int, int] | None = None) -> int:
        """How many tiles :meth:`stream` runs for image ``rows`` (all by default)."""
        if (one := self.for_shape(height, width)) is not self:
            return one.tiles_over(height, width, rows)
        return len(self._tile_rows_for(height, width, rows)) * len(self.grid(height, width)[1])

    def _tile_rows_for(self, height: int, width: int, rows) -> list[int]:
        return self._tiles_for(self.grid(height, width)[0], (0, height) if rows is None else rows)

    def _tiles_for(self, starts: list[int], span: tuple[int, int]) -> list[int]:
        """The tile origins (padded grid) whose tiles touch image positions [a, b)."""
        lo, hi = span[0] + self.margin, span[1] + self.margin
        return [r for r in starts if r < hi and r + self.tile > lo]

    def stream(
        self,
        forward: Forward,
        read: RowReader,
        shape: tuple[int, int],
        rows: tuple[int, int] | None = None,
        skip_tile: TileFilter | None = None,
        progress: bool = False,
        cols: tuple[int, int] | None = None,
    ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Blended maps of image ``rows`` = [a, b) × ``cols`` = [c, d) (all by default),
        row band by row band, in order.

        ``read(i0, i1, j0, j1)`` returns image rows [i0, i1) × columns [j0, j1) as
        (C, n, m) float32. Yields ``(r0, maps)`` with ``maps[name]`` of shape
        (C_head, n, d − c) for image rows [r0, r0 + n); the yielded bands are consecutive
        and cover [a, b) exactly. Only the pixels one row of tiles needs are read at a time,
        so memory follows the width d − c. Tiles for which ``skip_tile`` says True are not
        run (their pixels get no weight; pixels no run tile covers are 0). Every pixel gets
        the same tiles as in the whole image, in the same batches cut at the block's edges,
        so the maps are the whole image's wherever the block is cut: bit-identical for nets
        whose output for a tile does not depend on the batch size (the bundled models), to
        float rounding otherwise.
        """
        h, w = shape
        if (one := self.for_shape(h, w)) is not self:
            yield from one.stream(forward, read, shape, rows, skip_tile, progress, cols)
            return
        a, b = (0, h) if rows is None else (max(0, rows[0]), min(h, rows[1]))
        c, d = (0, w) if cols is None else (max(0, cols[0]), min(w, cols[1]))
        m, t = self.margin, self.tile
        row_starts_all, col_starts_all = self.grid(h, w)
        row_starts = self._tiles_for(row_starts_all, (a, b))
        col_starts = self._tiles_for(col_starts_all, (c, d))
        col_index = {q: i for i, q in enumerate(col_starts_all)}
        # padded columns [p0, p1) cover every tile run; output columns are [c, d)
        p0 = col_starts[0] if col_starts else c + m
        p1 = col_starts[-1] + t if col_starts else d + m
        pw = p1 - p0
        pcols = reflect_index(np.arange(p0, p1) - m, w)
        j0, j1 = int(pcols.min()), int(pcols.max()) + 1
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
                band = read(lo, int(idx.max()) + 1, j0, j1)[:, idx - lo][:, :, pcols - j0]
            # batches of the whole image's row (by global tile column), so a block runs the
            # same batches as the whole image, cut at its edges
            groups: dict[int, list[int]] = {}
            for q in run:
                groups.setdefault(col_index[q] // self.batch, []).append(q)
            for chunk in groups.values():
                x = np.stack([band[:, :, q - p0 : q - p0 + t] for q in chunk])
                out = forward(torch.from_numpy(np.ascontiguousarray(x)))
                for name, tensor in out.items():
                    arr = tensor.float().cpu().numpy()
                    if name not in acc:
                        acc[name] = np.zeros((arr.shape[1], norm.shape[0], pw), np.float32)
                    for q, a_tile in zip(chunk, arr, strict=True):
                        acc[name][:, r - acc0 : r - acc0 + t, q - p0 : q - p0 + t] += (
                            a_tile * self.weight
                        )
                for q in chunk:
                    norm[r - acc0 : r - acc0 + t, q - p0 : q - p0 + t] += self.weight
            bar.update(len(col_starts))
            # rows no later tile touches are final
            done = row_starts[k + 1] if k + 1 < len(row_starts) else b + m
            done = min(done, b + m)
            if done > emitted:
                if not acc:  # nothing run yet (every tile skipped): zero maps of the heads
                    probe = read(0, min(h, 1), 0, min(w, 1))
                    x = np.zeros((1, probe.shape[0], t, t), np.float32)
                    acc = {
                        name: np.zeros((o.shape[1], norm.shape[0], pw), np.float32)
                        for name, o in forward(torch.from_numpy(x)).items()
                    }
                cut = (c + m - p0, d + m - p0)
                yield emitted - m, self._finish(acc, norm, emitted - acc0, done - acc0, cut)
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
    def _finish(acc, norm, i0, i1, cut) -> dict[str, np.ndarray]:
        n = np.maximum(norm[i0:i1, cut[0] : cut[1]], 1e-12)
        return {name: a[:, i0:i1, cut[0] : cut[1]] / n for name, a in acc.items()}

    def predict(
        self, forward: Forward, image: np.ndarray, progress: bool = False
    ) -> dict[str, np.ndarray]:
        """Every head's blended map for a whole (C, H, W) float32 image (name → (C, H, W))."""
        c, h, w = image.shape
        parts: dict[str, list[np.ndarray]] = {}
        read = lambda i0, i1, j0, j1: image[:, i0:i1, j0:j1]  # noqa: E731
        for _, maps in self.stream(forward, read, (h, w), None, None, progress):
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
