"""Decoders: predicted maps → objects, as free functions over a frozen :class:`DecodeParams`.

A decoder takes ``(maps, params, tops=None)`` — maps: name → (C, h, w) float32 at the net's
scale; ``tops``: each class map's maximum over a whole image for the ξ threshold, when
``maps`` are a strip of it — and returns :class:`~cellmaps.io.points.Points` in map pixels.
:data:`DECODERS` is the one place a decoder is named: the recipe schema's ``decode.kind`` /
``tasks[].decode`` choices come from it. Pure numpy (DESIGN.md: post-processing layer).

A model is never changed by predicting with it: a per-call override is a new
:class:`DecodeParams` (:meth:`DecodeParams.replace`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from cellmaps.io.points import Points
from cellmaps.io.scale import from_scaled_coords
from cellmaps.postprocess.components import component_centroids
from cellmaps.postprocess.hmaxima import h_maxima_peaks
from cellmaps.postprocess.peaks import (
    decoded_channels,
    edge_floor_factor,
    find_peaks,
    find_peaks_per_class,
    pixel_of,
)
from cellmaps.postprocess.split import split_instances

#: DecodeParams fields that come from the model, not from its ``decode`` settings
MODEL_FIELDS = (
    "task_decoders",
    "task_targets",
    "classes",
    "label",
    "train_radius",
    "head_channels",
)


@dataclasses.dataclass(frozen=True)
class DecodeParams(Mapping):
    """How a model turns its maps into objects: the recipe's ``decode`` section as tuned
    (read like a mapping, ``params["xi"]``, as the recipe and model file spell it) and what
    decoding needs to know about the model (its per-task decoders, class names, label,
    training radius and the decoded head's channel count). Frozen: a different setting is
    a new object, :meth:`replace`."""

    kind: str = "peaks"
    task: str | None = None
    xi: float = 0.5
    h: float = 0.2
    min_distance: int = 3
    min_distance_um: float | None = None
    min_area: int = 20
    min_score: float = 0.0
    edge_floor: float = 2**0.5
    min_contrast: float = 0.002
    boundary_task: str | None = None
    grid: tuple | None = None
    channel: int | None = None
    segment: str | None = None
    max_border: int | None = 12
    cell_threshold: float = 0.5
    separation_threshold: float = 0.5
    class_gain: Mapping[str, float] | None = None
    #: settings of older model files this version does not read, kept so they round-trip
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # -- from the model --
    task_decoders: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
    task_targets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    classes: tuple[str, ...] = ()
    label: str = "nucleus"
    train_radius: float | None = None
    head_channels: int = 1

    def __post_init__(self) -> None:
        for name in ("class_gain", "extra", "task_decoders", "task_targets"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, MappingProxyType(dict(value)))
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    @classmethod
    def from_settings(cls, decode: Mapping[str, Any], **model: Any) -> DecodeParams:
        """From a ``decode`` mapping (a recipe's section merged with a model file's tuned
        values) and the model's ``MODEL_FIELDS``; keys this version does not know are kept
        in ``extra``."""
        known = {f.name for f in dataclasses.fields(cls)} - set(MODEL_FIELDS) - {"extra"}
        settings = {k: v for k, v in decode.items() if k in known}
        extra = {k: v for k, v in decode.items() if k not in known}
        return cls(**settings, extra=extra, **model)

    def replace(self, **changes: Any) -> DecodeParams:
        """A copy with ``changes`` (decode settings by their recipe names)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise KeyError(f"unknown decode settings {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def overridden(self, **overrides: Any) -> DecodeParams:
        """A copy with the ``overrides`` that are not None (optional per-call settings, e.g.
        ``--xi`` or ``--min-score``, passed as they come)."""
        return self.replace(**{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """The decode settings as the model file stores them (no model fields)."""
        return {k: self[k] for k in self}

    # -- read like the recipe's decode mapping --
    def _settings(self) -> list[str]:
        names = [f.name for f in dataclasses.fields(self)]
        names = [n for n in names if n not in MODEL_FIELDS and n not in ("extra", "class_gain")]
        return names + (["class_gain"] if self.class_gain is not None else []) + list(self.extra)

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key not in self._settings():
            raise KeyError(key)
        value = getattr(self, key)
        return dict(value) if isinstance(value, MappingProxyType) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings())

    def __len__(self) -> int:
        return len(self._settings())

    __hash__ = None  # type: ignore[assignment]  # holds mappings

    def __reduce__(self):
        # read-only mapping views cannot be pickled by pickle itself (multiprocessing;
        # Dask's cloudpickle can): pickle plain dicts, frozen again on load
        plain = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain = {k: dict(v) if isinstance(v, MappingProxyType) else v for k, v in plain.items()}
        return (_decode_params, (plain,))

    # -- derived --
    @property
    def decoder(self) -> str:
        """The decoder's name: the decode task's own ``decode`` or ``decode.kind``."""
        kind = self.task_decoders.get(self.task) or self.kind
        if kind not in DECODERS:
            raise ValueError(f"unknown decoding {kind!r}; known: {sorted(DECODERS)}")
        return kind

    def task_with_target(self, target: str) -> str | None:
        """The first task whose target is ``target`` (e.g. ``outer_distance``), or None."""
        return next((t for t, tg in self.task_targets.items() if tg == target), None)

    @property
    def is_peaks(self) -> bool:
        """Whether the decoder reads local maxima above ξ·max (streamed exactly)."""
        return self.decoder in PEAK_DECODERS

    @property
    def edge_radius(self) -> float:
        """How far in (net px) the edge's higher evidence floor reaches: the object radius
        the model was trained at, else its peak distance."""
        return float(self.train_radius or self.min_distance or 1)

    def class_gains(self) -> np.ndarray | None:
        """One factor per class map for the class decision (``class_gain``, a {class name:
        factor} mapping tuned on validation, e.g. by :func:`cellmaps.tune.tune_class_gain`);
        None when not set."""
        if not self.class_gain:
            return None
        unknown = sorted(set(self.class_gain) - set(self.classes))
        if unknown:
            raise ValueError(
                f"decode.class_gain names classes {unknown} the model lacks: {list(self.classes)}"
            )
        return np.array([float(self.class_gain.get(n, 1.0)) for n in self.classes])

    def floor_at(self, coords: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The evidence floor for detections at ``coords`` (net px) of an image of
        ``shape`` (net px): ``min_score``, higher near the edge (``edge_floor``)."""
        return self.min_score * edge_floor_factor(coords, shape, self.edge_radius, self.edge_floor)

    def points(
        self, coords: np.ndarray, scores: np.ndarray, cls: np.ndarray | None = None
    ) -> Points:
        """Detections with the model's labels (class names for per-class maps)."""
        if cls is None:
            labels = np.full(len(coords), self.label, dtype=object)
        else:
            names = self.classes or tuple(str(i) for i in range(self.head_channels))
            labels = np.array([names[i] for i in cls], dtype=object)
        return Points(coords, labels, scores)


def _decode_params(fields: dict[str, Any]) -> DecodeParams:
    """DecodeParams from its fields (unpickling)."""
    return DecodeParams(**fields)


class Maps(dict):
    """Predicted maps (name → (C, h, w) float32) at the net's scale, remembering the input
    image's shape so detections and masks can be mapped back to input pixels."""

    input_shape: tuple[int, int] | None = None

    @property
    def net_shape(self) -> tuple[int, int]:
        return next(iter(self.values())).shape[-2:]

    @property
    def rescaled(self) -> bool:
        return self.input_shape is not None and tuple(self.input_shape) != tuple(self.net_shape)


def scored(p: DecodeParams, m: np.ndarray, coords: np.ndarray) -> Points:
    """Detections at ``coords`` scored by the map ``m`` (H, W) at their pixels."""
    rc = np.clip(pixel_of(coords).astype(int), 0, np.array(m.shape[-2:]) - 1)
    return p.points(coords, m[rc[:, 0], rc[:, 1]].astype(np.float64))


def scaled_px(value: float, scale: float, power: int = 1) -> int:
    """A size in map pixels (``power`` 1: a length, 2: an area) in input pixels, ≥ 1."""
    return max(1, int(round(value * scale**power)))


def split_planes(
    p: DecodeParams, seg: np.ndarray, sep: np.ndarray | None, scale: float = 1.0, min_area=None
):
    """DeepSplit's instances (:func:`cellmaps.postprocess.split.split_instances`) from the
    segmentation plane and, when the model has one, the separation plane, at the model's
    cell / separation thresholds and with its sizes (min_area, or the given one; seed
    distance; border length) times ``scale`` (input pixels per map pixel). Returns
    (labels, centroids)."""
    border = p.max_border
    return split_instances(
        seg,
        sep,
        threshold=p.cell_threshold,
        separation_threshold=p.separation_threshold,
        min_size=scaled_px(p.min_area if min_area is None else min_area, scale, 2),
        seed_distance=scaled_px(p.min_distance, scale),
        max_border=None if border is None else scaled_px(border, scale),
    )


def decode_peaks(maps: Mapping[str, np.ndarray], p: DecodeParams, tops=None) -> Points:
    """Local maxima above ξ·max, ``min_distance`` apart; per-class maps give classes
    (MicroNet, KiNet, weakly-points)."""
    m = decoded_channels(maps[p.task], p)
    if m.shape[0] > 1:
        return p.points(*find_peaks_per_class(m, p.xi, p.min_distance, tops, p.class_gains()))
    coords, scores = find_peaks(m[0], p.xi, p.min_distance, None if tops is None else tops[0])
    return p.points(coords, scores)


def decode_hmaxima(maps: Mapping[str, np.ndarray], p: DecodeParams, tops=None) -> Points:
    """h-maxima + regional maxima (DeepDistance §3.3)."""
    m = decoded_channels(maps[p.task], p)[0]
    return scored(p, m, h_maxima_peaks(m, p.h))


def decode_components(maps: Mapping[str, np.ndarray], p: DecodeParams, tops=None) -> Points:
    """Connected components of cells minus boundary above ``min_area`` px."""
    m = maps[p.task][0]
    coords, _ = component_centroids(m, maps[p.boundary_task][0], int(p.min_area))
    return scored(p, m, coords)


def decode_split(maps: Mapping[str, np.ndarray], p: DecodeParams, tops=None) -> Points:
    """DeepSplit: centroids of the cells of :func:`split_planes`."""
    seg = maps[p.task][0]
    sep = maps[p.boundary_task][0] if p.boundary_task else None
    _, coords = split_planes(p, seg, sep)
    return scored(p, seg, coords)


Decoder = Callable[..., Points]

#: the one place a decoder is named: ``decode.kind`` / ``tasks[].decode`` choices
DECODERS: dict[str, Decoder] = {
    "peaks": decode_peaks,
    "peaks_per_class": decode_peaks,
    "hmaxima": decode_hmaxima,
    "components": decode_components,
    "split": decode_split,
    "none": decode_peaks,
}
PEAK_DECODERS = ("peaks", "peaks_per_class", "none")


def above_floor(
    pts: Points,
    min_score: float,
    shape: tuple[int, int] | None = None,
    radius: float = 1.0,
    edge: float = 1.0,
) -> Points:
    """The detections whose map value reaches the absolute evidence floor ``min_score``
    (times :func:`~cellmaps.postprocess.peaks.edge_floor_factor` near the edge of a map of
    ``shape``, given with ``radius`` and ``edge``).

    ξ is relative to each image's own maximum, so an empty image (black, white, flat, noise)
    still has peaks above ξ·max; the floor, chosen on validation images, removes them."""
    if min_score <= 0 or len(pts) == 0 or pts.scores is None:
        return pts
    floor = np.full(len(pts), float(min_score))
    if shape is not None and edge != 1.0:
        floor = floor * edge_floor_factor(pts.coords, shape, radius, edge)
    return pts.subset(pts.scores >= floor)


def decode_maps(maps: Mapping[str, np.ndarray], p: DecodeParams, tops=None) -> Points:
    """Objects from predicted maps with the decoder ``p`` names, above the evidence floor;
    in input pixels when ``maps`` is a :class:`Maps` of a resampled image."""
    pts = DECODERS[p.decoder](maps, p, tops=tops)
    shape = np.shape(maps[p.task])[-2:] if p.task in maps else None
    pts = above_floor(pts, p.min_score, shape, p.edge_radius, p.edge_floor)
    if isinstance(maps, Maps) and maps.rescaled:
        coords = from_scaled_coords(pts.coords, maps.input_shape, maps.net_shape)
        pts = Points(coords, pts.labels, pts.scores)
    return pts


# Up to this many window values, local contrast is computed with numpy (see SMALL_MAP in
# cellmaps.postprocess.peaks: loading the compiled kernels costs about a second).
SMALL_CONTRAST_WORK = 1 << 21


def symmetric_index(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for positions outside it mirrored with the edge
    repeated, as ``np.pad(mode='symmetric')`` does (periodically for long pads)."""
    k = np.mod(np.asarray(index, dtype=np.int64), 2 * length)
    return np.where(k < length, k, 2 * length - 1 - k)


def local_contrast(image: np.ndarray, window: int, coords: np.ndarray) -> np.ndarray:
    """Standard deviation of a normalised (H, W, C) image over the ``window``² square around
    each (row, col), the largest over channels (mirrored at the borders). An exactly flat
    region (scanner padding, a black, white or grey image) has 0: nothing there can be an
    object. Only the windows at ``coords`` are read (compiled: no padded copy of the image,
    no array of windows)."""
    img = np.asarray(image)
    if len(coords) == 0:
        return np.zeros(0)
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) image, got shape {img.shape}")
    rc = np.clip(pixel_of(coords).astype(np.int64), 0, np.array(img.shape[:2]) - 1)
    if len(rc) * window * window * img.shape[2] <= SMALL_CONTRAST_WORK:
        # little to do: numpy, without loading the compiled kernels
        offsets = np.arange(window) - window // 2
        rows = symmetric_index(rc[:, :1] + offsets, img.shape[0])  # (N, window)
        cols = symmetric_index(rc[:, 1:] + offsets, img.shape[1])
        patches = img[rows[:, :, None], cols[:, None, :]].astype(np.float32)  # (N, w, w, C)
        return patches.std(axis=(1, 2), dtype=np.float64).max(axis=1)
    # imported here: loading the numba kernels costs about a second (see SMALL_MAP)
    from cellmaps.postprocess._compiled import window_std_max

    img = np.ascontiguousarray(img, dtype=np.float32)
    return window_std_max(
        img, np.ascontiguousarray(rc[:, 0]), np.ascontiguousarray(rc[:, 1]), int(window)
    )


def contrast_window(p: DecodeParams) -> int:
    """Side of the flat-region rule's window: about twice the training radius, ≥ 7."""
    return 2 * max(3, round(p.train_radius or 3)) + 1
