"""Reading and writing images: PNG, JPEG, TIFF and OME-TIFF; 8/16-bit; grey, RGB, multi-channel.

Conventions
-----------
``read_image`` returns the pixels in their stored dtype with shape (H, W) or (H, W, C).
PNG alpha channels (RGBA, LA) are dropped because they carry no image content.
``normalize_image`` is the one normalisation to float32 used everywhere in cellmaps:
integer images are divided by the maximum of their dtype (uint8 → /255, uint16 → /65535),
so 0 stays 0 and the dtype's full range maps to [0, 1]; float images are kept as they are
(they must be finite). The result always has a channel axis: (H, W, C).
Per-channel standardisation for a net is a separate step, recorded in the model file.
"""

from __future__ import annotations

import os
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_TIFF_SUFFIXES = (".tif", ".tiff")

# Large microscopy images are legitimate input; Pillow's decompression-bomb guard is not
# meant for them.
Image.MAX_IMAGE_PIXELS = None


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in _TIFF_SUFFIXES


def _tiff_series_to_hwc(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Bring a tifffile series with the given axes string to (H, W) or (H, W, C)."""
    for ax in "TZQI":  # time, depth, unknown and sequence axes must be singleton
        while ax in axes:
            i = axes.index(ax)
            if data.shape[i] != 1:
                raise CellmapsInputError(
                    f"TIFF has a {ax} axis of length {data.shape[i]} (axes {axes!r}); "
                    "cellmaps reads 2-D images with optional channels only",
                    path,
                )
            data = np.take(data, 0, axis=i)
            axes = axes[:i] + axes[i + 1 :]
    channel_axes = [i for i, ax in enumerate(axes) if ax in "CS"]
    if len(channel_axes) > 1:  # e.g. CYXS: merge into one channel axis
        keep = [i for i in range(data.ndim) if i not in channel_axes]
        data = np.transpose(data, keep + channel_axes)
        data = data.reshape(data.shape[: len(keep)] + (-1,))
        axes = "".join(axes[i] for i in keep) + "C"
    elif len(channel_axes) == 1:
        data = np.moveaxis(data, channel_axes[0], -1)
        axes = axes.replace(axes[channel_axes[0]], "") + "C"
    if not (axes.startswith("YX") and len(axes) in (2, 3)):
        raise CellmapsInputError(f"unsupported TIFF axes {axes!r}", path)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into an array of shape (H, W) or (H, W, C), dtype as stored.

    Parameters
    ----------
    path : path-like
        A PNG, JPEG, TIFF or OME-TIFF file.

    Raises
    ------
    CellmapsInputError
        If the file is missing, unreadable, empty or not 2-D.
    """
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("image file does not exist", path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = _tiff_series_to_hwc(series.asarray(), series.axes, path)
        elif path.suffix.lower() == ".png":
            # imagecodecs (libpng) keeps 16-bit RGB, which Pillow reduces to 8 bits.
            data = imagecodecs.png_decode(path.read_bytes())
            if data.ndim == 3 and data.shape[-1] in (2, 4):  # LA / RGBA: drop alpha
                data = data[..., :-1]
            if data.ndim == 3 and data.shape[-1] == 1:
                data = data[..., 0]
        else:
            with Image.open(path) as im:
                if im.mode in ("RGBA", "LA", "PA", "P"):
                    im = im.convert("RGB" if im.mode in ("RGBA", "PA", "P") else "L")
                data = np.asarray(im)
    except CellmapsInputError:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        tifffile.TiffFileError,
        imagecodecs.PngError,
    ) as exc:
        raise CellmapsInputError(f"cannot read image ({exc})", path) from exc
    if data.ndim not in (2, 3) or data.size == 0:
        raise CellmapsInputError(f"expected a 2-D image, got array of shape {data.shape}", path)
    return data


def image_shape(path: str | os.PathLike) -> tuple[int, int]:
    """Return (H, W) of an image file without decoding its pixels."""
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("image file does not exist", path)
    try:
        if _is_tiff(path):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, series.shape
                return int(shape[axes.index("Y")]), int(shape[axes.index("X")])
        with Image.open(path) as im:
            width, height = im.size
            return int(height), int(width)
    except (UnidentifiedImageError, OSError, ValueError, tifffile.TiffFileError) as exc:
        raise CellmapsInputError(f"cannot read image ({exc})", path) from exc


def normalize_image(image: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Convert an image to float32 (H, W, C) by the cellmaps convention (see module doc).

    Integer dtypes are divided by their maximum value; floats are kept; booleans map to 0/1.

    Raises
    ------
    CellmapsInputError
        For NaN/inf values, complex or object dtypes, or a shape that is not 2-D(+C).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise CellmapsInputError(f"expected (H, W) or (H, W, C) image, got {image.shape}", path)
    if image.dtype == bool:
        out = image.astype(np.float32)
    elif np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        if info.min < 0 and image.min() < 0:
            raise CellmapsInputError(f"negative pixel values in {image.dtype} image", path)
        out = image.astype(np.float32) / np.float32(info.max)
    elif np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float32)
        if not np.isfinite(out).all():
            raise CellmapsInputError("image contains NaN or infinite values", path)
    else:
        raise CellmapsInputError(f"unsupported image dtype {image.dtype}", path)
    if out.ndim == 2:
        out = out[..., None]
    return out


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image atomically: PNG (8/16-bit) via imagecodecs, JPEG via Pillow, TIFF (zlib)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if _is_tiff(path):
            tifffile.imwrite(tmp, np.asarray(image), compression="zlib")
        elif path.suffix.lower() == ".png":
            tmp.write_bytes(imagecodecs.png_encode(np.asarray(image)))
        else:
            Image.fromarray(np.asarray(image)).save(tmp, format="JPEG", quality=95)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Make a displayable uint8 RGB copy of any image (for overlays and panels).

    Each channel is stretched between its 0.5th and 99.5th percentile; one channel is
    repeated to grey, two channels are shown as red and green, more than three keep the first three.
    """
    img = normalize_image(image)
    lo = np.percentile(img, 0.5, axis=(0, 1))
    hi = np.percentile(img, 99.5, axis=(0, 1))
    img = np.clip((img - lo) / np.maximum(hi - lo, 1e-8), 0, 1)
    c = img.shape[-1]
    if c == 1:
        img = np.repeat(img, 3, axis=-1)
    elif c == 2:
        img = np.concatenate([img, np.zeros_like(img[..., :1])], axis=-1)
    else:
        img = img[..., :3]
    return (img * 255 + 0.5).astype(np.uint8)
