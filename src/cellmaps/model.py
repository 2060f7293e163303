"""A trained model: net + recipe + normalisation + tuned decoding, as one safe file.

:class:`Model` is a thin object over its parts: the net (:mod:`cellmaps.nets`), the input
normalisation (:mod:`cellmaps.io.scale`), the decoding settings (a frozen
:class:`~cellmaps.postprocess.decode.DecodeParams`; decoders are free functions in
:mod:`cellmaps.postprocess.decode`), tiled and streamed inference (:mod:`cellmaps.inference`)
and the automatic object scale (:mod:`cellmaps.inference.scale`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellmaps.errors import CellmapsInputError
from cellmaps.inference.scale import AUTO, estimate_input_scale
from cellmaps.inference.stacked import run_stacked
from cellmaps.inference.stream import detect_streamed
from cellmaps.inference.tiles import TiledInferer
from cellmaps.io.images import INTENSITY_RULE, normalize_image
from cellmaps.io.points import Points
from cellmaps.io.scale import (
    base_image,
    from_scaled_coords,
    rescale_image,
    scale_factor,
    standardize,
)
from cellmaps.modelfile import load_model_file, save_model_file
from cellmaps.nets import HeadSpec, apply_activation, net_from_config
from cellmaps.nets.blocks import fold_batchnorm
from cellmaps.postprocess.decode import DecodeParams, Maps, decode_maps
from cellmaps.postprocess.measure import object_table
from cellmaps.postprocess.segment import can_outline, require_outlines, segment_maps
from cellmaps.postprocess.tumour_gate import apply_gate
from cellmaps.recipes import task_head, validate_recipe
from cellmaps.recipes.migrate import migrate_decode, migrate_summary

__all__ = ["Model", "Prediction", "load_model", "segment_image"]

#: tiles per stacked forward pass of :meth:`Model.detect_many` and
#: :meth:`Model.predict_maps_many` by default; 1 = each image alone: on this 2-core CPU one by
#: one was faster than stacks of 2, 4 or 8 (BENCHMARKS.md "Small images stacked")
STACK_TILES = 1


def head_specs(recipe: dict) -> list[HeadSpec]:
    """One net output per head; tasks that name the same ``head`` share it."""
    specs: dict[str, HeadSpec] = {}
    for t in recipe["tasks"]:
        specs.setdefault(task_head(t), HeadSpec(task_head(t), t["channels"], t["activation"]))
    return list(specs.values())


def net_from_recipe(recipe: dict, in_channels: int) -> torch.nn.Module:
    """The recipe's net (``net.kind`` from :data:`cellmaps.nets.NETS`) with its heads."""
    return net_from_config(recipe["net"], in_channels, head_specs(recipe))


def bf16_supported() -> bool:
    """Whether bf16 autocast runs natively on this CPU (AVX512-BF16/AMX); fp32 otherwise."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def uses_bf16(precision: str) -> bool:
    """Whether a recipe's precision runs in bf16 here: 'bf16' always, 'auto' on CPUs that
    support it natively, 'fp32' never."""
    return precision == "bf16" or (precision == "auto" and bf16_supported())


def autocast(precision: str):
    """bf16 autocast on CPUs that support it ('auto'), always ('bf16') or never ('fp32')."""
    use = uses_bf16(precision)
    return torch.autocast("cpu", dtype=torch.bfloat16) if use else contextlib.nullcontext()


@dataclasses.dataclass
class Prediction:
    """What :meth:`Model.predict` found in one image (input pixels).

    Attributes
    ----------
    points : the objects' centres (row, col) with class labels and scores.
    labels : (H, W) int32 instance image of their outlines, or None (points only).
    columns : the per-object table as equal-length numpy arrays (see :attr:`table`).
    maps : every head's map at the net's scale when asked for (``maps=True``), else None.
    factor : the input → net scale factor used (object size given, estimated or default).
    """

    points: Points
    labels: np.ndarray | None
    columns: dict[str, np.ndarray]
    maps: Maps | None
    factor: float

    def __len__(self) -> int:
        return len(self.points)

    @property
    def table(self):
        """One row per object (a pandas DataFrame): x, y (px; x = column), class, score,
        object (instance id in :attr:`labels`, 0 for none), area_px, perimeter_px,
        equivalent_diameter_px, eccentricity, solidity (and area_um2 with a pixel size),
        mean intensity per channel, haematoxylin and DAB optical density (mean, max) for
        RGB brightfield images, and measured_on: "outline", or "disc r=… px" for models
        that give points only (a disc of the object radius around each point)."""
        import pandas as pd  # only here: the rest of the package does not need pandas

        return pd.DataFrame(self.columns)


class Model:
    """Net + recipe + input normalisation + decoding parameters + training summary.

    ``decode`` is a frozen :class:`~cellmaps.postprocess.decode.DecodeParams`; predicting
    never changes it (per-call overrides, :meth:`with_decode`, make a new one). Tuning
    assigns a new one: ``model.decode = model.decode.replace(xi=0.4)``.
    """

    def __init__(
        self,
        recipe: dict,
        in_channels: int,
        mean: list[float],
        std: list[float],
        decode: dict | None = None,
        training: dict | None = None,
        net: torch.nn.Module | None = None,
    ) -> None:
        self.recipe = recipe
        self.in_channels = int(in_channels)
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.training = migrate_summary(training)
        self.decode = DecodeParams.from_settings(
            dict(recipe["decode"], **(migrate_decode(decode) or {}))
        )
        self.net = net if net is not None else net_from_recipe(recipe, in_channels)
        self.activations = {task_head(t): t["activation"] for t in recipe["tasks"]}

    # -- decoding settings: the model's own fields read from its recipe and training summary
    # when asked for, so a summary filled in after construction (training) is seen
    @property
    def decode(self) -> DecodeParams:
        """The decoding settings with what decoding needs to know about this model."""
        tasks = self.recipe["tasks"]
        channels = {h.name: h.channels for h in head_specs(self.recipe)}
        return dataclasses.replace(
            self._decode,
            task_decoders={t["name"]: t["decode"] for t in tasks},
            task_targets={t["name"]: t["target"] for t in tasks},
            classes=tuple(self.training.get("classes") or ()),
            label=self.training.get("label", "nucleus"),
            train_radius=self.train_radius,
            head_channels=channels.get(self._decode.task, 1),
        )

    @decode.setter
    def decode(self, params: DecodeParams | Mapping[str, Any]) -> None:
        """New decoding settings: a DecodeParams, or a mapping of recipe ``decode`` keys."""
        if not isinstance(params, DecodeParams):
            if not isinstance(params, Mapping):
                raise TypeError(f"decode must be a DecodeParams, got {type(params).__name__}")
            params = DecodeParams.from_settings(params)
        self._decode = params

    @contextlib.contextmanager
    def decoding(self, **overrides):
        """Decode with other settings inside a ``with`` block; the model's own are restored
        afterwards (tuning sweeps, benchmarks)."""
        saved = self._decode
        self._decode = saved.replace(**overrides)
        try:
            yield self
        finally:
            self._decode = saved

    def with_decode(self, **overrides) -> Model:
        """This model (the same net, not a copy of its weights) with other decoding settings
        (None values ignored); the model itself is unchanged."""
        other = copy.copy(self)
        other._decode = self._decode.overridden(**overrides)
        return other

    # -- file -------------------------------------------------------------------------------
    def meta(self) -> dict:
        """Everything but the weights, as the model file stores it."""
        return {
            "recipe": self.recipe,
            "in_channels": self.in_channels,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "decode": self._decode.as_dict(),
            "training": self.training,
        }

    def save(self, path: str | os.PathLike, half: bool = False) -> None:
        """Write the model file; ``half`` stores float weights as float16 (half the size,
        for bundled models; they are float32 again once loaded)."""
        state = self.net.state_dict()
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_model_file(path, state, self.meta())

    def fingerprint(self) -> str:
        """SHA-256 of the weights and of the settings (recipe, normalisation, decoding), so
        two runs can tell whether they used the same model."""
        h = hashlib.sha256(json.dumps(self.meta(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.net.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model file (old key names migrated, :mod:`cellmaps.recipes.migrate`)."""
        state, meta = load_model_file(path)
        try:
            recipe = validate_recipe(meta["recipe"], f"{path} (embedded recipe)")
            model = cls(
                recipe,
                meta["in_channels"],
                meta["mean"],
                meta["std"],
                meta.get("decode"),
                meta.get("training"),
            )
            model.net.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CellmapsInputError(f"model file does not match its recipe ({exc})", path) from exc
        rule = model.training.get("intensity_rule", INTENSITY_RULE)
        if rule != INTENSITY_RULE:
            raise CellmapsInputError(
                f"model was trained with the intensity rule {rule!r}; this cellmaps applies "
                f"{INTENSITY_RULE!r} (use the cellmaps version that trained it)",
                path,
            )
        model.net.eval()
        return model

    # -- what it was trained on -----------------------------------------------------------------
    @property
    def train_radius(self) -> float | None:
        """Median object radius (px) in the pixels the net was trained on."""
        return self.training.get("train_radius")

    @property
    def intensity(self) -> str:
        """The input intensity normalisation it was trained with (recipe
        ``training.intensity``: "range" or "percentile"; files from before the key: range)."""
        return self.recipe["training"].get("intensity", "range")

    @property
    def needs_whole_image(self) -> bool:
        """True when preparing the input needs statistics of the whole image (histogram
        equalisation, per-image percentiles), so it cannot be read region by region."""
        return bool(self.recipe["training"]["hist_eq"]) or self.intensity != "range"

    # -- prediction -----------------------------------------------------------------------------
    def prepare(
        self, image: np.ndarray, source: str | None = None, factor: float = 1.0
    ) -> np.ndarray:
        """Image as stored → standardised (C, H, W) float32 for the net, resampled by
        ``factor`` (the same :func:`~cellmaps.io.scale.base_image` and
        :func:`~cellmaps.io.scale.standardize` as training)."""
        hist_eq = self.recipe["training"]["hist_eq"]
        img = base_image(image, hist_eq, factor, self.in_channels, source, self.intensity)
        return standardize(img, self.mean, self.std)

    def input_scale(
        self,
        object_size: float | str | None = None,
        pixel_size: float | None = None,
        image: np.ndarray | None = None,
    ) -> float:
        """Factor from input pixels to the net's pixels.

        ``object_size``: the median object radius (px) in the input, or ``"auto"`` to
        estimate it from ``image`` (:func:`cellmaps.inference.scale.estimate_input_scale`);
        ``pixel_size``: the input's µm per pixel, for models that know their training
        radius in µm. Without either, the recipe's ``inference.object_size`` policy:
        ``"auto"`` (with an image), else inputs are taken to be like the training images
        (factor = training radius / training-image object size; 1 for models trained
        without resampling)."""
        net = self.train_radius
        if object_size is None and pixel_size is None and image is not None:
            object_size = self.recipe["inference"].get("object_size")
        if isinstance(object_size, str):
            if object_size != AUTO:
                raise CellmapsInputError(
                    f"object size must be a number of pixels or {AUTO!r}, got {object_size!r}"
                )
            if image is None:
                raise CellmapsInputError(
                    "--object-size auto needs the image (not available for streamed slides: "
                    "give --object-size in px, --pixel-size or --magnification)"
                )
            return estimate_input_scale(self, image)
        if object_size is None and pixel_size is not None:
            um = self.training.get("train_radius_um")
            if um is None:
                raise CellmapsInputError(
                    "--pixel-size needs a model that knows its object size in µm (train with "
                    "--pixel-size); give --object-size in px instead"
                )
            if not (np.isfinite(pixel_size) and pixel_size > 0):
                raise CellmapsInputError(f"pixel size must be positive, got {pixel_size}")
            object_size = um / pixel_size
        if object_size is not None:
            if net is None:
                raise CellmapsInputError(
                    "this model does not record the object size it was trained at "
                    "(retrain it with this version of cellmaps)"
                )
            return scale_factor(net, object_size)
        data = self.training.get("data_object_size")
        return 1.0 if net is None or data is None else scale_factor(net, data)

    def _inference_net(self) -> torch.nn.Module:
        """The net used for prediction: an eval-mode copy with every BatchNorm folded into
        the convolution before it (:func:`~cellmaps.nets.blocks.fold_batchnorm`),
        channels-last; remade whenever the weights change (a model being trained)."""
        tensors = itertools.chain(self.net.parameters(), self.net.buffers())
        key = (id(self.net), tuple(t._version for t in tensors))
        if getattr(self, "_inference_key", None) != key:
            net = copy.deepcopy(self.net).eval()
            self._inference = fold_batchnorm(net).to(memory_format=torch.channels_last)
            self._inference_key = key
        return self._inference

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Net outputs with each head's activation applied (no grad)."""
        self.net.eval()
        with torch.no_grad(), autocast(self.recipe["training"]["precision"]):
            out = self._inference_net()(x.contiguous(memory_format=torch.channels_last))
        return {k: apply_activation(v.float(), self.activations[k]) for k, v in out.items()}

    def predict_maps(
        self,
        image: np.ndarray,
        progress: bool = False,
        object_size: float | str | None = None,
        pixel_size: float | None = None,
        scale: float | None = None,
        **inference,
    ) -> Maps:
        """Every head's map for an image of any size (see
        :class:`cellmaps.inference.tiles.TiledInferer`), at the net's scale: the image is
        resampled by :meth:`input_scale` (or ``scale``) first; :meth:`decode_maps` maps
        detections back to input pixels."""
        factor = self.input_scale(object_size, pixel_size, image) if scale is None else scale
        inferer = TiledInferer.from_recipe(self.recipe, **inference)
        maps = Maps(inferer.predict(self.forward, self.prepare(image, factor=factor), progress))
        maps.input_shape = tuple(np.asarray(image).shape[:2])
        return maps

    def decode_maps(
        self,
        maps: dict[str, np.ndarray],
        xi: float | None = None,
        h: float | None = None,
        tops: np.ndarray | None = None,
        min_area: int | None = None,
        min_score: float | None = None,
    ) -> Points:
        """Objects from predicted maps with the model's decoding (tuned ξ or h by default),
        in input pixels when ``maps`` came from :meth:`predict_maps` on a resampled image.
        ``tops`` overrides each class map's maximum for the ξ threshold (strips of a large
        image); ``min_score`` overrides the absolute evidence floor (``decode.min_score``).
        (:func:`cellmaps.postprocess.decode.decode_maps` with these overrides.)"""
        params = self.decode.overridden(xi=xi, h=h, min_area=min_area, min_score=min_score)
        return decode_maps(maps, params, tops)

    def detect(
        self,
        image: np.ndarray,
        progress: bool = False,
        strip: int | None = None,
        xi: float | None = None,
        object_size: float | str | None = None,
        pixel_size: float | None = None,
        **inference,
    ) -> Points:
        """Detect objects in an image of any size, in input pixels.

        The image is first resampled so its objects match the model's
        (:meth:`input_scale`: ``object_size`` = median object radius of the input in px,
        or ``pixel_size`` in µm/px). Prediction and decoding are streamed
        (:func:`cellmaps.inference.stream.detect_streamed`): the maps in memory are at most
        a tile's height plus ``strip`` rows (decoded at a time) of the image's width, and the
        result is the decoding of the whole map (ξ uses the maximum of the whole image).
        """
        scaled = self._scaled_input(image, object_size, pixel_size)
        return self._detect_scaled(image, scaled, progress, xi, strip, None, **inference)

    def detect_many(
        self,
        images: Sequence[np.ndarray],
        xi: float | None = None,
        object_size: float | str | Sequence[float | None] | None = None,
        pixel_size: float | None = None,
        stack: int = STACK_TILES,
        **inference,
    ) -> list[Points]:
        """:meth:`detect` on each of ``images``, with the net run on the tiles of the small
        ones stacked: every image that runs as one tile
        (:meth:`~cellmaps.inference.tiles.TiledInferer.for_shape`) shares forward passes of
        up to ``stack`` tiles of its shape with the others (:mod:`cellmaps.inference.stacked`);
        larger images run alone. Each image is cut, blended and decoded exactly as by
        :meth:`detect`, so the results are :meth:`detect`'s (to the float rounding of a
        larger batch). ``object_size`` may be a list, one per image. All images are held in
        memory at once: pass a folder in groups."""
        inferer = TiledInferer.from_recipe(self.recipe, **inference)
        sizes = (
            object_size if isinstance(object_size, list | tuple) else [object_size] * len(images)
        )
        if len(sizes) != len(images):
            raise CellmapsInputError(f"{len(sizes)} object sizes for {len(images)} images")
        scaled = [self._scaled_input(img, size, pixel_size)
                  for img, size in zip(images, sizes, strict=True)]  # fmt: skip
        small = [i for i, s in enumerate(scaled) if inferer.tiles_over(*s[2].shape[:2]) == 1]
        runs = [
            lambda fwd, i=i: self._detect_scaled(
                images[i], scaled[i], False, xi, None, fwd, **inference
            )  # fmt: skip
            for i in small
        ]
        found = dict(zip(small, run_stacked(runs, self.forward, self.head_channels, stack),
                         strict=True))  # fmt: skip
        return [
            found[i]
            if i in found
            else self._detect_scaled(img, s, False, xi, None, None, **inference)
            for i, (img, s) in enumerate(zip(images, scaled, strict=True))
        ]

    def predict_maps_many(
        self,
        images: Sequence[np.ndarray],
        scales: Sequence[float],
        stack: int = STACK_TILES,
        **inference,
    ) -> list[Maps]:
        """:meth:`predict_maps` of each image at its input → net factor, with the tiles of all
        images stacked into forward passes of up to ``stack`` tiles
        (:func:`~cellmaps.inference.stacked.run_stacked`; the same maps to the float rounding
        of a larger batch); ``inference``: tiling overrides. The automatic scale estimate
        predicts its crops this way, and ``cellmaps predict --masks`` small images."""
        inferer = TiledInferer.from_recipe(self.recipe, **inference)
        # resampled once, outside the runs: run_stacked runs each twice (record, replay)
        prepared = [self.prepare(img, factor=f) for img, f in zip(images, scales, strict=True)]
        runs = [lambda fwd, x=x: inferer.predict(fwd, x) for x in prepared]
        found = run_stacked(runs, self.forward, self.head_channels, stack)
        out = []
        for img, maps in zip(images, found, strict=True):
            out.append(Maps(maps))
            out[-1].input_shape = tuple(np.asarray(img).shape[:2])
        return out

    @property
    def head_channels(self) -> dict[str, int]:
        """Each net output's channel count (head name → channels)."""
        return {h.name: h.channels for h in head_specs(self.recipe)}

    def _scaled_input(
        self, image: np.ndarray, object_size, pixel_size
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """(factor, the image normalised, the same resampled to the net's scale)."""
        factor = self.input_scale(object_size, pixel_size, image)
        # normalised once for the whole image: every band gets the same intensity range,
        # and the flat-region rule reads the same pixels
        full = normalize_image(image)
        return factor, full, full if factor == 1.0 else rescale_image(full, factor)

    def _detect_scaled(self, image, scaled, progress, xi, strip, forward, **inference) -> Points:
        """:meth:`detect` on an image already scaled by :meth:`_scaled_input`; ``forward``
        replaces :meth:`forward` (stacked tiles)."""
        factor, full, small = scaled
        pts = detect_streamed(self, lambda i0, i1, j0, j1: small[i0:i1, j0:j1], small.shape[:2],
                              progress, xi, strip, forward=forward, **inference)  # fmt: skip
        if factor != 1.0:
            coords = from_scaled_coords(pts.coords, image.shape[:2], small.shape[:2])
            pts = Points(coords, pts.labels, pts.scores)
        return self.gated(pts, full, factor)

    def gated(self, points: Points, image: np.ndarray, factor: float) -> Points:
        """``points`` (input px) after the model's tumour gate, when it has one
        (``training.tumour_gate``, :mod:`cellmaps.postprocess.tumour_gate`: Ki67 detections
        that do not look like tumour nuclei become ``non_tumour``); as given otherwise."""
        gate = self.training.get("tumour_gate")
        if gate is None or not len(points):
            return points
        if np.ndim(image) != 3 or np.shape(image)[2] < 3:
            raise CellmapsInputError("this model's tumour gate needs RGB brightfield images")
        radius = (self.train_radius or self.training["data_object_size"]) / factor
        return apply_gate(gate, points, image, radius)

    def predict(
        self,
        image: np.ndarray,
        *,
        object_size: float | str | None = None,
        pixel_size: float | None = None,
        masks: bool | None = None,
        maps: bool = False,
        progress: bool = False,
    ) -> Prediction:
        """Find the objects in one image and measure each.

        Parameters
        ----------
        image : (H, W) or (H, W, C) array as read from the file (any dtype).
        object_size : median object radius in the image (px), or ``"auto"`` to estimate it
            from the image; None: the model's policy (:meth:`input_scale`).
        pixel_size : µm per pixel: sets the scale for models trained with a pixel size, and
            adds µm² areas to the table.
        masks : outlines too. None: when the model can outline; True: required (a clear
            error when it cannot); False: points only.
        maps : keep every head's map in the result (memory: a float32 image per channel).
        progress : show a progress bar over tiles.

        Returns
        -------
        Prediction
            ``.points``, ``.labels`` (instance image or None), ``.table`` (a DataFrame, one
            row per object with measurements), ``.maps``.

        Examples
        --------
        >>> import numpy as np, cellmaps
        >>> m = cellmaps.load_model()                    # the bundled H&E nucleus detector
        >>> r = m.predict(np.full((64, 64, 3), 235, np.uint8))  # an empty white field
        >>> len(r), list(r.table.columns[:5])
        (0, ['x', 'y', 'class', 'score', 'object'])
        """
        img = np.asarray(image)
        if img.ndim not in (2, 3) or img.size == 0:
            raise CellmapsInputError(f"image must be a non-empty (H, W) or (H, W, C) array, "
                                     f"got shape {img.shape}")  # fmt: skip
        if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
            raise CellmapsInputError("image has NaN or infinite values")
        can_outline = self.can_outline
        if masks and not can_outline:
            require_outlines(self.decode)  # the error that says what the model lacks
        factor = self.input_scale(object_size, pixel_size, img)
        outlines, found = None, None
        if maps or (can_outline and masks is not False):
            found = self.predict_maps(img, progress, scale=factor)
        if can_outline and masks is not False:
            pts, outlines = segment_maps(found, self.decode)
        elif found is not None:
            pts = self.gated(self.decode_maps(found), normalize_image(img), factor)
        else:
            pts = self.detect(img, progress, object_size=self.train_radius / factor
                              if self.train_radius else None)  # fmt: skip
        columns = self.measure(pts, img, outlines, factor, pixel_size)
        return Prediction(pts, outlines, columns, found if maps else None, float(factor))

    def measure(
        self,
        points: Points,
        image: np.ndarray,
        outlines: np.ndarray | None,
        factor: float,
        pixel_size: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-object measurements (:func:`cellmaps.postprocess.measure.object_table`) of
        ``points`` found in ``image`` at input scale ``factor`` (:meth:`input_scale`): on the
        ``outlines`` (instance image), or on discs of the model's object radius in the input's
        pixels for points only; optical densities for brightfield models."""
        radius = (self.train_radius or self.training.get("data_object_size") or 6.0) / factor
        return object_table(points, image, outlines, disc_radius=radius, pixel_size=pixel_size,
                            brightfield=self.training.get("modality", "brightfield")
                            == "brightfield")  # fmt: skip

    @property
    def can_outline(self) -> bool:
        """Whether the model's decoding gives outlines
        (:func:`cellmaps.postprocess.segment.can_outline`)."""
        return can_outline(self.decode)


def segment_image(
    model: Model,
    image: np.ndarray,
    progress: bool = False,
    outer_min: float = 0.5,
    maps: dict[str, np.ndarray] | None = None,
    **inference,
) -> tuple[Points, np.ndarray]:
    """Detections and an instance mask of an image (input pixels) by the model's
    ``decode.segment`` (:func:`cellmaps.postprocess.segment.segment_maps`): DeepDistance's
    marker-controlled region growing (§4.7; ``outer_min`` is the outer distance above which
    markers widen, paper: 0.5), argmax + watershed (weakly-points) or DeepSplit's split.
    ``maps`` reuses already predicted maps.

    Returns
    -------
    points : Points
    mask : (H, W) int32
    """
    params = model.decode
    require_outlines(params)  # a clear error before any prediction
    if maps is None:
        maps = model.predict_maps(image, progress, **inference)
    return segment_maps(maps, params, outer_min)


def load_model(path: str | os.PathLike | Model | None = None) -> Model:
    """Load a model file; with no path, the bundled default nucleus detector (a
    :class:`Model` is returned as is)."""
    if isinstance(path, Model):
        return path
    if path is None:
        path = default_model_path()
    return Model.load(path)


def bundled_model_path(name: str = "default") -> Path:
    """Path of a model shipped in the package: ``default`` (H&E/IHC nucleus detector) or
    ``ki67`` (Ki67-positive / negative tumour nuclei)."""
    path = Path(__file__).parent / "models" / f"{name}.safetensors"
    if not path.is_file():
        raise CellmapsInputError(
            f"the bundled {name!r} model is missing from this installation", path
        )
    return path


def default_model_path() -> Path:
    return bundled_model_path("default")
