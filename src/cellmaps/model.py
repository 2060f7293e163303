"""A trained model: net + recipe + normalisation + tuned decoding, as one safe file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import normalize_image
from cellmaps.io.points import Points
from cellmaps.modelfile import load_model_file, save_model_file
from cellmaps.nets import HeadSpec, apply_activation, build_net
from cellmaps.postprocess import find_peaks, find_peaks_per_class, h_maxima_peaks_reference
from cellmaps.recipes import validate_recipe

NET_KEYS = {
    "unet": ("base", "depth", "dropout", "decoders", "cross"),
    "residual_unet": ("base", "depth", "dropout", "mca_levels", "roi_head"),
    "resnet_unet": ("resnet_depth", "width", "decoder_base", "dropout"),
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

    def save(self, path: str | os.PathLike) -> None:
        save_model_file(path, self.net.state_dict(), self.meta())

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
        self, maps: dict[str, np.ndarray], xi: float | None = None, h: float | None = None
    ) -> Points:
        """Objects from predicted maps with the model's decoding (tuned ξ or h by default)."""
        d = self.decode
        task = d["task"]
        m = maps[task]
        kind = self.task_decoders.get(task) or d["kind"]
        xi = d["xi"] if xi is None else xi
        if kind == "peaks_per_class" or (kind == "peaks" and m.shape[0] > 1):
            coords, scores, cls = find_peaks_per_class(m, xi, d["min_distance"])
            classes = self.training.get("classes") or [str(i) for i in range(m.shape[0])]
            return Points(coords, np.array([classes[i] for i in cls], dtype=object), scores)
        if kind in ("peaks", "none"):
            coords, scores = find_peaks(m[0], xi, d["min_distance"])
        elif kind == "hmaxima":
            coords = h_maxima_peaks_reference(m[0], d["h"] if h is None else h)
            rc = np.clip(np.rint(coords).astype(int), 0, np.array(m.shape[1:]) - 1)
            scores = m[0][rc[:, 0], rc[:, 1]].astype(np.float64)
        else:
            raise ValueError(f"unknown decoding {kind!r}")
        label = self.training.get("label", "nucleus")
        return Points(coords, np.full(len(coords), label, dtype=object), scores)

    def detect(self, image: np.ndarray, progress: bool = False, **inference) -> Points:
        return self.decode_maps(self.predict_maps(image, progress, **inference))


def load_model(path: str | os.PathLike | None = None) -> Model:
    """Load a model file; with no path, the bundled default nucleus detector."""
    if path is None:
        path = default_model_path()
    return Model.load(path)


def default_model_path() -> Path:
    path = Path(__file__).parent / "models" / "default.safetensors"
    if not path.is_file():
        raise CellmapsInputError(
            "the bundled default model is missing from this installation", path
        )
    return path
