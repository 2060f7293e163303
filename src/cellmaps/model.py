"""A trained model: net + recipe + normalisation + tuned decoding, as one safe file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import normalize_image
from cellmaps.io.points import Points
from cellmaps.modelfile import load_model_file, save_model_file
from cellmaps.nets import HeadSpec, apply_activation, build_net
from cellmaps.postprocess import (
    channel_peaks,
    component_centroids,
    find_peaks,
    find_peaks_per_class,
    h_maxima_peaks,
    merge_class_peaks,
)
from cellmaps.recipes import validate_recipe

NET_KEYS = {
    "unet": ("base", "depth", "dropout", "decoders", "cross"),
    "residual_unet": ("base", "depth", "dropout", "mca_levels", "roi_head"),
    "resnet_unet": ("resnet_depth", "width", "decoder_base", "dropout"),
    "cascade": ("base", "depth", "dropout"),
}


def head_specs(recipe: dict) -> list[HeadSpec]:
    return [HeadSpec(t["name"], t["channels"], t["activation"]) for t in recipe["tasks"]]


def net_from_recipe(recipe: dict, in_channels: int) -> torch.nn.Module:
    net_cfg = recipe["net"]
    kind = net_cfg["kind"]
    opts = {k: net_cfg[k] for k in NET_KEYS[kind] if net_cfg.get(k) is not None}
    return build_net(kind, in_channels, head_specs(recipe), **opts)


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


def equalize(image: np.ndarray) -> np.ndarray:
    """Per-channel histogram equalisation of a float (H, W, C) image (DeepSplit §3.2)."""
    from skimage.exposure import equalize_hist

    return np.stack([equalize_hist(image[..., c]) for c in range(image.shape[-1])], -1).astype(
        np.float32
    )


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
        self.activations = {t["name"]: t["activation"] for t in recipe["tasks"]}
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
        model.net.eval()
        return model

    # -- prediction -----------------------------------------------------------------------------
    def prepare(self, image: np.ndarray, source: str | None = None) -> np.ndarray:
        """Image as stored → normalised (C, H, W) float32 for the net."""
        img = normalize_image(image, source)
        c = img.shape[-1]
        if c != self.in_channels:
            if c == 1:
                img = np.repeat(img, self.in_channels, axis=-1)
            elif self.in_channels == 1:
                img = img.mean(-1, keepdims=True)
            else:
                raise CellmapsInputError(
                    f"image has {c} channels, the model expects {self.in_channels}", source
                )
        if self.recipe["training"]["hist_eq"]:
            img = equalize(img)
        img = (img - self.mean) / self.std
        return np.ascontiguousarray(img.transpose(2, 0, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Net outputs with each head's activation applied (no grad)."""
        self.net.eval()
        with torch.no_grad(), autocast(self.recipe["training"]["precision"]):
            out = self.net(x.contiguous(memory_format=torch.channels_last))
        return {k: apply_activation(v.float(), self.activations[k]) for k, v in out.items()}

    def predict_maps(
        self, image: np.ndarray, progress: bool = False, **inference
    ) -> dict[str, np.ndarray]:
        """Every head's map for an image of any size (see :func:`cellmaps.inference.predict_tiled`)."""
        from cellmaps.inference import predict_tiled

        opts = dict(self.recipe["inference"])
        opts.update({k: v for k, v in inference.items() if v is not None})
        self.net = self.net.to(memory_format=torch.channels_last)
        return predict_tiled(self.forward, self.prepare(image), progress=progress, **opts)

    def decode_maps(
        self,
        maps: dict[str, np.ndarray],
        xi: float | None = None,
        h: float | None = None,
        tops: np.ndarray | None = None,
        min_area: int | None = None,
    ) -> Points:
        """Objects from predicted maps with the model's decoding (tuned ξ or h by default).
        ``tops`` overrides each class map's maximum for the ξ threshold (strips of a large image)."""
        d = self.decode
        m = maps[d["task"]]
        kind = self.decode_kind()
        xi = d["xi"] if xi is None else xi
        if kind == "components":
            area = d["min_area"] if min_area is None else min_area
            coords, _ = component_centroids(m[0], maps[d["boundary_task"]][0], int(area))
            rc = np.clip(np.rint(coords).astype(int), 0, np.array(m.shape[1:]) - 1)
            return self.points(coords, m[0][rc[:, 0], rc[:, 1]].astype(np.float64))
        if kind == "hmaxima":
            coords = h_maxima_peaks(m[0], d["h"] if h is None else h)
            rc = np.clip(np.rint(coords).astype(int), 0, np.array(m.shape[1:]) - 1)
            return self.points(coords, m[0][rc[:, 0], rc[:, 1]].astype(np.float64))
        if m.shape[0] > 1:
            coords, scores, cls = find_peaks_per_class(m, xi, d["min_distance"], tops)
            return self.points(coords, scores, cls)
        top = None if tops is None else tops[0]
        coords, scores = find_peaks(m[0], xi, d["min_distance"], top)
        return self.points(coords, scores)

    def decode_kind(self) -> str:
        kind = self.task_decoders.get(self.decode["task"]) or self.decode["kind"]
        if kind not in ("peaks", "peaks_per_class", "hmaxima", "components", "none"):
            raise ValueError(f"unknown decoding {kind!r}")
        return kind

    def points(
        self, coords: np.ndarray, scores: np.ndarray, cls: np.ndarray | None = None
    ) -> Points:
        """Detections with the model's labels (class names for per-class maps)."""
        if cls is None:
            labels = np.full(len(coords), self.training.get("label", "nucleus"), dtype=object)
        else:
            n = self.recipe["tasks"][
                [t["name"] for t in self.recipe["tasks"]].index(self.decode["task"])
            ]["channels"]
            names = self.training.get("classes") or [str(i) for i in range(n)]
            labels = np.array([names[i] for i in cls], dtype=object)
        return Points(coords, labels, scores)

    def detect(
        self,
        image: np.ndarray,
        progress: bool = False,
        strip: int = 2048,
        xi: float | None = None,
        **inference,
    ) -> Points:
        """Detect objects in an image of any size.

        Images taller than ``strip`` rows are processed in horizontal strips (each with
        enough overlap for the tiles and the peak window), so the float maps in memory
        are strip-sized; the ξ threshold uses the maximum over the whole image, so the
        result is the same decoding as on the whole map.
        """
        if self.decode_kind() in ("hmaxima", "components") or image.shape[0] <= strip:
            return self.decode_maps(self.predict_maps(image, progress, **inference), xi)
        d = self.decode
        xi = d["xi"] if xi is None else xi
        tile = inference.get("tile") or self.recipe["inference"]["tile"]
        overlap = tile + 2 * d["min_distance"] + 2
        coords, scores, values, chans, tops = [], [], [], [], None
        starts = range(0, image.shape[0], strip)
        for r0 in tqdm(starts, desc="strips", unit="strip", disable=not progress, leave=False):
            r1 = min(r0 + strip, image.shape[0])
            a, b = max(r0 - overlap, 0), min(r1 + overlap, image.shape[0])
            m = self.predict_maps(image[a:b], False, **inference)[d["task"]]
            strip_top = m.reshape(m.shape[0], -1).max(1)
            tops = strip_top if tops is None else np.maximum(tops, strip_top)
            c, sc, v, ch = channel_peaks(m, 0.0, d["min_distance"])  # ξ applied below
            c[:, 0] += a
            inside = (c[:, 0] >= r0 - 0.5) & (c[:, 0] < r1 - 0.5)
            for acc, arr in zip((coords, scores, values, chans), (c, sc, v, ch), strict=True):
                acc.append(arr[inside])
        c, s, v, ch = (np.concatenate(x) for x in (coords, scores, values, chans))
        keep = s >= xi * tops[ch]
        c, s, v = c[keep], s[keep], v[keep]
        if len(tops) > 1:
            return self.points(*merge_class_peaks(c, s, v, d["min_distance"]))
        order = np.lexsort((c[:, 1], c[:, 0]))
        return self.points(c[order], s[order])


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
    pts = model.decode_maps(maps)
    mask = region_growing_segmentation(
        pts.coords, maps[outer][0], maps[cells][0], outer_min=outer_min
    )
    return pts, mask


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
