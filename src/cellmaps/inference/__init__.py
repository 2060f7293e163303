"""Inference (torch): tiled and streamed prediction, and streamed decoding of any size."""

from cellmaps.inference.tiles import (
    TiledInferer,
    blend_window,
    predict_tiled,
    reflect_index,
    tile_starts,
)

__all__ = ["TiledInferer", "blend_window", "predict_tiled", "reflect_index", "tile_starts"]
