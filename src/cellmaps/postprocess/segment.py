"""Instance masks from predicted maps (numpy): DeepDistance's region growing (§4.7), the
weakly-points argmax + watershed and DeepSplit's border-limited split, at input pixels."""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

from cellmaps.errors import CellmapsInputError
from cellmaps.io.points import Points
from cellmaps.postprocess.components import (
    argmax_instances,
    drop_small_labels,
    seed_markers,
    seeded_watershed,
)
from cellmaps.postprocess.decode import (
    DecodeParams,
    Maps,
    decode_maps,
    scaled_px,
    scored,
    split_planes,
)
from cellmaps.postprocess.peaks import decoded_channels
from cellmaps.postprocess.region_growing import region_growing_segmentation


def resize_map_to(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``shape`` (net → input pixels)."""
    return resize(m, shape, order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)


def at_input_pixels(maps, planes: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """The (H, W) ``planes`` of ``maps`` brought to the input's pixels when the image was
    resampled for the net, and the input pixels per map pixel (1 when it was not)."""
    if isinstance(maps, Maps) and maps.rescaled:
        resized = {k: resize_map_to(v, maps.input_shape) for k, v in planes.items()}
        return resized, maps.input_shape[0] / maps.net_shape[0]
    return planes, 1.0


def split_probabilities(p: DecodeParams, maps) -> tuple[np.ndarray, np.ndarray | None, float]:
    """A DeepSplit model's segmentation and (when it has one) separation probabilities at
    the input's pixels, and the input pixels per map pixel.

    Returns
    -------
    segmentation : (H, W) float32
    separation : (H, W) float32 or None (a model without a separation task, e.g. ``unet``)
    scale : float
    """
    planes = {"seg": maps[p.task][0]}
    if p.boundary_task:
        planes["sep"] = maps[p.boundary_task][0]
    planes, scale = at_input_pixels(maps, planes)
    return planes["seg"], planes.get("sep"), scale


def region_growing_tasks(p: DecodeParams) -> tuple[str, str]:
    """The outer-distance and cell-pixel tasks region growing reads; a clear error when the
    model lacks one."""
    outer, cells = p.task_with_target("outer_distance"), p.task_with_target("foreground")
    if outer is None or cells is None:
        raise CellmapsInputError(
            "segmentation needs a model with an outer_distance task and a foreground "
            "(cell-pixel) task, e.g. recipe deepdistance-extended; this model's tasks are "
            f"{list(p.task_targets.values())}"
        )
    return outer, cells


def require_outlines(p: DecodeParams) -> None:
    """A clear error, before any prediction, when the model's ``decode.segment`` cannot
    outline with the tasks it has."""
    if p.segment in SEEDED:
        seeded_tasks(p)
    elif p.segment not in ("argmax", "split"):
        region_growing_tasks(p)


def can_outline(p: DecodeParams) -> bool:
    """Whether decoding ``p`` gives outlines (DeepSplit's split, weakly-points' argmax, a
    seeded watershed of a cell-pixel task, or region growing from an outer-distance and a
    cell-pixel task)."""
    try:
        require_outlines(p)
    except CellmapsInputError:
        return False
    return True


def segment_maps(maps, p: DecodeParams, outer_min: float = 0.5) -> tuple[Points, np.ndarray]:
    """Detections and an instance mask (input pixels) from predicted maps, by the model's
    ``decode.segment``: region growing (default; ``outer_min`` is the outer distance above
    which markers widen, paper: 0.5), ``argmax`` or ``split``.

    Returns
    -------
    points : Points
    mask : (H, W) int32
    """
    if p.segment == "argmax":
        return argmax_segmentation(maps, p)
    if p.segment == "split":
        return split_segmentation(maps, p)
    if p.segment in SEEDED:
        return seeded_segmentation(maps, p)
    outer, cells = region_growing_tasks(p)
    pts = decode_maps(maps, p)  # input pixels
    # §4.7's sizes (50-px markers, 5×5 majority filter) are in image pixels: grow the
    # regions on the maps brought back to the input's size
    planes, _ = at_input_pixels(maps, {"outer": maps[outer][0], "cells": maps[cells][0]})
    mask = region_growing_segmentation(
        pts.coords, planes["outer"], planes["cells"], outer_min=outer_min
    )
    return pts, mask


def argmax_segmentation(maps, p: DecodeParams) -> tuple[Points, np.ndarray]:
    """Detections and instances of a two-class softmax model (``decode.segment: argmax``,
    weakly-points): the nucleus channel's argmax mask split by a watershed from the
    detections (:func:`cellmaps.postprocess.components.argmax_instances`), at input pixels."""
    pts = decode_maps(maps, p)  # input pixels
    prob = decoded_channels(maps[p.task], p)[0]
    planes, scale = at_input_pixels(maps, {"prob": prob})  # min_area is in net pixels
    return pts, argmax_instances(planes["prob"], pts.coords, scaled_px(p.min_area, scale, 2))


#: ``decode.segment`` values of a seeded watershed (over the detection map, the cells)
SEEDED = ("seeded", "seeded_cells")


def seeded_tasks(p: DecodeParams) -> tuple[str, str]:
    """The detection task and the cell-pixel (foreground) task a ``seeded`` model reads; a
    clear error when the model lacks the second."""
    cells = p.task_with_target("foreground")
    if cells is None or p.task is None:
        raise CellmapsInputError(
            "decode.segment seeded needs a detection task (decode.task) and a foreground "
            f"(cell-pixel) task; this model's tasks are {list(p.task_targets.values())}"
        )
    return p.task, cells


def seeded_instances(
    p: DecodeParams, detection: np.ndarray, cells: np.ndarray, seeds: np.ndarray, scale: float
) -> np.ndarray:
    """Instances from a cell-probability plane and detections (same pixels): the pixels
    above ``cell_threshold``, split by a watershed from the detections over the negated
    detection map (``segment: seeded``) or cell probability (``seeded_cells``); a part with
    no detection stays one object; objects under ``min_area`` (net px, × ``scale``²) dropped.

    The detection map peaks at object centres and dips between touching objects, so it
    parts them where the cell probability, flat at 1 inside both, cannot (a MicroNet-like
    proximity head + a cell-pixel head: outlines without a separation map)."""
    fg = cells > p.cell_threshold
    elevation = -(cells if p.segment == "seeded_cells" else detection)
    labels = seeded_watershed(elevation.astype(np.float32), seed_markers(seeds, fg), fg)
    return drop_small_labels(labels, scaled_px(p.min_area, scale, 2))


def seeded_segmentation(maps, p: DecodeParams) -> tuple[Points, np.ndarray]:
    """Detections and instances of a model with a detection task and a cell-pixel task
    (``decode.segment: seeded``, the default H&E model): :func:`seeded_instances` on the
    maps brought to input pixels."""
    det_task, cells_task = seeded_tasks(p)
    pts = decode_maps(maps, p)  # input pixels
    det = decoded_channels(maps[det_task], p).max(0)
    planes, scale = at_input_pixels(maps, {"det": det, "cells": maps[cells_task][0]})
    return pts, seeded_instances(p, planes["det"], planes["cells"], pts.coords, scale)


def split_segmentation(maps, p: DecodeParams) -> tuple[Points, np.ndarray]:
    """Detections and instances of a DeepSplit model (``decode.segment: split``): the
    segmentation and separation maps brought to input pixels, then
    :func:`~cellmaps.postprocess.decode.split_planes` (its sizes — min_area, seed distance,
    border length — scaled to input pixels)."""
    seg, sep, scale = split_probabilities(p, maps)
    labels, coords = split_planes(p, seg, sep, scale)
    return scored(p, seg, coords), labels
