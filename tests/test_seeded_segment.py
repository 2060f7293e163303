"""Outlines from a detection map and a cell-pixel map (``decode.segment: seeded``, the H&E
model with points and outlines): the cell pixels split by a watershed from the detections."""

from __future__ import annotations

import numpy as np
import pytest

from cellmaps.errors import CellmapsInputError
from cellmaps.postprocess.decode import DecodeParams, Maps
from cellmaps.postprocess.segment import (
    can_outline,
    require_outlines,
    seeded_instances,
    segment_maps,
)

TASKS = {"proximity": "proximity", "cells": "foreground"}


def two_nuclei(shape=(48, 64), a=(24, 22), ra=10.0, b=(24, 37), rb=6.0):
    """A large and a small disc that touch, the detection map (a cone per nucleus, 1 at its
    centre, 0 at its rim) and the truth: each pixel of the union belongs to the nucleus whose
    cone is higher there (computed here, not by a watershed)."""
    rr, cc = np.mgrid[: shape[0], : shape[1]].astype(float)
    da = np.hypot(rr - a[0], cc - a[1])
    db = np.hypot(rr - b[0], cc - b[1])
    cone_a, cone_b = np.clip(1 - da / ra, 0, None), np.clip(1 - db / rb, 0, None)
    union = (da <= ra) | (db <= rb)
    truth = np.where(union, np.where(cone_a >= cone_b, 1, 2), 0)
    return np.maximum(cone_a, cone_b).astype(np.float32), union.astype(np.float32), truth


def iou(x: np.ndarray, y: np.ndarray) -> float:
    return float((x & y).sum() / (x | y).sum())


def matched_ious(truth: np.ndarray, labels: np.ndarray) -> list[float]:
    """IoU of each true object with the predicted label that covers most of it."""
    out = []
    for k in range(1, truth.max() + 1):
        under = labels[truth == k]
        best = np.bincount(under[under > 0]).argmax()
        out.append(iou(truth == k, labels == best))
    return out


def test_touching_nuclei_part_along_the_detection_map_valley():
    det, cells, truth = two_nuclei()
    p = DecodeParams(task="proximity", segment="seeded", task_targets=TASKS, min_area=5)
    labels = seeded_instances(p, det, cells, np.array([[24, 22], [24, 37]]), 1.0)
    assert labels.max() == 2
    assert min(matched_ious(truth, labels)) > 0.95
    # flooding the flat cell probability instead cuts where the two fronts meet (half-way
    # between the seeds), inside the large nucleus: worse for it
    flat = seeded_instances(p.replace(segment="seeded_cells"), det, cells, np.array([[24, 22], [24, 37]]), 1.0)  # fmt: skip
    assert matched_ious(truth, flat)[0] < matched_ious(truth, labels)[0]


def test_parts_without_a_seed_stay_whole_and_small_ones_go():
    det, cells, _ = two_nuclei()
    cells[2:12, 50:60] = 1.0  # a blob with no detection: one object
    cells[40:42, 2:4] = 1.0  # 4 px: under min_area
    p = DecodeParams(task="proximity", segment="seeded", task_targets=TASKS, min_area=5)
    seeds = np.array([[24, 22], [24, 37], [45, 60], [-3, 5]])  # the last two off the cells
    labels = seeded_instances(p, det, cells, seeds, 1.0)
    assert labels.max() == 3
    assert len(np.unique(labels[2:12, 50:60])) == 1 and labels[5, 55] > 0
    assert labels[40:42, 2:4].max() == 0
    # min_area is in net pixels: 30 net px are 120 input px at 2 input px per net px, more
    # than the 100-px blob, and 30 at 1
    p30 = p.replace(min_area=30)
    assert seeded_instances(p30, det, cells, seeds, 2.0)[2:12, 50:60].max() == 0
    assert seeded_instances(p30, det, cells, seeds, 1.0)[2:12, 50:60].max() > 0


def test_cell_threshold_sets_the_outline():
    det, _, _ = two_nuclei()
    p = DecodeParams(task="proximity", segment="seeded", task_targets=TASKS, min_area=1)
    seeds = np.array([[24, 22], [24, 37]])
    # the cone itself as a cell probability: a higher threshold gives smaller objects
    low = seeded_instances(p.replace(cell_threshold=0.2), det, det, seeds, 1.0)
    high = seeded_instances(p.replace(cell_threshold=0.6), det, det, seeds, 1.0)
    assert (high > 0).sum() < (low > 0).sum()
    assert (det > 0.6).sum() == (high > 0).sum()


def test_segment_maps_brings_the_outlines_to_input_pixels():
    det, cells, truth = two_nuclei()
    maps = Maps(proximity=det[None], cells=cells[None])
    maps.input_shape = (96, 128)  # the input was twice the net's size
    p = DecodeParams(task="proximity", segment="seeded", task_targets=TASKS, min_area=5,
                     min_contrast=0.0, min_distance=3)  # fmt: skip
    pts, labels = segment_maps(maps, p)
    assert labels.shape == (96, 128)
    assert len(pts) == 2 and labels.max() == 2
    np.testing.assert_allclose(np.sort(pts.coords[:, 1]), [44.5, 74.5], atol=1.5)
    big = np.kron(truth, np.ones((2, 2), int))
    assert min(matched_ious(big, labels)) > 0.9


def test_a_seeded_model_without_a_cell_pixel_task_is_refused_clearly():
    p = DecodeParams(task="proximity", segment="seeded", task_targets={"proximity": "proximity"})
    assert not can_outline(p)
    with pytest.raises(CellmapsInputError, match="foreground"):
        require_outlines(p)
    assert can_outline(p.replace(task_targets=TASKS))
    # a points-only model (no segment, no outer distance) still names region growing's needs
    with pytest.raises(CellmapsInputError, match="outer_distance"):
        require_outlines(DecodeParams(task="proximity", task_targets={"proximity": "proximity"}))
