"""Sliding-window prediction with overlap blending (torch), for images of any size."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm


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


def predict_tiled(
    forward: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    image: np.ndarray,
    tile: int = 256,
    stride: int = 192,
    batch: int = 4,
    blend: str = "mean",
    trim: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Predict every head on a (C, H, W) float32 image tile by tile and blend the overlaps.

    The image is reflect-padded by ``margin = (tile − stride) // 2`` (at least ``trim``)
    on every side, so border pixels get context too; tiles are cut at ``stride`` and run in
    batches of ``batch``; each tile's outputs (after the head activations, computed by
    ``forward``) are weighted by :func:`blend_window` — ``trim`` px at each tile edge,
    where zero padding inside the net distorts outputs, get weight 0 (default
    (tile − stride) // 4) — summed and divided by the summed weights (DeepDistance §3.3:
    overlapping predictions averaged per pixel). Memory for the net grows with ``tile`` and
    ``batch``; the output maps are the size of the image.

    Returns
    -------
    dict name → (C_head, H, W) float32
    """
    c, h, w = image.shape
    if stride < 1 or stride > tile:
        raise ValueError(f"stride must be in 1..tile ({tile}), got {stride}")
    trim = (tile - stride) // 4 if trim is None else int(trim)
    if 2 * trim >= tile or tile - 2 * trim < stride:
        raise ValueError(f"trim {trim} leaves gaps between tiles of {tile} at stride {stride}")
    margin = max((tile - stride) // 2, trim)
    ph, pw = max(h + 2 * margin, tile), max(w + 2 * margin, tile)
    padded = np.pad(
        image, ((0, 0), (margin, ph - h - margin), (margin, pw - w - margin)), mode="reflect"
    )
    weight = blend_window(tile, blend, trim)
    starts = [(r, q) for r in tile_starts(ph, tile, stride) for q in tile_starts(pw, tile, stride)]
    acc: dict[str, np.ndarray] = {}
    norm = np.zeros((ph, pw), dtype=np.float32)
    it = range(0, len(starts), batch)
    for k in tqdm(it, desc="tiles", unit="batch", disable=not progress, leave=False):
        chunk = starts[k : k + batch]
        x = np.stack([padded[:, r : r + tile, q : q + tile] for r, q in chunk])
        out = forward(torch.from_numpy(np.ascontiguousarray(x)))
        for name, t in out.items():
            arr = t.float().cpu().numpy()
            if name not in acc:
                acc[name] = np.zeros((arr.shape[1], ph, pw), dtype=np.float32)
            for (r, q), a in zip(chunk, arr, strict=True):
                acc[name][:, r : r + tile, q : q + tile] += a * weight
        for r, q in chunk:
            norm[r : r + tile, q : q + tile] += weight
    norm = np.maximum(norm, 1e-12)
    return {
        name: (a / norm)[:, margin : margin + h, margin : margin + w].astype(np.float32)
        for name, a in acc.items()
    }
