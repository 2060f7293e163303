"""Streamed detection: predict and decode an image of any size band by band, in memory
bounded by its width (not its area).

:class:`~cellmaps.inference.tiles.TiledInferer` hands over finished map rows; a
:class:`BandDecoder` buffers them and decodes them a chunk of rows at a time with an
overlap above and below, keeping only the objects whose centre lies in the chunk's core, so
nothing is found twice or lost at a chunk border.

- Peak decoders (``peaks``, ``peaks_per_class``): candidates are every local maximum at the
  absolute floor (``decode.min_score``); ξ·max is applied once all rows are seen, with the
  maximum of the whole image, so the result is the same as decoding the whole map (a
  plateau of equal maxima is one component whatever ξ is). Exact when plateaus are shorter
  than the overlap (32 rows beyond the peak window).
- Region decoders (``hmaxima``, ``components``): each chunk is decoded as a whole map with
  an overlap of :func:`region_overlap` rows; exact when every object (a component, or the
  region an h-maximum's dynamic is measured in) is shorter than the overlap — true for
  cells a few times smaller than it; the tests check equality on real predicted maps.

A band of image rows [a, b) can be streamed on its own (the maps are bit-identical to the
whole image's), which is how a slide's rows are shared between Dask workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cellmaps.inference.tiles import TiledInferer
from cellmaps.io.points import Points
from cellmaps.io.scale import adjust_intensity, match_channels, standardize
from cellmaps.postprocess import channel_peaks, merge_class_peaks
from cellmaps.postprocess.decode import DECODERS, contrast_window, local_contrast
from cellmaps.postprocess.peaks import decoded_channels, pixel_of

PLATEAU_MARGIN = 32  # rows beyond the peak window a plateau of equal maxima may span
DECODE_CHUNK = 1024  # rows decoded at a time (besides the overlaps)
STRIP_WIDTH = 4096  # columns streamed at a time: memory follows this, not the image width

# base(i0, i1, j0, j1) → normalised (n, m, C) float32 input pixels at the net's scale
BaseReader = Callable[[int, int], np.ndarray]


def peak_overlap(min_distance: int) -> int:
    """Rows of context a peak chunk needs on each side: the peak window plus a margin for
    plateaus of equal maxima."""
    return 2 * int(min_distance) + 2 + PLATEAU_MARGIN


def region_overlap(object_size: float | None) -> int:
    """Rows of context a region decoder (h-maxima, components) needs on each side: eight
    object radii (four object diameters), at least 64."""
    return max(64, int(np.ceil(8 * (object_size or 8))))


@dataclass
class Candidates:
    """Objects found so far: coordinates (net px), score, values of every class map, the
    map they came from, and the maximum of every class map over the rows seen."""

    coords: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    chans: list[np.ndarray] = field(default_factory=list)
    tops: np.ndarray | None = None

    def add(self, c, s, v, ch) -> None:
        for acc, arr in zip((self.coords, self.scores, self.values, self.chans), (c, s, v, ch),
                            strict=True):  # fmt: skip
            acc.append(arr)

    def see_top(self, top: np.ndarray) -> None:
        self.tops = top if self.tops is None else np.maximum(self.tops, top)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.coords:
            return np.zeros((0, 2)), np.zeros(0), np.zeros((0, 1)), np.zeros(0, np.intp)
        return tuple(np.concatenate(x) for x in (self.coords, self.scores, self.values,
                                                  self.chans))  # fmt: skip

    def merge(self, other: Candidates) -> None:
        """Take over another band's candidates (bands decoded by different workers)."""
        c, s, v, ch = other.arrays()
        self.add(c, s, v, ch)
        if other.tops is not None:
            self.see_top(other.tops)


class BandDecoder:
    """Decode streamed map rows of image rows [a, b) chunk by chunk (see module doc).

    ``decode_chunk(maps, r0, c0, core) → (coords, scores, values, chans)`` decodes one chunk
    of maps (name → (C, n, m)) whose first pixel is image pixel (``r0``, ``c0``); coordinates
    are in chunk pixels; ``core`` = (row0, row1, col0, col1) are the image pixels whose
    objects this chunk keeps. The maps cover columns [``col0``, ...) and only objects in the
    columns ``cols`` are kept (a strip of a wide image, with overlaps on both sides).
    """

    def __init__(
        self,
        decode_chunk,
        rows: tuple[int, int],
        overlap: int,
        chunk: int = DECODE_CHUNK,
        top_task: str | None = None,
        cols: tuple[int, int] | None = None,
        col0: int = 0,
    ) -> None:
        self.cols, self.col0 = cols, col0
        self.decode_chunk = decode_chunk
        self.a, self.b = rows
        self.overlap = overlap
        self.chunk = chunk
        self.top_task = top_task
        self.buffer: dict[str, np.ndarray] = {}
        self.buf0: int | None = None  # image row of the buffer's first row
        self.done = self.a  # rows above are decoded
        self.found = Candidates()

    def feed(self, r0: int, maps: dict[str, np.ndarray]) -> None:
        if self.buf0 is None:
            self.buf0 = r0
            self.buffer = {k: v for k, v in maps.items()}
        else:
            self.buffer = {k: np.concatenate([self.buffer[k], v], 1) for k, v in maps.items()}
        end = self.buf0 + next(iter(self.buffer.values())).shape[1]
        while end >= self.done + self.chunk + self.overlap and end - self.overlap > self.done:
            self._decode(end - self.overlap)

    def finish(self) -> Candidates:
        if self.buf0 is not None and self.done < self.b:
            self._decode(self.b)
        return self.found

    def _decode(self, core_end: int) -> None:
        core_end = min(core_end, self.b)
        core = (self.done, core_end) + (self.cols or (0, 1 << 62))
        c, s, v, ch = self.decode_chunk(self.buffer, self.buf0, self.col0, core)
        c = c + [self.buf0, self.col0]
        keep = in_core(c, core)
        k0, k1 = (0, None) if self.cols is None else (self.cols[0] - self.col0,
                                                       self.cols[1] - self.col0)  # fmt: skip
        self.found.add(c[keep], s[keep], v[keep], ch[keep])
        if self.top_task is not None:
            m = self.buffer[self.top_task][:, self.done - self.buf0 : core_end - self.buf0, k0:k1]
            if m.shape[1]:
                self.found.see_top(m.reshape(m.shape[0], -1).max(1))
        self.done = core_end
        drop = self.done - self.overlap - self.buf0
        if drop > 0:
            self.buffer = {k: v[:, drop:] for k, v in self.buffer.items()}
            self.buf0 += drop


def in_core(coords: np.ndarray, core) -> np.ndarray:
    """Which image coordinates lie in ``core`` = (row0, row1, col0, col1): the pixels
    whose centres fall in [row0, row1) × [col0, col1). All decoders of a chunk are told their
    core, so the work for objects another chunk keeps (the flat-region rule) is skipped."""
    if core is None:
        return np.ones(len(coords), bool)
    return (
        (coords[:, 0] >= core[0] - 0.5)
        & (coords[:, 0] < core[1] - 0.5)
        & (coords[:, 1] >= core[2] - 0.5)
        & (coords[:, 1] < core[3] - 0.5)
    )


def local_contrast_at(base: BaseReader, shape, coords: np.ndarray, window: int) -> np.ndarray:
    """:func:`cellmaps.postprocess.decode.local_contrast` at ``coords`` (image rows) reading
    only the rows their windows need (the windows never reach past the rows read, so the
    values are the whole image's)."""
    if len(coords) == 0:
        return np.zeros(0)
    half = window // 2
    rc = np.clip(pixel_of(coords).astype(np.int64), 0, np.array(shape[:2]) - 1)
    i0, i1 = max(0, int(rc[:, 0].min()) - half), min(shape[0], int(rc[:, 0].max()) + half + 1)
    j0, j1 = max(0, int(rc[:, 1].min()) - half), min(shape[1], int(rc[:, 1].max()) + half + 1)
    # the slab's own mirrored border is never inside a point's window (see docstring)
    return local_contrast(base(i0, i1, j0, j1), window, coords - [i0, j0])


def peak_chunk_decoder(model, base: BaseReader, shape) -> Callable:
    """Chunk decoder for peak models: local maxima at the absolute floor, with the value of
    every class map, then the flat-region rule."""
    p = model.decode

    def decode(maps, r0, c0, core=None):
        m = maps[p.task]
        # ξ is applied at the end (it needs the whole image's maximum); the floor here
        c, s, v, ch = channel_peaks(m, 0.0, p.min_distance, np.ones(m.shape[0]), p.min_score)
        keep = (s >= p.floor_at(c + [r0, c0], shape)) & in_core(c + [r0, c0], core)
        c, s, v, ch = c[keep], s[keep], v[keep], ch[keep]
        ok = flat_rule(model, base, shape, c + [r0, c0])
        return c[ok], s[ok], v[ok], ch[ok]

    return decode


def region_chunk_decoder(model, base: BaseReader, shape) -> Callable:
    """Chunk decoder for h-maxima and component models: the model's own whole-map decoder
    on the chunk, then the floor and the flat-region rule."""
    p = model.decode
    fn = DECODERS[p.decoder]

    def decode(maps, r0, c0, core=None):
        pts = fn(maps, p)
        c, s = pts.coords, pts.scores
        keep = (s >= p.floor_at(c + [r0, c0], shape)) & in_core(c + [r0, c0], core)
        c, s = c[keep], s[keep]
        ok = flat_rule(model, base, shape, c + [r0, c0])
        n = int(ok.sum())
        return c[ok], s[ok], np.zeros((n, 1)), np.zeros(n, np.intp)

    return decode


def flat_rule(model, base: BaseReader, shape, coords: np.ndarray) -> np.ndarray:
    """Which detections pass ``decode.min_contrast`` (not in an exactly flat region)."""
    floor = model.decode.min_contrast
    if floor <= 0 or len(coords) == 0:
        return np.ones(len(coords), bool)
    return local_contrast_at(base, shape, coords, contrast_window(model.decode)) >= floor


def stream_candidates(
    model,
    base: BaseReader,
    shape: tuple[int, int],
    rows: tuple[int, int] | None = None,
    skip_tile=None,
    progress: bool = False,
    chunk: int | None = None,
    cols: tuple[int, int] | None = None,
    decoder_factory=None,
    forward=None,
    **inference,
) -> Candidates:
    """Candidates in the block ``rows`` × ``cols`` (all by default) of a normalised image at
    the net's scale read through ``base``; :func:`finish_candidates` turns the candidates
    of all blocks into detections. ``decoder_factory(model, base, shape)`` replaces the
    model's chunk decoder (instance masks of slides, :func:`cellmaps.inference.slides.segment_slide`);
    ``forward`` replaces ``model.forward`` (tiles stacked across images, :meth:`Model.detect_many`)."""
    h, w = shape
    a, b = (0, h) if rows is None else rows
    c, d = (0, w) if cols is None else cols
    inferer = TiledInferer.from_recipe(model.recipe, **inference)
    p = model.decode
    peaks = p.is_peaks
    if decoder_factory is not None:
        peaks = False
        overlap = region_overlap(model.train_radius)
        decode = decoder_factory(model, base, shape)
    elif peaks:
        overlap = peak_overlap(p.min_distance)
        decode = peak_chunk_decoder(model, base, shape)
    else:
        overlap = region_overlap(model.train_radius)
        decode = region_chunk_decoder(model, base, shape)
    chunk = max(int(DECODE_CHUNK if chunk is None else chunk), overlap)
    span_c = (max(0, c - overlap), min(w, d + overlap))
    decoder = BandDecoder(decode, (a, b), overlap, chunk, p.task if peaks else None, (c, d),
                          span_c[0])  # fmt: skip

    def read(i0, i1, j0, j1):
        img = match_channels(base(i0, i1, j0, j1), model.in_channels)
        return standardize(np.ascontiguousarray(img.transpose(2, 0, 1)), model.mean, model.std)

    span = (max(0, a - overlap), min(h, b + overlap))
    forward = model.forward if forward is None else forward
    for r0, maps in inferer.stream(forward, read, shape, span, skip_tile, progress, span_c):
        if peaks:  # buffer only the channels the peaks are read from
            maps = {p.task: decoded_channels(maps[p.task], p)}
        decoder.feed(r0, maps)
    return decoder.finish()


def column_strips(width: int, strip: int | None = None) -> list[tuple[int, int]]:
    """Consecutive column ranges of at most ``strip`` (default :data:`STRIP_WIDTH`) columns
    covering [0, width)."""
    strip = STRIP_WIDTH if strip is None else strip
    n = max(1, -(-width // strip))
    edges = np.linspace(0, width, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def finish_candidates(model, found: Candidates, xi: float | None = None) -> Points:
    """Detections (net px) from the candidates of every band: ξ·(maximum of the whole
    image) for peak models, per-class merging, raster order."""
    c, s, v, ch = found.arrays()
    p = model.decode
    if p.is_peaks and len(c):
        xi = p.xi if xi is None else xi
        keep = s >= xi * found.tops[ch]
        c, s, v = c[keep], s[keep], v[keep]
        if found.tops is not None and len(found.tops) > 1:
            return p.points(*merge_class_peaks(c, s, v, p.min_distance, p.class_gains()))
    order = np.lexsort((c[:, 1], c[:, 0])) if len(c) else np.zeros(0, np.intp)
    return p.points(c[order], s[order])


def strip_candidates(
    model,
    base: BaseReader,
    shape: tuple[int, int],
    skip_tile=None,
    progress: bool = False,
    chunk: int | None = None,
    decoder_factory=None,
    forward=None,
    **inference,
) -> Candidates:
    """Candidates of a whole normalised image at the net's scale (read through ``base``),
    streamed in column strips of :data:`STRIP_WIDTH` (memory follows that width, not the
    image's), each from top to bottom: the one strip loop of in-memory images and slides."""
    found = Candidates()
    for cols in column_strips(shape[1]):
        found.merge(stream_candidates(model, base, shape, None, skip_tile, progress, chunk, cols,
                                      decoder_factory, forward, **inference))  # fmt: skip
    return found


def detect_streamed(
    model,
    base: BaseReader,
    shape: tuple[int, int],
    progress: bool = False,
    xi: float | None = None,
    chunk: int | None = None,
    skip_tile=None,
    forward=None,
    **inference,
) -> Points:
    """Detections (net px) in a normalised image at the net's scale read block by block
    through ``base(i0, i1, j0, j1) → (n, m, C)`` (an array slice, or a lazy slide):
    :func:`strip_candidates`, then :func:`finish_candidates`. ``skip_tile`` leaves tiles
    out (tissue detection); ``forward`` replaces ``model.forward``."""
    if model.needs_whole_image:
        # histogram equalisation and per-image percentiles need the whole image
        # (recipes for large images leave them off)
        whole = adjust_intensity(
            match_channels(base(0, shape[0], 0, shape[1]), model.in_channels),
            model.intensity,
            model.recipe["training"]["hist_eq"],
        )
        base = lambda i0, i1, j0, j1: whole[i0:i1, j0:j1]  # noqa: E731
    found = strip_candidates(model, base, shape, skip_tile, progress, chunk, None, forward,
                             **inference)  # fmt: skip
    return finish_candidates(model, found, xi)
