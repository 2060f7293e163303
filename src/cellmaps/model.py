"""A trained model: net + recipe + normalisation + tuned decoding, as one safe file."""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from pathlib import Path

import numpy as np
import torch

from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import INTENSITY_RULE, normalize_image
from cellmaps.io.points import Points
from cellmaps.io.scale import (
    adjust_intensity,
    base_image,
    equalize,
    from_scaled_coords,
    mask_object_radii,
    match_channels,
    rescale_image,
    scale_factor,
    standardize,
)
from cellmaps.modelfile import load_model_file, save_model_file
from cellmaps.nets import HeadSpec, apply_activation, net_from_config
from cellmaps.nets.blocks import fold_batchnorm
from cellmaps.postprocess import (
    component_centroids,
    find_peaks,
    find_peaks_per_class,
    h_maxima_peaks,
)
from cellmaps.postprocess.peaks import decoded_channels, edge_floor_factor, pixel_of
from cellmaps.recipes import task_head, tiling_options, validate_recipe

__all__ = ["Maps", "Model", "equalize", "load_model", "segment_image"]


def head_specs(recipe: dict) -> list[HeadSpec]:
    """One net output per head; tasks that name the same ``head`` share it."""
    specs: dict[str, HeadSpec] = {}
    for t in recipe["tasks"]:
        specs.setdefault(task_head(t), HeadSpec(task_head(t), t["channels"], t["activation"]))
    return list(specs.values())


def net_from_recipe(recipe: dict, in_channels: int) -> torch.nn.Module:
    """The recipe's net (``net.kind`` from :data:`cellmaps.nets.NETS`) with its heads."""
    return net_from_config(recipe["net"], in_channels, head_specs(recipe))


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


def bf16_supported() -> bool:
    """Whether bf16 autocast runs natively on this CPU (AVX512-BF16/AMX); fp32 otherwise."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(precision: str):
    """bf16 autocast on CPUs that support it ('auto'), always ('bf16') or never ('fp32')."""
    use = precision == "bf16" or (precision == "auto" and bf16_supported())
    return torch.autocast("cpu", dtype=torch.bfloat16) if use else contextlib.nullcontext()


class Model:
    """Net + recipe + input normalisation + decoding parameters + training summary."""

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
        self.decode = dict(recipe["decode"], **(decode or {}))
        self.training = training or {}
        self.net = net if net is not None else net_from_recipe(recipe, in_channels)
        self.activations = {task_head(t): t["activation"] for t in recipe["tasks"]}
        self.task_decoders = {t["name"]: t["decode"] for t in recipe["tasks"]}

    # -- file -------------------------------------------------------------------------------
    def meta(self) -> dict:
        return {
            "recipe": self.recipe,
            "in_channels": self.in_channels,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "decode": self.decode,
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
        import hashlib
        import json

        h = hashlib.sha256(json.dumps(self.meta(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.net.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
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
        except (KeyError, RuntimeError) as exc:
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

    # -- object scale ---------------------------------------------------------------------------
    @property
    def object_size(self) -> float | None:
        """Median object radius (px) in the pixels the net was trained on."""
        return self.training.get("object_size")

    def input_scale(
        self,
        object_size: float | str | None = None,
        pixel_size: float | None = None,
        image: np.ndarray | None = None,
    ):
        """Factor from input pixels to the net's pixels.

        ``object_size``: the median object radius (px) in the input, or ``"auto"`` to
        estimate it from ``image`` (:meth:`estimate_input_scale`); ``pixel_size``: the
        input's µm per pixel, for models that know their object size in µm. Without either,
        the recipe's ``inference.object_size`` policy: ``"auto"`` (with an image), else
        inputs are taken to be like the training images (factor = net object size /
        training-image object size; 1 for models trained without resampling)."""
        net = self.object_size
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
            return self.estimate_input_scale(image)
        if object_size is None and pixel_size is not None:
            um = self.training.get("object_size_um")
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

    def estimate_input_scale(self, image: np.ndarray) -> float:
        """The input → net factor at which the net's evidence for objects is strongest.

        The decoded map (the decoding task, the maximum over its class channels) is
        predicted on a central crop of the image at every factor of
        :data:`AUTO_SCALE_FACTORS`; each factor is scored by the map's
        ``AUTO_SCALE_PERCENTILE``-th percentile (the peaks: a net trained at one object
        size answers most strongly where objects have that size), and the best factor is
        refined by a parabola through it and its neighbours in log factor. Written here,
        not taken from a library: it is a property of the trained net, not of the image.
        On CRCHisto (20×), MoNuSeg and MBM (40×) validation images it lands within a grid
        step of the factor the annotations give (``benchmarks/auto_scale.py``).
        Where no factor gives evidence above the model's floor (``decode.min_score``: an empty
        or noise image) or the best is at either end of the grid (the scale lies outside it;
        enlarged noise looks like small nuclei), the training-image scale is kept. The
        estimate is multiplied by ``inference.auto_scale_calibration`` (1 unless measured on
        validation images, see ``benchmarks/auto_scale.py --ki67``).
        Only for models that record the object size they were trained at; split-decoding
        (DeepSplit) models measure their own instances instead (:meth:`estimate_split_scale`)."""
        if self.object_size is not None and self.decode_kind() == "split":
            return self.estimate_split_scale(image)
        if self.object_size is None or self.decode_kind() != "peaks":
            raise CellmapsInputError(
                "--object-size auto needs a peak- or split-decoding model that records the "
                "object size it was trained at; give --object-size in px or --pixel-size"
            )
        log_factors, response = self.scale_response(image)
        k = int(np.argmax(response))
        if response[k] < self.decode["min_score"] or k in (0, len(response) - 1):
            return self.input_scale()
        calibration = self.recipe["inference"]["auto_scale_calibration"]
        return float(np.exp(best_log_factor(log_factors, response))) * calibration

    def estimate_split_scale(self, image: np.ndarray) -> float:
        """The input → net factor at which a DeepSplit model's own instances have its
        training radius: on a central crop (:func:`auto_scale_crop`) the instances are
        segmented at every factor f of :data:`AUTO_SPLIT_FACTORS`, and their median
        equivalent-disc radius in net px, r(f), is compared with the net's object size R. The
        smallest factor with r(f) within ``AUTO_SPLIT_TOLERANCE`` of R (else the factor
        closest to it) is corrected once by R / r(f), within half a grid step. A scan, not an
        iteration from the training scale, and the smallest consistent factor: a net shown
        objects far larger than its own fragments them into pieces that can have about its
        size too (an iteration from the training scale drove a DSB image of radius-20 nuclei
        to the grid's end), while at too small a factor cells merge, which only makes r(f)
        larger. Factors with fewer than ``AUTO_SPLIT_MIN_OBJECTS`` instances do not count;
        with none left (an empty image) the training-image factor is kept. Cellpose sizes its inputs from its
        own masks too; written here because it is a property of the trained net."""
        img = np.asarray(image)
        net = float(self.object_size)
        errors = {}
        for f in AUTO_SPLIT_FACTORS:
            f = float(f)
            maps = self.predict_maps(auto_scale_crop(img, f), scale=f)
            seg, sep, px = split_probabilities(self, maps)
            radii = mask_object_radii(split_planes(self, seg, sep, px)[0])
            if len(radii) >= AUTO_SPLIT_MIN_OBJECTS:
                errors[f] = float(np.log(np.median(radii) * f / net))  # r(f) in net px vs R
        if not errors:
            return float(self.input_scale())
        near = [f for f in errors if abs(errors[f]) <= np.log1p(AUTO_SPLIT_TOLERANCE)]
        best = min(near) if near else min(errors, key=lambda f: abs(errors[f]))
        half_step = np.sqrt(AUTO_SPLIT_FACTORS[1] / AUTO_SPLIT_FACTORS[0])
        return float(best * np.clip(np.exp(-errors[best]), 1 / half_step, half_step))

    def scale_response(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log factors, response): :meth:`estimate_input_scale`'s score at every factor,
        each on the central input crop that gives at most ``AUTO_SCALE_NET_CROP``² net px
        (and at most ``AUTO_SCALE_CROP``² input px), so every factor costs about the same."""
        img = np.asarray(image)
        response = []
        for f in AUTO_SCALE_FACTORS:
            maps = self.predict_maps(auto_scale_crop(img, float(f)), scale=float(f))
            m = decoded_channels(maps[self.decode["task"]], self.decode).max(0)
            response.append(float(np.percentile(m, AUTO_SCALE_PERCENTILE)))
        return np.log(AUTO_SCALE_FACTORS), np.asarray(response)

    def inference_net(self) -> torch.nn.Module:
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
            out = self.inference_net()(x.contiguous(memory_format=torch.channels_last))
        return {k: apply_activation(v.float(), self.activations[k]) for k, v in out.items()}

    def predict_maps(
        self,
        image: np.ndarray,
        progress: bool = False,
        object_size: float | None = None,
        pixel_size: float | None = None,
        scale: float | None = None,
        **inference,
    ) -> Maps:
        """Every head's map for an image of any size (see
        :func:`cellmaps.inference.predict_tiled`), at the net's scale: the image is resampled
        by :meth:`input_scale` (or ``scale``) first; :meth:`decode_maps` maps detections back
        to input pixels."""
        from cellmaps.inference import predict_tiled

        factor = self.input_scale(object_size, pixel_size, image) if scale is None else scale
        opts = tiling_options(self.recipe)
        opts.update({k: v for k, v in inference.items() if v is not None})
        self.net = self.net.to(memory_format=torch.channels_last)
        maps = Maps(
            predict_tiled(
                self.forward, self.prepare(image, factor=factor), progress=progress, **opts
            )
        )
        maps.input_shape = tuple(np.asarray(image).shape[:2])
        return maps

    @contextlib.contextmanager
    def decoding(self, **overrides):
        """Decode with other ``decode`` settings inside a ``with`` block; the model's own
        are restored afterwards (tuning sweeps, benchmarks)."""
        saved = dict(self.decode)
        self.decode.update(overrides)
        try:
            yield self
        finally:
            self.decode.clear()
            self.decode.update(saved)

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
        image); ``min_score`` overrides the absolute evidence floor (``decode.min_score``)."""
        d = self.decode
        params = {
            "xi": d["xi"] if xi is None else xi,
            "h": d["h"] if h is None else h,
            "min_area": d["min_area"] if min_area is None else min_area,
            "tops": tops,
        }
        pts = DECODERS[self.decode_kind()](self, maps, **params)
        floor = d["min_score"] if min_score is None else min_score
        shape = np.shape(maps[d["task"]])[-2:] if d["task"] in maps else None
        pts = above_floor(pts, floor, shape, self.edge_radius(), d["edge_floor"])
        if isinstance(maps, Maps) and maps.rescaled:
            coords = from_scaled_coords(pts.coords, maps.input_shape, maps.net_shape)
            pts = Points(coords, pts.labels, pts.scores)
        return pts

    def _scored(self, m: np.ndarray, coords: np.ndarray) -> Points:
        rc = np.clip(pixel_of(coords).astype(int), 0, np.array(m.shape[-2:]) - 1)
        return self.points(coords, m[rc[:, 0], rc[:, 1]].astype(np.float64))

    def _decode_components(self, maps, min_area, **_) -> Points:
        """Connected components of cells minus boundary above ``min_area`` px."""
        m = maps[self.decode["task"]][0]
        coords, _ = component_centroids(m, maps[self.decode["boundary_task"]][0], int(min_area))
        return self._scored(m, coords)

    def _decode_split(self, maps, min_area, **_) -> Points:
        """DeepSplit: centroids of the cells of :func:`split_planes`."""
        d = self.decode
        seg = maps[d["task"]][0]
        sep = maps[d["boundary_task"]][0] if d.get("boundary_task") else None
        _, coords = split_planes(self, seg, sep, min_area=min_area)
        return self._scored(seg, coords)

    def _decode_hmaxima(self, maps, h, **_) -> Points:
        """h-maxima + regional maxima (DeepDistance §3.3)."""
        m = decoded_channels(maps[self.decode["task"]], self.decode)[0]
        return self._scored(m, h_maxima_peaks(m, h))

    def _decode_peaks(self, maps, xi, tops=None, **_) -> Points:
        """Local maxima above ξ·max, ``min_distance`` apart; per-class maps give classes."""
        m = decoded_channels(maps[self.decode["task"]], self.decode)
        md = self.decode["min_distance"]
        if m.shape[0] > 1:
            return self.points(*find_peaks_per_class(m, xi, md, tops, self.class_gains()))
        coords, scores = find_peaks(m[0], xi, md, None if tops is None else tops[0])
        return self.points(coords, scores)

    def class_gains(self) -> np.ndarray | None:
        """One factor per class map for the class decision (``decode.class_gain``, a
        {class name: factor} mapping tuned on validation, e.g. by
        :func:`cellmaps.tune.tune_class_gain`); None when not set."""
        gain = self.decode.get("class_gain")
        if not gain:
            return None
        names = self.training.get("classes") or []
        unknown = sorted(set(gain) - set(names))
        if unknown:
            raise ValueError(f"decode.class_gain names classes {unknown} the model lacks: {names}")
        return np.array([float(gain.get(n, 1.0)) for n in names])

    def edge_radius(self) -> float:
        """How far in (net px) the edge's higher evidence floor reaches: the object radius
        the model was trained at, else its peak distance."""
        return float(self.object_size or self.decode["min_distance"] or 1)

    def floor_at(self, coords: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The evidence floor for detections at ``coords`` (net px) of an image of ``shape``
        (net px): ``decode.min_score``, higher near the edge (``decode.edge_floor``)."""
        d = self.decode
        factor = edge_floor_factor(coords, shape, self.edge_radius(), d["edge_floor"])
        return d["min_score"] * factor

    def decode_kind(self) -> str:
        kind = self.task_decoders.get(self.decode["task"]) or self.decode["kind"]
        if kind not in DECODERS:
            raise ValueError(f"unknown decoding {kind!r}; known: {sorted(DECODERS)}")
        return kind

    def points(
        self, coords: np.ndarray, scores: np.ndarray, cls: np.ndarray | None = None
    ) -> Points:
        """Detections with the model's labels (class names for per-class maps)."""
        if cls is None:
            labels = np.full(len(coords), self.training.get("label", "nucleus"), dtype=object)
        else:
            n = next(h.channels for h in head_specs(self.recipe) if h.name == self.decode["task"])
            names = self.training.get("classes") or [str(i) for i in range(n)]
            labels = np.array([names[i] for i in cls], dtype=object)
        return Points(coords, labels, scores)

    def prepare_for_inference(self) -> None:
        """Eval mode and channels-last weights (faster convolutions on CPU)."""
        self.net.eval()
        self.net = self.net.to(memory_format=torch.channels_last)

    def detect(
        self,
        image: np.ndarray,
        progress: bool = False,
        strip: int | None = None,
        xi: float | None = None,
        object_size: float | None = None,
        pixel_size: float | None = None,
        **inference,
    ) -> Points:
        """Detect objects in an image of any size, in input pixels.

        The image is first resampled so its objects match the model's
        (:meth:`input_scale`: ``object_size`` = median object radius of the input in px,
        or ``pixel_size`` in µm/px). Prediction and decoding are streamed
        (:mod:`cellmaps.inference.stream`): the maps in memory are at most a tile's height
        plus ``strip`` rows (decoded at a time) of the image's width, and the result is the
        decoding of the whole map (ξ uses the maximum of the whole image).
        """
        factor = self.input_scale(object_size, pixel_size, image)
        # normalised once for the whole image: every band gets the same intensity range,
        # and the flat-region rule reads the same pixels
        full = normalize_image(image)
        small = full if factor == 1.0 else rescale_image(full, factor)
        pts = self.detect_source(lambda i0, i1, j0, j1: small[i0:i1, j0:j1], small.shape[:2],
                                 progress, xi=xi, strip=strip, **inference)  # fmt: skip
        if factor == 1.0:
            return pts
        coords = from_scaled_coords(pts.coords, image.shape[:2], small.shape[:2])
        return Points(coords, pts.labels, pts.scores)

    def detect_source(
        self,
        base,
        shape: tuple[int, int],
        progress: bool = False,
        xi: float | None = None,
        strip: int | None = None,
        skip_tile=None,
        **inference,
    ) -> Points:
        """Detections (net px) in a normalised image at the net's scale read block by block
        through ``base(i0, i1, j0, j1) → (n, m, C)`` (an array slice, or a lazy slide):
        column strips of :data:`~cellmaps.inference.stream.STRIP_WIDTH`, each streamed
        from top to bottom. ``skip_tile`` leaves tiles out (tissue detection)."""
        from cellmaps.inference import stream

        if self.needs_whole_image:
            # histogram equalisation and per-image percentiles need the whole image
            # (recipes for large images leave them off)
            whole = adjust_intensity(
                match_channels(base(0, shape[0], 0, shape[1]), self.in_channels),
                self.intensity,
                self.recipe["training"]["hist_eq"],
            )
            base = lambda i0, i1, j0, j1: whole[i0:i1, j0:j1]  # noqa: E731
        found = stream.Candidates()
        for cols in stream.column_strips(shape[1]):
            found.merge(
                stream.stream_candidates(
                    self, base, shape, None, skip_tile, progress, strip, cols, **inference
                )
            )
        return stream.finish_candidates(self, found, xi)


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


# Up to this many window values, local contrast is computed with numpy (see SMALL_MAP in
# cellmaps.postprocess.peaks: loading the compiled kernels costs about a second).
SMALL_CONTRAST_WORK = 1 << 21

# --object-size auto (Model.estimate_input_scale): input → net factors tried (net objects of
# 0.4× to 4× the model's object size in the input: 2.4–24 px radius for a 6 px model), the
# largest central crop they are tried on (input px, and net px), and the percentile of the
# map that scores each.
AUTO = "auto"
AUTO_SCALE_FACTORS = np.geomspace(0.25, 2.5, 12)
AUTO_SCALE_CROP = 512
AUTO_SCALE_NET_CROP = 384
AUTO_SCALE_PERCENTILE = 99.5


def auto_scale_crop(image: np.ndarray, factor: float) -> np.ndarray:
    """The central crop of ``image`` that gives at most ``AUTO_SCALE_NET_CROP``² net px at
    ``factor`` (and is at most ``AUTO_SCALE_CROP``² input px): every factor an automatic
    scale estimate tries costs about the same."""
    h, w = image.shape[:2]
    side = min(AUTO_SCALE_CROP, int(np.ceil(AUTO_SCALE_NET_CROP / factor)))
    i0, j0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return image[i0 : i0 + side, j0 : j0 + side]


#: factors Model.estimate_split_scale segments at (objects of 0.4× to 4× the model's size)
AUTO_SPLIT_FACTORS = np.geomspace(0.25, 2.5, 7)
AUTO_SPLIT_MIN_OBJECTS = 3  # fewer instances than this say nothing about the scale
AUTO_SPLIT_TOLERANCE = 0.25  # r(f) within ×1.25 of the net's object size counts as consistent


def best_log_factor(log_factors: np.ndarray, response: np.ndarray) -> float:
    """The log factor of the highest response, refined by the vertex of the parabola through
    it and its two neighbours (kept within half a step; the grid's end when the best is
    there)."""
    k = int(np.argmax(response))
    if k in (0, len(response) - 1):
        return float(log_factors[k])
    y0, y1, y2 = response[k - 1 : k + 2]
    curvature = y0 - 2 * y1 + y2  # < 0: argmax takes the first best, so y0 < y1 >= y2
    step = log_factors[k + 1] - log_factors[k]
    offset = np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5)
    return float(log_factors[k] + offset * step)


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
    from cellmaps.postprocess._compiled import window_std_max

    img = np.ascontiguousarray(img, dtype=np.float32)
    return window_std_max(
        img, np.ascontiguousarray(rc[:, 0]), np.ascontiguousarray(rc[:, 1]), int(window)
    )


# The one place a decoder is named: ``decode.kind`` / ``tasks[].decode`` choices come from
# here. Each takes (model, maps, xi=, h=, min_area=, tops=) and returns Points in net pixels.
DECODERS = {
    "peaks": Model._decode_peaks,
    "peaks_per_class": Model._decode_peaks,
    "hmaxima": Model._decode_hmaxima,
    "components": Model._decode_components,
    "split": Model._decode_split,
    "none": Model._decode_peaks,
}


def split_planes(
    model: Model, seg: np.ndarray, sep: np.ndarray | None, scale: float = 1.0, min_area=None
):
    """DeepSplit's instances (:func:`cellmaps.postprocess.split.split_instances`) from the
    segmentation plane and, when the model has one, the separation plane, at the model's
    cell / separation thresholds and with its sizes (min_area, or the given one; seed
    distance; border length) times ``scale`` (input pixels per map pixel). Returns
    (labels, centroids)."""
    from cellmaps.postprocess.split import split_instances

    d = model.decode
    border = d["max_border"]
    return split_instances(
        seg,
        sep,
        threshold=d.get("cell_threshold", 0.5),
        separation_threshold=d.get("separation_threshold", 0.5),
        min_size=_scaled_px(d["min_area"] if min_area is None else min_area, scale, 2),
        seed_distance=_scaled_px(d["min_distance"], scale),
        max_border=None if border is None else _scaled_px(border, scale),
    )


def _task_with_target(model: Model, target: str) -> str | None:
    return next((t["name"] for t in model.recipe["tasks"] if t["target"] == target), None)


def segment_image(
    model: Model,
    image: np.ndarray,
    progress: bool = False,
    outer_min: float = 0.5,
    maps: dict[str, np.ndarray] | None = None,
    **inference,
):
    """Detections and an instance mask by DeepDistance's marker-controlled region growing
    (§4.7) on a model with outer-distance and cell-pixel tasks (``deepdistance-extended``).
    ``outer_min`` is the outer distance above which markers widen (paper: 0.5); ``maps``
    reuses already predicted maps.

    Returns
    -------
    points : Points
    mask : (H, W) int32
    """
    from cellmaps.postprocess.region_growing import region_growing_segmentation

    if model.decode.get("segment") == "argmax":
        return _argmax_segmentation(model, image, progress, maps, **inference)
    if model.decode.get("segment") == "split":
        return _split_segmentation(model, image, progress, maps, **inference)
    outer = _task_with_target(model, "outer_distance")
    cells = _task_with_target(model, "foreground")
    if outer is None or cells is None:
        raise CellmapsInputError(
            "segmentation needs a model with an outer_distance task and a foreground "
            "(cell-pixel) task, e.g. recipe deepdistance-extended; this model's tasks are "
            f"{[t['target'] for t in model.recipe['tasks']]}"
        )
    if maps is None:
        maps = model.predict_maps(image, progress, **inference)
    pts = model.decode_maps(maps)  # input pixels
    # §4.7's sizes (50-px markers, 5×5 majority filter) are in image pixels: grow the
    # regions on the maps brought back to the input's size
    planes, _ = _at_input_pixels(maps, {"outer": maps[outer][0], "cells": maps[cells][0]})
    mask = region_growing_segmentation(
        pts.coords, planes["outer"], planes["cells"], outer_min=outer_min
    )
    return pts, mask


def _at_input_pixels(maps, planes: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    """The (H, W) ``planes`` of ``maps`` brought to the input's pixels when the image was
    resampled for the net, and the input pixels per map pixel (1 when it was not)."""
    if isinstance(maps, Maps) and maps.rescaled:
        resized = {k: _resize_map_to(v, maps.input_shape) for k, v in planes.items()}
        return resized, maps.input_shape[0] / maps.net_shape[0]
    return planes, 1.0


def _scaled_px(value: float, scale: float, power: int = 1) -> int:
    """A size in map pixels (``power`` 1: a length, 2: an area) in input pixels, ≥ 1."""
    return max(1, int(round(value * scale**power)))


def _argmax_segmentation(model: Model, image, progress, maps, **inference):
    """Detections and instances of a two-class softmax model (``decode.segment: argmax``,
    weakly-points): the nucleus channel's argmax mask split by a watershed from the
    detections (:func:`cellmaps.postprocess.components.argmax_instances`), at input pixels."""
    from cellmaps.postprocess.components import argmax_instances

    if maps is None:
        maps = model.predict_maps(image, progress, **inference)
    pts = model.decode_maps(maps)  # input pixels
    prob = decoded_channels(maps[model.decode["task"]], model.decode)[0]
    planes, scale = _at_input_pixels(maps, {"prob": prob})  # min_area is in net pixels
    return pts, argmax_instances(
        planes["prob"], pts.coords, _scaled_px(model.decode["min_area"], scale, 2)
    )


def _split_segmentation(model: Model, image, progress, maps, **inference):
    """Detections and instances of a DeepSplit model (``decode.segment: split``): the
    segmentation and separation maps brought to input pixels, then :func:`split_planes`
    (its sizes — min_area, seed distance, border length — scaled to input pixels)."""
    if maps is None:
        maps = model.predict_maps(image, progress, **inference)
    seg, sep, scale = split_probabilities(model, maps)
    labels, coords = split_planes(model, seg, sep, scale)
    return model._scored(seg, coords), labels


def split_probabilities(model: Model, maps) -> tuple[np.ndarray, np.ndarray | None, float]:
    """A DeepSplit model's segmentation and (when it has one) separation probabilities at
    the input's pixels, and the input pixels per map pixel.

    Returns
    -------
    segmentation : (H, W) float32
    separation : (H, W) float32 or None (a model without a separation task, e.g. ``unet``)
    scale : float
    """
    d = model.decode
    planes = {"seg": maps[d["task"]][0]}
    if d.get("boundary_task"):
        planes["sep"] = maps[d["boundary_task"]][0]
    planes, scale = _at_input_pixels(maps, planes)
    return planes["seg"], planes.get("sep"), scale


def _resize_map_to(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map to ``shape`` (net → input pixels)."""
    from skimage.transform import resize

    return resize(m, shape, order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)


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
