"""Whole slides: detection at bounded memory, tissue detection, and row bands for workers.

A slide is read lazily (:mod:`cellmaps.io.slides`), at the pyramid level closest to the
model's object scale, and streamed through the net and the decoder
(:mod:`cellmaps.inference.stream`), so memory follows the slide's width, not its area. Tiles
over background (no tissue on a low-resolution copy) are not run. The rows of a slide can be
split into bands decoded independently (by Dask workers): each band's maps are the whole
slide's, and its detections are those whose centre lies in its rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import zarr
from scipy import ndimage
from skimage.filters import threshold_otsu

from cellmaps.cluster import gather_with_progress
from cellmaps.errors import CellmapsInputError
from cellmaps.inference.stream import (
    Candidates,
    column_strips,
    finish_candidates,
    flat_rule,
    in_core,
    stream_candidates,
    strip_candidates,
)
from cellmaps.inference.tiles import TiledInferer
from cellmaps.io._atomic import atomic_path
from cellmaps.io.points import Points
from cellmaps.io.scale import from_scaled_coords, scaled_shape, to_scaled_coords
from cellmaps.io.slides import LazyImage, SlideSource, choose_level
from cellmaps.postprocess import grow_markers, majority_filter, markers_from_detections
from cellmaps.postprocess.decode import decode_maps
from cellmaps.postprocess.measure import object_table
from cellmaps.postprocess.peaks import decoded_channels
from cellmaps.postprocess.segment import SEEDED, seeded_instances, seeded_tasks
from cellmaps.postprocess.tumour_gate import apply_gate

TISSUE_MAX_SATURATION = 0.08  # H&E / IHC tissue is more saturated than this; glass is not
TISSUE_MIN_SATURATION = 0.02
TISSUE_THUMBNAIL = 1024
TISSUE_MARGIN = 2  # thumbnail px of background kept around tissue


def tissue_mask(thumb: np.ndarray) -> np.ndarray:
    """Tissue on a low-resolution (h, w, C) copy of a slide.

    Brightfield (3 channels): saturation (max − min) / max of RGB above a threshold — Otsu's
    on the saturation, but never above :data:`TISSUE_MAX_SATURATION` (on an image that is all
    tissue, Otsu would split pale from dark tissue) nor below
    :data:`TISSUE_MIN_SATURATION`; then small holes filled and the mask widened by
    :data:`TISSUE_MARGIN` px. Other images (fluorescence): Otsu on the mean intensity, the
    bright side. A flat image has no tissue.
    """
    img = np.asarray(thumb, np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 3:
        mx, mn = img.max(-1), img.min(-1)
        value = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
        value = ndimage.median_filter(value, size=3)
        t = threshold_otsu(value) if np.ptp(value) > 0 else np.inf
        t = min(max(t, TISSUE_MIN_SATURATION), TISSUE_MAX_SATURATION)
        mask = value > t
    else:
        value = img.mean(-1)
        mask = value > threshold_otsu(value) if np.ptp(value) > 0 else np.zeros(value.shape, bool)
    mask = ndimage.binary_fill_holes(mask)
    if TISSUE_MARGIN:
        mask = ndimage.binary_dilation(mask, iterations=TISSUE_MARGIN)
    return mask


def tile_filter(mask: np.ndarray, scale: float):
    """``skip_tile(r0, r1, c0, c1)`` for the streamed inference: True when the tile over
    those net rows/cols covers no tissue pixel of ``mask`` (``scale`` = mask px per net
    px)."""
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape

    def skip(r0: int, r1: int, c0: int, c1: int) -> bool:
        a, b = min(h, int(r0 * scale)), min(h, max(int(np.ceil(r1 * scale)), int(r0 * scale) + 1))
        c, d = min(w, int(c0 * scale)), min(w, max(int(np.ceil(c1 * scale)), int(c0 * scale) + 1))
        return integral[b, d] - integral[a, d] - integral[b, c] + integral[a, c] == 0

    return skip


@dataclass
class SlidePlan:
    """How a slide is read: level, factor from that level to the net, net-scale shape,
    tissue mask (or None) and its scale (mask px per net px)."""

    path: str
    level: int
    factor: float
    shape: tuple[int, int]
    level_shape: tuple[int, int]
    maximum: float
    mask: np.ndarray | None
    mask_scale: float
    channels: list[int] | None = None
    full_shape: tuple[int, int] | None = None  # level 0


def plan_slide(
    model,
    path: str | os.PathLike,
    object_size: float | None = None,
    pixel_size: float | None = None,
    magnification: float | None = None,
    tissue: bool = True,
    channels: list[int] | None = None,
) -> SlidePlan:
    """Choose the pyramid level for the model's object scale and find the tissue.

    ``magnification`` (objective power) stands for a pixel size of 10 / magnification µm
    (0.25 µm at 40×); without any of the three, the file's own pixel size is used when the
    model knows its object size in µm, else the slide is taken to be like the training
    images."""
    if model.needs_whole_image:
        raise CellmapsInputError(
            "this model equalises each image's histogram or stretches it between its own "
            "percentiles, which needs the whole image in memory; it cannot read an image by "
            "region (raise --stream-above)",
            path,
        )
    with LazyImage(path) as img:
        if channels is not None:
            bad = [c for c in channels if not 0 <= c < img.channels]
            if bad:
                raise CellmapsInputError(
                    f"channel(s) {bad} asked for, but the image has {img.channels}", path
                )
        if magnification is not None:
            if not (np.isfinite(magnification) and magnification > 0):
                raise CellmapsInputError(f"magnification must be positive, got {magnification}")
            pixel_size = 10.0 / magnification
        if (
            object_size is None
            and pixel_size is None
            and img.pixel_size
            and model.training.get("train_radius_um")
        ):
            pixel_size = img.pixel_size
        factor = model.input_scale(object_size, pixel_size)
        level, rest = choose_level(img.levels, factor)
        shape = scaled_shape(img.levels[level], rest) if rest != 1.0 else img.levels[level]
        mask, mask_scale = None, 1.0
        if tissue:
            thumb, tscale = img.thumbnail(TISSUE_THUMBNAIL)
            mask = tissue_mask(thumb)
            mask_scale = tscale * img.levels[0][0] / shape[0]
        return SlidePlan(str(path), level, rest, shape, img.levels[level], img.maximum(),
                         mask, mask_scale, channels, img.levels[0])  # fmt: skip


def row_bands(height: int, n: int) -> list[tuple[int, int]]:
    """``n`` bands of consecutive rows covering [0, height) (sizes differ by at most 1)."""
    n = max(1, min(int(n), height))
    edges = np.linspace(0, height, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@contextlib.contextmanager
def plan_source(plan: SlidePlan) -> Iterator[tuple[SlideSource, Callable | None]]:
    """The slide's level read lazily at the net's scale, and the tile filter of its tissue
    mask (None without one), while the file is open."""
    skip = None if plan.mask is None else tile_filter(plan.mask, plan.mask_scale)
    with LazyImage(plan.path) as img:
        yield SlideSource(img, plan.level, plan.factor, plan.maximum, plan.channels), skip


def band_candidates(
    model, plan: SlidePlan, rows=None, progress: bool = False, cols=None, **inference
):
    """Candidates (:class:`~cellmaps.inference.stream.Candidates`) of one block of a slide
    (net rows × net columns), reading the file itself (a worker gets the plan, not the
    pixels)."""
    with plan_source(plan) as (source, skip):
        return stream_candidates(
            model, source, plan.shape, rows, skip, progress, cols=cols, **inference
        )


def slide_candidates(
    model, plan: SlidePlan, progress: bool = False, decoder_factory=None, **inference
) -> Candidates:
    """Candidates of a whole slide read from its file: the strip loop of
    :func:`~cellmaps.inference.stream.strip_candidates` over the plan's level, leaving out
    tiles without tissue; ``decoder_factory`` as in
    :func:`~cellmaps.inference.stream.stream_candidates`."""
    with plan_source(plan) as (source, skip):
        return strip_candidates(model, source, plan.shape, skip, progress, None,
                                decoder_factory, **inference)  # fmt: skip


def skipped_share(model, plan: SlidePlan, **inference) -> float:
    """Share of the net's tiles left out as background."""
    if plan.mask is None:
        return 0.0
    h, w = plan.shape
    inf = TiledInferer.from_recipe(model.recipe, **inference).for_shape(h, w)
    rows, cols = inf.grid(h, w)
    skip = tile_filter(plan.mask, plan.mask_scale)
    m = inf.margin
    n = sum(
        skip(max(r - m, 0), min(r + inf.tile - m, h), max(q - m, 0), min(q + inf.tile - m, w))
        for r in rows
        for q in cols
    )
    return n / (len(rows) * len(cols))


def to_level0(model, plan: SlidePlan, pts: Points) -> Points:
    """Detections in net px → level-0 px of the slide."""
    coords = pts.coords
    if plan.factor != 1.0:
        coords = from_scaled_coords(coords, plan.level_shape, plan.shape)
    if plan.level:
        coords = from_scaled_coords(coords, plan.full_shape, plan.level_shape)
    return Points(coords, pts.labels, pts.scores)


GATE_BLOCK = 1024  # net px: the tumour gate reads the slide in blocks of this side


def gated_slide_points(model, plan: SlidePlan, pts: Points) -> Points:
    """Slide detections (net px) after the model's tumour gate, when it has one
    (:meth:`cellmaps.model.Model.gated`): the gate reads the slide around the detections in
    blocks of ``GATE_BLOCK``² net px plus a margin of twice the object radius, so memory
    stays bounded by the block, not the slide."""
    gate = model.training.get("tumour_gate")
    if gate is None or not len(pts):
        return pts
    radius = float(model.train_radius or model.training["data_object_size"])
    labels = np.asarray(pts.labels, dtype=object).copy()
    for sel, (i0, j0, _, _), window, _ in blocks_around(plan, pts.coords, radius):
        local = Points(pts.coords[sel] - [i0, j0], labels[sel])
        labels[sel] = apply_gate(gate, local, window, radius).labels
    return Points(pts.coords, labels, pts.scores)


def blocks_around(plan: SlidePlan, coords: np.ndarray, radius: float):
    """The slide read around points (net px) in blocks of ``GATE_BLOCK``² net px plus a
    margin of twice ``radius``, one block at a time (memory bounded by the block, not the
    slide). Yields, per block holding points: their indices, the window (i0, j0, i1, j1),
    the window's pixels (normalised, net scale) and the source it was read from."""
    margin = int(np.ceil(2 * radius)) + 2
    blocks = np.floor(coords / GATE_BLOCK).astype(np.int64)
    h, w = plan.shape
    with plan_source(plan) as (source, _):
        for bi, bj in np.unique(blocks, axis=0) if len(coords) else ():
            sel = np.flatnonzero((blocks[:, 0] == bi) & (blocks[:, 1] == bj))
            i0, j0 = max(bi * GATE_BLOCK - margin, 0), max(bj * GATE_BLOCK - margin, 0)
            i1 = min((bi + 1) * GATE_BLOCK + margin, h)
            j1 = min((bj + 1) * GATE_BLOCK + margin, w)
            window = source(int(i0), int(i1), int(j0), int(j1))
            yield sel, (int(i0), int(j0), int(i1), int(j1)), window, source


def level0_to_net(plan: SlidePlan, coords: np.ndarray) -> np.ndarray:
    """Level-0 px → net px of the plan (the inverse of :func:`to_level0`)."""
    if plan.level:
        coords = to_scaled_coords(coords, plan.full_shape, plan.level_shape)
    if plan.factor != 1.0:
        coords = to_scaled_coords(coords, plan.level_shape, plan.shape)
    return coords


def stored_intensities(window: np.ndarray, source) -> np.ndarray:
    """A normalised window of ``source`` back in the slide's stored values and dtype (so
    channel means read like an image's, and colour deconvolution sees its usual input)."""
    data = window * np.float32(source.range)
    dtype = source.image.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    return data


def slide_measurements(
    model,
    path: str | os.PathLike,
    pts: Points,
    object_size: float | None = None,
    pixel_size: float | None = None,
    magnification: float | None = None,
    channels: list[int] | None = None,
    brightfield: bool = True,
    **_inference,
) -> dict[str, np.ndarray]:
    """The per-object table (:func:`cellmaps.postprocess.measure.object_table`) of a slide's
    detections ``pts`` (level-0 px), measured on discs of the model's object radius at the
    net's scale, read in blocks of ``GATE_BLOCK``² net px plus a margin (memory bounded by
    the block), lengths and areas given in level-0 px; rows in the points' order."""
    plan = plan_slide(model, path, object_size, pixel_size, magnification, False, channels)
    radius = float(model.train_radius or model.training.get("data_object_size") or 6.0)
    net = level0_to_net(plan, pts.coords)
    sy, sx = np.array(plan.full_shape or plan.level_shape, float) / np.array(plan.shape)
    table: dict[str, np.ndarray] = {}  # filled block by block (no per-block copies kept)
    for sel, (i0, j0, i1, j1), window, source in blocks_around(plan, net, radius):
        window = stored_intensities(window, source)
        window = window[..., 0] if window.shape[-1] == 1 else window
        # the discs of the other blocks' points in the margin share pixels with this
        # block's discs as in the whole image: they are measured too, then dropped
        near = np.flatnonzero((net[:, 0] >= i0) & (net[:, 0] < i1)
                              & (net[:, 1] >= j0) & (net[:, 1] < j1))  # fmt: skip
        ours = np.isin(near, sel)
        local = Points(net[near] - [i0, j0], pts.labels[near],
                       None if pts.scores is None else pts.scores[near])  # fmt: skip
        cols = object_table(local, window, None, radius, brightfield=brightfield)
        for name, values in cols.items():
            if name not in table:
                table[name] = np.empty(len(net), dtype=values.dtype)
            table[name][near[ours]] = values[ours]
    if not table:  # no detection: the columns of an empty table
        empty = np.zeros((1, 1, 3 if brightfield else 1), np.uint8)
        cols = object_table(Points(np.zeros((0, 2))), empty, None, radius, brightfield=brightfield)
        return cols
    table["x"], table["y"] = pts.coords[:, 1].copy(), pts.coords[:, 0].copy()
    table["object"] = np.arange(1, len(net) + 1)  # disc k is point k's, as for images
    area, length = sy * sx, float(np.sqrt(sy * sx))
    table["area_px"] = table["area_px"] * area
    for name in ("perimeter_px", "equivalent_diameter_px"):
        table[name] = table[name] * length
    disc = radius * length
    if pixel_size is not None:  # µm per level-0 px
        table["area_um2"] = table["area_px"] * pixel_size**2
        table["equivalent_diameter_um"] = table["equivalent_diameter_px"] * pixel_size
    table["measured_on"] = table.pop("measured_on")  # last, as for images
    table["measured_on"][:] = f"disc r={disc:.1f} px"
    return table


def detect_slide(
    model,
    path: str | os.PathLike,
    xi: float | None = None,
    object_size: float | None = None,
    pixel_size: float | None = None,
    magnification: float | None = None,
    tissue: bool = True,
    channels: list[int] | None = None,
    progress: bool = False,
    client=None,
    bands: int | None = None,
    **inference,
) -> tuple[Points, dict]:
    """Detections in a slide (level-0 px) and a summary (level, shape, share of tiles
    skipped). The slide is streamed in column strips of
    :data:`~cellmaps.inference.stream.STRIP_WIDTH` net px (memory follows that width, not
    the slide's). With a Dask ``client``, each strip is also split into ``bands`` of rows
    (default: two blocks per worker thread in all) decoded by the workers; the detections
    are the same as serial."""
    plan = plan_slide(model, path, object_size, pixel_size, magnification, tissue, channels)
    if client is None:
        found = slide_candidates(model, plan, progress, **inference)
    else:
        strips = column_strips(plan.shape[1])
        found = Candidates()
        n = bands or -(-2 * max(1, sum(client.nthreads().values())) // len(strips))
        model_f = client.scatter(model, broadcast=True)
        futures = [
            client.submit(
                band_candidates,
                model_f,
                plan,
                band,
                False,
                cols,
                pure=False,
                retries=2,
                **inference,
            )  # fmt: skip
            for cols in strips
            for band in row_bands(plan.shape[0], n)
        ]
        for part in gather_with_progress(futures, "blocks", progress):
            found.merge(part)
    pts = to_level0(
        model, plan, gated_slide_points(model, plan, finish_candidates(model, found, xi))
    )
    info = {
        "level": plan.level,
        "net_shape": list(plan.shape),
        "skipped_tiles": float(skipped_share(model, plan, **inference)),
    }
    return pts, info


class LabelCanvas:
    """A chunked label image on disk (zarr) that blocks paint objects into, with ids
    unique over the whole slide."""

    def __init__(self, folder, shape: tuple[int, int], chunk: int = 1024) -> None:
        self.array = zarr.create_array(
            store=str(folder), shape=shape, chunks=(chunk, chunk), dtype=np.uint32, fill_value=0
        )
        self.next_id = 1

    def paint(self, labels: np.ndarray, keep: np.ndarray, r0: int, c0: int) -> None:
        """Paint the objects of a block's label image (ids 1..N) listed in ``keep`` at
        (r0, c0), with new slide-wide ids, where nothing is painted yet (an object that a
        neighbouring block already painted keeps its pixels)."""
        keep = np.asarray(keep, np.int64)
        if keep.size == 0:
            return
        lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.uint32)
        lut[keep] = np.arange(self.next_id, self.next_id + len(keep), dtype=np.uint32)
        self.next_id += len(keep)
        new = lut[labels]
        rows = np.flatnonzero(new.any(1))
        cols = np.flatnonzero(new.any(0))
        if not len(rows):
            return
        a, b, c, d = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        window = (slice(r0 + a, r0 + b), slice(c0 + c, c0 + d))
        old = np.asarray(self.array[window])
        self.array[window] = np.where((old == 0) & (new[a:b, c:d] > 0), new[a:b, c:d], old)


def region_growing_decoder(canvas: LabelCanvas, outer_min: float = 0.5):
    """A chunk decoder (:func:`cellmaps.inference.stream.stream_candidates`) that decodes a
    DeepDistance-extended chunk like :func:`cellmaps.postprocess.segment.segment_maps` (detections, then
    marker-controlled region growing, §4.7) and paints the objects whose detection lies in
    the chunk's core into ``canvas``. All the chunk's detections seed the growing, so an
    object next to the core's edge grows against the same neighbours as in the whole image."""

    def factory(model, base, shape):
        outer_task = model.decode.task_with_target("outer_distance")
        cells_task = model.decode.task_with_target("foreground")

        def decode(maps, r0, c0, core):
            pts = decode_maps(maps, model.decode)
            pts = pts.subset(flat_rule(model, base, shape, pts.coords + [r0, c0]))
            outer, cells = maps[outer_task][0], maps[cells_task][0]
            markers = markers_from_detections(pts.coords, outer, outer_min)
            labels = majority_filter(grow_markers(markers, cells > 0.5, outer), 5)
            inside = in_core(pts.coords + [r0, c0], core)
            present = np.zeros(len(pts) + 1, bool)
            present[np.unique(labels)] = True
            keep = np.flatnonzero(inside & present[1:]) + 1  # label k = detection k - 1
            canvas.paint(labels, keep, r0, c0)
            n = len(pts)
            return pts.coords, pts.scores, np.zeros((n, 1)), np.zeros(n, np.intp)

        return decode

    return factory


def owned_labels(labels: np.ndarray, seeds: np.ndarray, core, r0: int, c0: int) -> np.ndarray:
    """The labels of a chunk's instance image that the chunk paints: those whose anchor —
    the first detection on the object, or its centroid when none lies on it — is in the
    chunk's ``core`` (image pixels; the chunk starts at ``r0, c0``), so an object cut by a
    seam is painted once, whole, by one chunk."""
    n = int(labels.max())
    if n == 0:
        return np.zeros(0, np.int64)
    anchors = np.array(ndimage.center_of_mass(labels > 0, labels, np.arange(1, n + 1)))
    rc = np.rint(np.asarray(seeds, dtype=np.float64).reshape(-1, 2)).astype(np.intp)
    ok = (rc >= 0).all(1) & (rc[:, 0] < labels.shape[0]) & (rc[:, 1] < labels.shape[1])
    on = labels[rc[ok, 0], rc[ok, 1]]
    first = {}
    for k, coord in zip(on[::-1], np.asarray(seeds)[ok][::-1], strict=True):
        if k:
            first[int(k)] = coord  # reversed: the first detection on k wins
    for k, coord in first.items():
        anchors[k - 1] = coord
    return np.flatnonzero(in_core(anchors + [r0, c0], core)) + 1


def seeded_decoder(canvas: LabelCanvas, floor: float):
    """A chunk decoder that outlines like :func:`cellmaps.postprocess.segment.seeded_instances`
    (the cell pixels split by a watershed from the detections, at the net's pixels) and paints
    the objects :func:`owned_labels` gives the chunk into ``canvas``. ``floor`` is ξ times the
    whole slide's maximum (a first pass finds it): the chunk's peaks above it are the
    detections the whole image would give, so its seeds do not depend on the chunk."""

    def factory(model, base, shape):
        p = model.decode
        det_task, cells_task = seeded_tasks(p)
        every_peak = p.replace(xi=0.0)

        def decode(maps, r0, c0, core):
            pts = decode_maps(maps, every_peak)
            pts = pts.subset(pts.scores >= floor)
            pts = pts.subset(flat_rule(model, base, shape, pts.coords + [r0, c0]))
            det = decoded_channels(maps[det_task], p).max(0)
            labels = seeded_instances(p, det, maps[cells_task][0], pts.coords, 1.0)
            canvas.paint(labels, owned_labels(labels, pts.coords, core, r0, c0), r0, c0)
            n = len(pts)
            return pts.coords, pts.scores, np.zeros((n, 1)), np.zeros(n, np.intp)

        return decode

    return factory


def slide_mask_decoder(model, canvas: LabelCanvas | None, outer_min: float):
    """The chunk decoder that outlines a slide for this model: region growing (outer
    distance + cell pixels), or None for a seeded watershed (``decode.segment: seeded``,
    which needs the slide's maximum first: :func:`segment_slide`); a clear error for models
    that outline images only."""
    p = model.decode
    if p.segment in SEEDED:
        seeded_tasks(p)
        return None
    if p.task_with_target("outer_distance") is None or p.task_with_target("foreground") is None:
        raise CellmapsInputError(
            "instance masks of a slide (block by block) need a model with outer_distance "
            "and foreground tasks (recipe deepdistance-extended) or a seeded one (the default "
            "H&E model); argmax and split models (weakly-points, deepsplit) outline images "
            "up to the size limit, not slides"
        )
    return region_growing_decoder(canvas, outer_min)


def segment_slide(
    model, path, mask_path, progress: bool = False, outer_min: float = 0.5, **plan_options
) -> tuple[Points, dict]:
    """Detections and an instance mask of a slide by DeepDistance's region growing or a
    seeded watershed (:func:`slide_mask_decoder`), block by block (serially: ids are numbered
    as blocks finish). The mask is written at the net's pixels of the chosen level
    (``slides.json`` records its shape) as a pyramidal, tiled OME-TIFF label image,
    atomically; objects cut by a block seam are painted once, whole, by the block holding
    their detection."""
    slide_mask_decoder(model, None, outer_min)  # a clear error before any work
    inference = {k: plan_options.pop(k) for k in ("tile", "stride", "batch") if k in plan_options}
    plan = plan_slide(model, path, **plan_options)
    Path(mask_path).parent.mkdir(parents=True, exist_ok=True)  # masks/ of a new folder
    tmp = Path(tempfile.mkdtemp(prefix=".masks-", dir=Path(mask_path).parent))
    try:
        canvas = LabelCanvas(tmp / "labels.zarr", plan.shape)
        decoder = slide_mask_decoder(model, canvas, outer_min)
        if decoder is None:  # seeded: pass 1 finds the detections (ξ · the slide's maximum)
            found = slide_candidates(model, plan, progress, **inference)
            floor = model.decode.xi * float(found.tops.max()) if len(found.arrays()[0]) else np.inf
            slide_candidates(model, plan, progress, seeded_decoder(canvas, floor), **inference)
        else:
            found = slide_candidates(model, plan, progress, decoder, **inference)
        write_label_pyramid(mask_path, canvas.array)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    pts = to_level0(model, plan, finish_candidates(model, found))
    info = {"level": plan.level, "net_shape": list(plan.shape), "mask_shape": list(plan.shape),
            "skipped_tiles": float(skipped_share(model, plan, **inference))}  # fmt: skip
    return pts, info


def write_label_pyramid(path, labels, tile: int = 512, min_side: int = 1024) -> None:
    """Write a 2-D label array (zarr or numpy) as a tiled OME-TIFF with reduced levels
    (nearest: every second pixel, so ids stay ids) down to ``min_side``, atomically, tile by
    tile (the whole image is never in memory)."""
    h, w = labels.shape
    levels = 1
    while max(h, w) // 2**levels >= min_side:
        levels += 1

    def tiles(k: int):
        f = 2**k
        for r in range(0, h, tile * f):
            for c in range(0, w, tile * f):
                block = np.asarray(labels[r : r + tile * f : f, c : c + tile * f : f])
                out = np.zeros((tile, tile), np.uint32)
                out[: block.shape[0], : block.shape[1]] = block
                yield out

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tw:
        opts = dict(tile=(tile, tile), dtype=np.uint32, compression="zlib")
        tw.write(tiles(0), shape=(h, w), subifds=levels - 1, metadata={"axes": "YX"}, **opts)
        for k in range(1, levels):
            tw.write(tiles(k), shape=(-(-h // 2**k), -(-w // 2**k)), subfiletype=1, **opts)
