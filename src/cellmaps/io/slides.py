"""Whole-slide and other large images read region by region (numpy, tifffile, zarr).

(OME-)TIFF and BigTIFF, tiled or striped, pyramidal or not, and the vendor formats tifffile
reads (Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF, …) are opened through tifffile's
zarr store: a region read decodes only the TIFF tiles or strips under it, so memory follows
the region, not the slide. Other slide formats are read through ``tiffslide`` when it is
installed (``pip install 'cellmaps[slides]'``).

:class:`SlideSource` turns one pyramid level into what the streamed inference reads: rows
of the normalised image (the cellmaps intensity rule with the range of the *whole* slide),
resampled to the net's scale. Resampling a band of rows gives exactly the rows that
resampling the whole level would give (Gaussian anti-aliasing then bilinear sampling at the
pixel-centre mapping of :mod:`cellmaps.io.scale`, each band read with enough rows around).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import tifffile
import zarr
from scipy import ndimage

from cellmaps.errors import CellmapsInputError
from cellmaps.io.images import _name_unknown_axes, intensity_range
from cellmaps.io.scale import scaled_shape

#: above this many pixels (H × W), ``cellmaps predict`` reads a TIFF lazily (pyramidal TIFFs
#: always); ``--stream-above`` changes it
DEFAULT_STREAM_ABOVE = 64 * 2**20


class LazyImage:
    """One image of a TIFF file, read region by region (every pyramid level).

    Parameters
    ----------
    path : path-like
        A TIFF / OME-TIFF / BigTIFF or a vendor slide tifffile reads.

    Attributes
    ----------
    levels : list of (H, W)
        Shape of each pyramid level (level 0 = full resolution).
    channels : int
    dtype : numpy dtype
    pixel_size : float or None
        µm per pixel of level 0 when the file says (OME PhysicalSizeX, Aperio MPP).
    """

    def __init__(self, path: str | os.PathLike) -> None:

        self.path = Path(path)
        if not self.path.is_file():
            raise CellmapsInputError("image file does not exist", self.path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            self._arrays = [
                zarr.open(series.aszarr(level=k), mode="r") for k in range(len(series.levels))
            ]
            self._axes = [_axes_of(lvl.axes, lvl.shape, self.path) for lvl in series.levels]
            self.pixel_size = _pixel_size(self._tif)
        except CellmapsInputError:
            raise
        except Exception as exc:
            raise CellmapsInputError(
                f"cannot open image for reading by region ({type(exc).__name__}: {exc})",
                self.path,
            ) from exc
        ax = self._axes[0]
        shape = self._arrays[0].shape
        self.levels = [
            (int(a.shape[ax_k["Y"]]), int(a.shape[ax_k["X"]]))
            for a, ax_k in zip(self._arrays, self._axes, strict=True)
        ]
        self.channels = int(shape[ax["C"]]) if "C" in ax else 1
        self.dtype = np.dtype(self._arrays[0].dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return self.levels[0]

    def close(self) -> None:
        self._tif.close()

    def __enter__(self) -> LazyImage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # a Dask worker reopens the file by its path
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def read(self, r0: int, r1: int, c0: int = 0, c1: int | None = None, level: int = 0):
        """Pixels of rows [r0, r1) and columns [c0, c1) of a level, as stored, (h, w, C)."""
        arr, ax = self._arrays[level], self._axes[level]
        h, w = self.levels[level]
        c1 = w if c1 is None else c1
        if not (0 <= r0 <= r1 <= h and 0 <= c0 <= c1 <= w):
            raise ValueError(f"region rows {r0}:{r1}, cols {c0}:{c1} outside {h} × {w}")
        index = [slice(None)] * arr.ndim
        index[ax["Y"]] = slice(r0, r1)
        index[ax["X"]] = slice(c0, c1)
        for name, i in ax.items():
            if name not in "YXCZ":
                index[i] = 0
        try:
            data = np.asarray(arr[tuple(index)])
        except Exception as exc:
            raise CellmapsInputError(
                f"cannot read rows {r0}:{r1} ({type(exc).__name__}: {exc}); is the file complete?",
                self.path,
            ) from exc
        kept = [n for n in sorted(ax, key=ax.get) if n in "YXCZ"]
        if "Z" in kept:  # max projection, as read_image does for whole stacks
            data = data.max(axis=kept.index("Z"))
            kept.remove("Z")
        order = [kept.index(n) for n in "YXC" if n in kept]
        data = np.transpose(data, order)
        return data if data.ndim == 3 else data[..., None]

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """A small copy of the image (h, w, C) and its scale (thumbnail px per level-0 px):
        the smallest pyramid level with a side ≥ ``max_side``, read with a stride."""
        big = [k for k, (h, w) in enumerate(self.levels) if max(h, w) >= max_side]
        k = big[-1] if big else 0
        h, w = self.levels[k]
        step = max(1, int(max(h, w) // max_side))
        rows = []
        band = max(step, (4096 // step) * step)
        for r in range(0, h, band):
            rows.append(self.read(r, min(h, r + band), level=k)[::step, ::step])
        thumb = np.concatenate(rows, 0)[: -(-h // step)]
        return thumb, thumb.shape[0] / self.levels[0][0]

    def maximum(self) -> float:
        """Largest pixel value of level 0 (read band by band; uint8 needs no reading)."""
        if self.dtype == np.uint8:
            return 255.0
        h = self.levels[0][0]
        top = 0.0
        for r in range(0, h, 1024):
            band = self.read(r, min(h, r + 1024))
            if np.issubdtype(band.dtype, np.floating) and not np.isfinite(band).all():
                raise CellmapsInputError("image contains NaN or infinite values", self.path)
            top = max(top, float(band.max()))
        return top


def _axes_of(axes: str, shape: tuple[int, ...], path: Path) -> dict[str, int]:
    """Axis name → position for a tifffile series level (S = samples counts as C)."""
    axes = _name_unknown_axes(axes, shape).replace("S", "C")
    if "Y" not in axes or "X" not in axes or axes.count("C") > 1:
        raise CellmapsInputError(f"unsupported TIFF axes {axes!r} for reading by region", path)
    for name, n in zip(axes, shape, strict=True):
        if name not in "YXCZ" and n != 1:
            raise CellmapsInputError(
                f"TIFF holds {n} planes on a {name} axis (axes {axes!r}); cellmaps reads one "
                "2-D image (channels and z-stacks allowed)",
                path,
            )
    return {name: i for i, name in enumerate(axes)}


def _pixel_size(tif) -> float | None:
    """µm per pixel from OME-XML (PhysicalSizeX) or an Aperio description (MPP = …)."""
    desc = tif.pages[0].description or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        return float(m.group(1))
    if tif.is_ome and tif.ome_metadata:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if m and (unit is None or unit.group(1) in ("µm", "um", "micron")):
            return float(m.group(1))
    return None


def is_large_tiff(path: str | os.PathLike, stream_above: int = DEFAULT_STREAM_ABOVE) -> bool:
    """Whether ``cellmaps predict`` should read this file lazily: a TIFF that is pyramidal
    or larger than ``stream_above`` pixels."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif"):
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            h, w = series.shape[axes.index("Y")], series.shape[axes.index("X")]
            return len(series.levels) > 1 or h * w > stream_above
    except Exception:
        return False  # read_image reports what is wrong with the file


def choose_level(levels: list[tuple[int, int]], factor: float) -> tuple[int, float]:
    """The pyramid level to read for a wanted scale ``factor`` (net px per level-0 px) and
    the factor left to apply to it: the coarsest level that still has at least the wanted
    resolution (so the net never sees upsampled pixels that a finer level has)."""
    best = 0
    for k, (h, _) in enumerate(levels):
        if h / levels[0][0] >= factor * (1 - 1e-6):
            best = k
    return best, factor * levels[0][0] / levels[best][0]


class SlideSource:
    """Normalised rows of one level of a :class:`LazyImage` at the net's scale: call it with
    (i0, i1) for rows [i0, i1) as (n, W, C) float32.

    Intensities follow :func:`cellmaps.io.images.normalize_image` with the range of the
    whole image (``maximum``), resampling by ``factor`` is exact band by band (module doc).
    """

    def __init__(
        self,
        image: LazyImage,
        level: int = 0,
        factor: float = 1.0,
        maximum: float | None = None,
        channels: list[int] | None = None,
    ) -> None:
        self.image, self.level, self.factor = image, level, float(factor)
        self.channels = channels
        self.src_shape = image.levels[level]
        top = image.maximum() if maximum is None else maximum
        is_float = np.issubdtype(image.dtype, np.floating)
        self.range = intensity_range(top, is_float) if image.dtype != bool else 1.0

        self.shape = scaled_shape(self.src_shape, self.factor) if factor != 1.0 else self.src_shape
        self.sigma = max(0.0, (1.0 / self.factor - 1.0) / 2.0)  # scikit-image's anti-aliasing

    def _src(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        data = self.image.read(r0, r1, c0, c1, level=self.level)
        if self.channels is not None:
            data = data[..., self.channels]
        data = data.astype(np.float32)
        return data / np.float32(self.range) if self.range != 1.0 else data

    def __call__(self, i0: int, i1: int, j0: int = 0, j1: int | None = None) -> np.ndarray:
        """Rows [i0, i1) × columns [j0, j1) at the net's scale, (n, m, C) float32."""
        j1 = self.shape[1] if j1 is None else j1
        if self.factor == 1.0:
            return self._src(i0, i1, j0, j1)

        (h, w), (oh, ow) = self.src_shape, self.shape
        ys = (np.arange(i0, i1) + 0.5) * (h / oh) - 0.5  # source positions of the outputs
        xs = (np.arange(j0, j1) + 0.5) * (w / ow) - 0.5
        halo = int(np.ceil(4 * self.sigma)) + 2  # the Gaussian's reach (truncate = 4) + 1
        r0 = max(0, int(np.floor(ys.min())) - halo)
        r1 = min(h, int(np.ceil(ys.max())) + 2 + halo)
        c0 = max(0, int(np.floor(xs.min())) - halo)
        c1 = min(w, int(np.ceil(xs.max())) + 2 + halo)
        slab = self._src(r0, r1, c0, c1)
        # mirrored beyond the slab as beyond the image: the slab reaches the Gaussian's
        # whole support of every output pixel except at the image's own border
        if self.sigma > 0:
            slab = ndimage.gaussian_filter(
                slab, (self.sigma, self.sigma, 0), mode="mirror", truncate=4.0
            )
        yy = np.clip(ys, 0, h - 1) - r0
        xx = np.clip(xs, 0, w - 1) - c0
        return _bilinear(slab, yy, xx)


def _bilinear(img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of (H, W, C) at the grid ``ys`` × ``xs`` (within the image), written
    out because the result must not depend on which rows are around (band by band)."""
    y0 = np.floor(ys).astype(np.int64)
    x0 = np.floor(xs).astype(np.int64)
    y1 = np.minimum(y0 + 1, img.shape[0] - 1)
    x1 = np.minimum(x0 + 1, img.shape[1] - 1)
    fy = (ys - y0).astype(np.float32)[:, None, None]
    fx = (xs - x0).astype(np.float32)[None, :, None]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)
