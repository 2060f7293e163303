"""Reading and writing images: PNG, JPEG, TIFF and OME-TIFF; 8/16-bit; grey, RGB, multi-channel.

Conventions
-----------
``read_image`` returns the pixels in their stored dtype with shape (H, W) or (H, W, C).
PNG alpha channels (RGBA, LA) are dropped because they carry no image content.
TIFF z-stacks (a Z axis, from ImageJ/OME metadata or the order ImageJ writes) are
max-projected (a warning says so when no metadata named the axis); channels of any number
are kept (:func:`select_channels` picks some). A TIFF of several images of one size that
no metadata describes as one stack (pages written one by one, a generic page sequence) is
ambiguous and refused unless ``page`` picks one (0-based) or ``project="max"`` takes their
pixel-wise maximum (the ``--page`` / ``--project`` options).
JPEG and PNG images are turned by their EXIF orientation tag (as viewers show them), and
CMYK JPEGs are converted to RGB.
PNG/JPEG images larger than :func:`max_pixels` are refused from their header, before
decoding.
``normalize_image`` is the one normalisation to float32 used everywhere in cellmaps (the
"bit-depth" rule, :func:`intensity_range`): an image is divided by the full range of the
smallest of 8, 10, 12, 14 or 16 bits (then 2^k − 1) that holds its maximum, whatever its
container type — so 8-bit data stored as uint16, 12-bit camera data in uint16, full-range
uint16 and float data in 0–255 all map to [0, 1] like the 8-bit original; float images whose
maximum is at most 1 are kept as they are (they must be finite). 0 stays 0. On uint8 images
this is the old rule (÷ 255), which is what every model before it was trained on.
The result always has a channel axis: (H, W, C).
Per-channel standardisation for a net is a separate step, recorded in the model file.
"""

from __future__ import annotations

import os
import warnings
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


# an unlabelled trailing axis this short is a channel axis, not the image width
MAX_TRAILING_CHANNELS = 8


def _name_unknown_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Give tifffile's unknown axes ('Q', in TIFFs written without axes metadata) a
    meaning: (Y, X, C) when the last axis is short (≤ ``MAX_TRAILING_CHANNELS``) and the two
    before it are not; otherwise leading unknown axes are (…, Z, C) in ImageJ's order, so a
    lone leading axis is channels. Labelled axes (ImageJ, OME-TIFF) are kept as they are."""
    if "Q" not in axes:
        return axes
    if (
        axes.endswith("QYX")
        and shape[-1] <= MAX_TRAILING_CHANNELS
        and min(shape[-3], shape[-2]) > MAX_TRAILING_CHANNELS
    ):
        # tifffile stored an (H, W, C) array as H pages of W × C
        axes = axes[:-3] + "YXC"
    names = iter("ZT" if ("C" in axes or "S" in axes) else "CZT")  # ImageJ's order
    out = list(axes)
    for i in range(len(out) - 1, -1, -1):
        if out[i] == "Q":
            out[i] = next(names, "Q")
    return "".join(out)


def _tiff_series_to_hwc(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Bring a tifffile series with the given axes string to (H, W) or (H, W, C): z-stacks
    are max-projected along Z (the usual view for detecting nuclei in widefield stacks);
    time series and other axes longer than 1 are refused."""
    named = _name_unknown_axes(axes, data.shape)
    if "Z" in named and "Z" not in axes and data.shape[named.index("Z")] > 1:
        warnings.warn(
            f"{path}: no axes metadata; read in ImageJ's order (…, Z, C, Y, X) as a z-stack of "
            f"{data.shape[named.index('Z')]} planes and max-projected (use --page N for one "
            "plane, or save the file with ImageJ/OME axes)",
            stacklevel=4,
        )
    axes = named
    if "Z" in axes:
        data = data.max(axis=axes.index("Z"))
        axes = axes.replace("Z", "")
    for ax in "TQI":  # time, unknown and sequence axes must be singleton
        while ax in axes:
            i = axes.index(ax)
            if data.shape[i] != 1:
                what = {"T": "time points"}.get(ax, f"planes on a {ax} axis")
                advice = (
                    "save one time point per file"
                    if ax == "T"
                    else f"pick one with --page N (0 to {data.shape[i] - 1}) or take their "
                    "maximum with --project max"
                )
                raise CellmapsInputError(
                    f"TIFF holds {data.shape[i]} {what} (axes {axes!r}); cellmaps reads one "
                    f"2-D image (channels and z-stacks allowed): {advice}",
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


DEFAULT_MAX_PIXELS = 2**28  # 268 Mpx: a 16k × 16k RGB image, ~3 GB once normalised to float32
MAX_PIXELS_VARIABLE = "CELLMAPS_MAX_PIXELS"


def max_pixels() -> int:
    """Largest image (H × W) read into memory from PNG/JPEG: ``$CELLMAPS_MAX_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_VARIABLE)
    if text is None:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise CellmapsInputError(
            f"{MAX_PIXELS_VARIABLE} must be a positive whole number of pixels, got {text!r}"
        )
    return value


def check_pixel_limit(path: Path, height: int, width: int) -> None:
    """Refuse, before decoding, a PNG/JPEG whose header declares more pixels than
    :func:`max_pixels` (decoding it would need all of them in memory at once)."""
    limit = max_pixels()
    if height * width > limit:
        raise CellmapsInputError(
            f"image of {width} × {height} px ({height * width / 1e6:,.0f} Mpx) is over the "
            f"{limit / 1e6:,.0f} Mpx limit for PNG/JPEG, which are decoded whole into memory; "
            "save it as a tiled (OME-)TIFF, or raise the limit with --max-pixels or "
            f"{MAX_PIXELS_VARIABLE} if the machine has the memory",
            path,
        )


PROJECTIONS = ("max",)


def _read_tiff(path: Path, page: int | None, project: str | None) -> np.ndarray:
    """A TIFF's image: its first series, or page ``page``, or the maximum over its pages
    (``project="max"``); several same-size series without a stack description are refused
    without one of the two (which page is the image cannot be known)."""
    with tifffile.TiffFile(path) as tif:
        if page is not None:
            if not 0 <= page < len(tif.pages):
                raise CellmapsInputError(
                    f"--page {page} asked for, but the TIFF has {len(tif.pages)} page(s) "
                    f"(numbered 0 to {len(tif.pages) - 1})",
                    path,
                )
            one = tif.pages[page]
            return _tiff_series_to_hwc(one.asarray(), one.axes, path)
        first = tif.series[0]
        if project == "max":
            shape = tif.pages[0].shape
            stack = [p for p in tif.pages if p.shape == shape]
            top = stack[0].asarray()
            for p in stack[1:]:
                np.maximum(top, p.asarray(), out=top)
            return _tiff_series_to_hwc(top, tif.pages[0].axes, path)
        alike = [s for s in tif.series if s.shape == first.shape]
        if len(alike) > 1:
            raise CellmapsInputError(
                f"TIFF holds {len(alike)} images of one size as separate pages, with no "
                "metadata saying whether they are planes of one stack or different images; "
                f"pick one with --page N (0 to {len(tif.pages) - 1}) or take their maximum "
                "with --project max",
                path,
            )
        return _tiff_series_to_hwc(first.asarray(), first.axes, path)


EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 = stored as shown


def read_image(
    path: str | os.PathLike, page: int | None = None, project: str | None = None
) -> np.ndarray:
    """Read an image file into an array of shape (H, W) or (H, W, C), dtype as stored.

    Parameters
    ----------
    path : path-like
        A PNG, JPEG, TIFF or OME-TIFF file.
    page : int, optional
        For TIFFs: read this page (0-based) as the image.
    project : {"max"}, optional
        For TIFFs: the pixel-wise maximum of every page of the first page's size.

    Raises
    ------
    CellmapsInputError
        If the file is missing, unreadable, empty or not 2-D; if a TIFF holds several
        images with nothing saying which one to read (and neither ``page`` nor ``project``).
    """
    path = Path(path)
    if not path.is_file():
        raise CellmapsInputError("image file does not exist", path)
    if project is not None and project not in PROJECTIONS:
        raise CellmapsInputError(f"unknown projection {project!r}; known: {list(PROJECTIONS)}")
    if (page is not None or project is not None) and not _is_tiff(path):
        raise CellmapsInputError("--page and --project are for multi-page TIFF files", path)
    try:
        if _is_tiff(path):
            data = _read_tiff(path, page, project)
        elif path.suffix.lower() == ".png":
            with Image.open(path) as im:  # reads the header only
                check_pixel_limit(path, im.height, im.width)
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            # imagecodecs (libpng) keeps 16-bit RGB, which Pillow reduces to 8 bits.
            data = imagecodecs.png_decode(path.read_bytes())
            if data.ndim == 3 and data.shape[-1] in (2, 4):  # LA / RGBA: drop alpha
                data = data[..., :-1]
            if data.ndim == 3 and data.shape[-1] == 1:
                data = data[..., 0]
            data = _orient_array(data, orientation)
        else:
            with Image.open(path) as im:
                check_pixel_limit(path, im.height, im.width)
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
                if im.mode in ("RGBA", "LA", "PA", "P", "CMYK"):
                    im = im.convert("L" if im.mode == "LA" else "RGB")
                data = _orient_array(np.asarray(im), orientation)
    except (CellmapsInputError, MemoryError):
        raise
    except Exception as exc:
        # the decoders (Pillow, libpng, libtiff codecs via imagecodecs, tifffile) raise many
        # unrelated types for damaged files (DeflateError on a TIFF cut short, ...)
        raise CellmapsInputError(
            f"cannot read image ({type(exc).__name__}: {exc}); is the file complete?", path
        ) from exc
    if data.ndim not in (2, 3) or data.size == 0:
        raise CellmapsInputError(f"expected a 2-D image, got array of shape {data.shape}", path)
    return data


def _orient_array(data: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as viewers show them: an EXIF orientation (1–8) applied with the same
    transforms as ``PIL.ImageOps.exif_transpose`` (written here because 16-bit PNGs are
    decoded by imagecodecs, not Pillow; one mechanism serves PNG and JPEG)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),  # transverse
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](data)) if orientation in ops else data


def parse_channels(text: str) -> list[int]:
    """``"0,2"`` → [0, 2] (the ``--channels`` option)."""
    try:
        channels = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        channels = []
    if not channels or min(channels) < 0:
        raise CellmapsInputError(
            f"--channels takes channel numbers counted from 0, like 0,2; got {text!r}"
        )
    return channels


def select_channels(
    image: np.ndarray, channels: list[int] | None, path: str | os.PathLike | None = None
) -> np.ndarray:
    """The image's ``channels`` (0-based, in that order) as (H, W) or (H, W, C); None keeps
    them all.

    Raises
    ------
    CellmapsInputError
        If a channel number is not in the image (naming how many it has).
    """
    if channels is None:
        return image
    have = 1 if image.ndim == 2 else image.shape[-1]
    bad = [c for c in channels if not 0 <= c < have]
    if bad:
        raise CellmapsInputError(
            f"channel(s) {bad} asked for, but the image has {have} (numbered 0 to {have - 1})",
            path,
        )
    if image.ndim == 2:
        image = image[..., None]
    out = image[..., channels]
    return out[..., 0] if out.shape[-1] == 1 else out


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
            if im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # read_image turns 90°
                width, height = height, width
            return int(height), int(width)
    except (UnidentifiedImageError, OSError, ValueError, tifffile.TiffFileError) as exc:
        raise CellmapsInputError(f"cannot read image ({exc})", path) from exc


BIT_DEPTHS = (8, 10, 12, 14, 16)
INTENSITY_RULE = "bit-depth"  # recorded in each trained model (training.intensity_rule)


def intensity_range(maximum: float, is_float: bool) -> float:
    """The value that maps to 1: the full range 2^d − 1 of the smallest bit depth d in
    ``BIT_DEPTHS`` (or beyond, d = ⌈log2(max + 1)⌉) that holds ``maximum``; 1 for float
    data whose maximum is at most 1.

    Written here because the container type (uint16, float) says nothing about the data's
    real range: cameras store 12-bit data in uint16, and exported floats are often 0–255.
    """
    if is_float and maximum <= 1.0:
        return 1.0
    for depth in BIT_DEPTHS:
        if maximum <= 2**depth - 1:
            return float(2**depth - 1)
    return float(2 ** int(np.ceil(np.log2(maximum + 1))) - 1)


def normalize_image(image: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """Convert an image to float32 (H, W, C) by the cellmaps convention (see module doc).

    Integer and float images are divided by :func:`intensity_range` of their maximum;
    float images with maximum ≤ 1 are kept; booleans map to 0/1.

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
        if info.min < 0 and image.size and image.min() < 0:
            raise CellmapsInputError(f"negative pixel values in {image.dtype} image", path)
        top = float(image.max()) if image.size else 0.0
        out = image.astype(np.float32) / np.float32(intensity_range(top, is_float=False))
    elif np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float32)
        if not np.isfinite(out).all():
            raise CellmapsInputError("image contains NaN or infinite values", path)
        top = float(out.max()) if out.size else 0.0
        if top > 1.0:
            out /= np.float32(intensity_range(top, is_float=True))
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
