"""Run a model on an image layer's pixels and return napari layer-data tuples (no napari
import: the widget is a thin form over :func:`detect_layers`)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from cellmaps.api import load_model
from cellmaps.errors import CellmapsInputError
from cellmaps.model import Model
from cellmaps.napari_plugin.layers import LayerData, prediction_layers


@functools.lru_cache(maxsize=2)
def _cached_model(name_or_path: str, mtime: float) -> Model:
    """A loaded model, kept between clicks (a file is read again when it changes)."""
    return load_model(name_or_path)


def model_for(name_or_path: str | os.PathLike) -> Model:
    """The bundled model of that name, or the model file (cached while unchanged)."""
    p = Path(name_or_path)
    mtime = p.stat().st_mtime if p.is_file() else 0.0
    return _cached_model(str(name_or_path), mtime)


def layer_pixels(data, rgb: bool, name: str) -> np.ndarray:
    """A 2-D image (H, W) or (H, W, C) from an image layer's data (the full-resolution level
    of a multiscale layer); a clear error for stacks and volumes."""
    if isinstance(data, list | tuple):  # multiscale: level 0
        data = data[0]
    image = np.asarray(data)
    if image.ndim == 2 or (image.ndim == 3 and rgb):
        return image
    raise CellmapsInputError(
        f"image layer {name!r} has shape {image.shape}: cellmaps works on one 2-D image "
        "(grey or RGB); take one plane or time point first"
    )


def detect_layers(
    image: np.ndarray,
    name: str,
    model: str | os.PathLike | Model = "default",
    object_size: float | str | None = None,
    pixel_size: float | None = None,
    outlines: bool | None = None,
) -> list[LayerData]:
    """Points (and a Labels layer of outlines) of ``model`` on one image, named after the
    image layer and the model ("<image> <model>"; napari replaces a layer of that name when
    the same model runs again); the model and its scale in the Points layer's metadata. ``outlines`` as
    :meth:`~cellmaps.model.Model.predict`'s ``masks``: None when the model can outline,
    True required, False points only."""
    m = model if isinstance(model, Model) else model_for(model)
    pred = m.predict(image, object_size=object_size, pixel_size=pixel_size,
                     masks=outlines)  # fmt: skip
    label = "model" if isinstance(model, Model) else Path(model).stem
    meta = {"model": str(model) if not isinstance(model, Model) else "in memory"}
    return prediction_layers(pred, f"{name} {label}", meta)
