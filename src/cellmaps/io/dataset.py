"""Dataset folders: the layout of ../shared/data, of users' data and of cellmaps predictions.

::

    DATASET/
      images/<id>.png|tif|tiff|jpg|jpeg   the images
      masks/<id>.tif                       uint16 instance labels, 0 = background (optional)
      points/<id>.csv                      x,y,label[,score] (optional)
      points/<id>.geojson|json             or QuPath point annotations exported as GeoJSON
      rois/<id>.png                        ROI class mask (optional)
      splits.csv                           id,split,group (optional)

Without splits.csv, asking for the ``train`` or ``val`` split gives a seeded split of the
annotated images (:func:`seeded_split`: a fifth for validation) and says so once; nothing is
written into the folder.

Any subset of the folders may exist; a prediction folder written by ``cellmaps predict``
has ``points/`` (and ``masks/`` for segmentation) and can stand where a dataset stands.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io.geojson import read_geojson
from cellmaps.io.images import IMAGE_SUFFIXES, image_shape, read_image
from cellmaps.io.masks import read_mask, read_roi
from cellmaps.io.points import Points, check_points_in_image, read_points
from cellmaps.io.text import read_utf8_text

MASK_SUFFIXES = (".tif", ".tiff", ".png")
ROI_SUFFIXES = (".png", ".tif", ".tiff")
POINT_SUFFIXES = (".csv", ".geojson", ".json")  # CSV wins when both exist


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Map file stem → path for files with one of ``suffixes`` (first suffix wins on ties)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        suf = path.suffix.lower()
        if path.is_file() and suf in suffixes and not path.name.startswith("."):
            prev = found.get(path.stem)
            if prev is None or suffixes.index(suf) < suffixes.index(prev.suffix.lower()):
                found[path.stem] = path
    return found


def read_geojson_points(path: Path, shape: tuple[int, int] | None) -> Points:
    """The Point / MultiPoint features of a GeoJSON file (QuPath's "Export objects as
    GeoJSON" of point annotations), checked to lie inside the image. A file with outlines
    but no point is refused: its objects would silently count as "no nuclei"."""
    pts, polygons = read_geojson(path)
    if len(pts.coords) == 0 and polygons:
        raise CellmapsInputError(
            f"{len(polygons)} outlines and no point: export point annotations, or rasterise "
            "the outlines into masks/",
            path,
        )
    if shape is not None:
        check_points_in_image(pts.coords, shape, path)
    return pts


AUTO_SPLIT_SEED = 0
AUTO_VAL_SHARE = 0.2


def seeded_split(ids: list[str], seed: int = AUTO_SPLIT_SEED) -> dict[str, str]:
    """id → "train" / "val": a seeded fifth of ``ids`` (at least one, none of a single image)
    for validation, the rest for training; the same ids always give the same split.

    Examples
    --------
    >>> split = seeded_split([f"img{k}" for k in range(10)])
    >>> sorted(split.values()).count("val")
    2
    >>> seeded_split(["only"])
    {'only': 'train'}
    """
    ids = sorted(ids)
    n_val = 0 if len(ids) < 2 else max(1, int(round(AUTO_VAL_SHARE * len(ids))))
    val = set(np.random.default_rng(seed).choice(len(ids), n_val, replace=False).tolist())
    return {image_id: "val" if k in val else "train" for k, image_id in enumerate(ids)}


class Dataset:
    """A dataset folder (see module docstring). All accessors take an image id.

    Parameters
    ----------
    root : path-like
        The folder. It must exist and hold at least one of images/, points/, masks/.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise CellmapsInputError("dataset folder does not exist", self.root)
        self._images = _files_by_stem(self.root / "images", IMAGE_SUFFIXES)
        self._points = _files_by_stem(self.root / "points", POINT_SUFFIXES)
        self._masks = _files_by_stem(self.root / "masks", MASK_SUFFIXES)
        self._rois = _files_by_stem(self.root / "rois", ROI_SUFFIXES)
        if not (self._images or self._points or self._masks):
            raise CellmapsInputError(
                "no images/, points/ or masks/ files found: not a cellmaps dataset folder",
                self.root,
            )

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, {len(self.all_ids)} images)"

    # -- ids, splits and groups -------------------------------------------------------------
    @cached_property
    def all_ids(self) -> list[str]:
        """Every id that has an image, points or a mask, sorted."""
        return sorted(set(self._images) | set(self._points) | set(self._masks))

    @cached_property
    def splits(self) -> dict[str, tuple[str, str]]:
        """id → (split, group) from splits.csv (empty when there is no splits.csv)."""
        path = self.root / "splits.csv"
        if not path.is_file():
            return {}
        with io.StringIO(read_utf8_text(path, "splits.csv"), newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if header[:2] != ["id", "split"]:
                raise CellmapsInputError(
                    f"bad header {','.join(header)!r}: expected 'id,split,group'", path
                )
            out: dict[str, tuple[str, str]] = {}
            first_line: dict[str, int] = {}
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2:
                    raise CellmapsInputError(f"line {line}: expected id,split[,group]", path)
                image_id = row[0].strip()
                if image_id in first_line:
                    raise CellmapsInputError(
                        f"id {image_id!r} is listed twice (lines {first_line[image_id]} and "
                        f"{line}); give each image one split",
                        path,
                    )
                first_line[image_id] = line
                group = row[2].strip() if len(row) > 2 else ""
                out[image_id] = (row[1].strip(), group)
        unknown = sorted(set(out) - set(self.all_ids))
        if unknown:
            warnings.warn(
                f"{path}: {len(unknown)} id(s) have no image, points or mask in the folder and "
                f"are ignored: {unknown[:5]}{' …' if len(unknown) > 5 else ''}",
                stacklevel=2,
            )
        return out

    @cached_property
    def auto_splits(self) -> dict[str, str]:
        """id → "train" / "val" of :func:`seeded_split` over the annotated images (those
        with points or a mask), for a folder without splits.csv; announced once."""
        annotated = [i for i in self.all_ids if i in self._points or i in self._masks]
        split = seeded_split(annotated)
        n_val = sum(v == "val" for v in split.values())
        warnings.warn(
            f"{self.root}: no splits.csv, so a seeded split (seed {AUTO_SPLIT_SEED}) trains on "
            f"{len(split) - n_val} annotated image(s) and validates on {n_val}; nothing is "
            "written to the folder (write splits.csv, id,split,group, to choose the split)",
            stacklevel=3,
        )
        return split

    def ids(self, split: str | None = None, group: str | None = None) -> list[str]:
        """Ids in a split and/or group (both optional), sorted. Without splits.csv the
        ``train`` and ``val`` splits are :attr:`auto_splits`.

        Raises
        ------
        CellmapsInputError
            For a split or group that splits.csv does not name.
        """
        ids = self.all_ids
        if split in ("train", "val") and group is None and not (self.root / "splits.csv").is_file():
            return [i for i in ids if self.auto_splits.get(i) == split]
        for kind, value, idx in (("split", split, 0), ("group", group, 1)):
            if value is None:
                continue
            known = sorted({v[idx] for v in self.splits.values()})
            if value not in known:
                raise CellmapsInputError(
                    f"unknown {kind} {value!r}; splits.csv names {known or 'none'}",
                    self.root / "splits.csv",
                )
            ids = [i for i in ids if self.splits.get(i, ("", ""))[idx] == value]
        return ids

    def _check_id(self, image_id: str) -> None:
        if image_id not in self.all_ids:
            raise CellmapsInputError(f"unknown image id {image_id!r}", self.root)

    def split_of(self, image_id: str) -> str | None:
        """The split named for ``image_id`` in splits.csv, or None."""
        return self.splits.get(image_id, (None, None))[0]

    def group_of(self, image_id: str) -> str | None:
        """The group named for ``image_id`` in splits.csv, or None."""
        return self.splits.get(image_id, (None, None))[1]

    # -- files --------------------------------------------------------------------------
    def image_path(self, image_id: str) -> Path | None:
        """Path of the image file, or None when the folder has no image for the id."""
        self._check_id(image_id)
        return self._images.get(image_id)

    def file_path(self, kind: str, image_id: str) -> Path | None:
        """Path of the id's file of ``kind`` ∈ {'image', 'points', 'mask', 'roi'}, or None."""
        table = {
            "image": self._images,
            "points": self._points,
            "mask": self._masks,
            "roi": self._rois,
        }
        if kind not in table:
            raise ValueError(f"unknown file kind {kind!r}; known: {sorted(table)}")
        return table[kind].get(image_id)

    def has(self, kind: str, image_id: str) -> bool:
        """Whether the id has a file of ``kind`` ∈ {'image', 'points', 'mask', 'roi'}."""
        return self.file_path(kind, image_id) is not None

    def shape(self, image_id: str) -> tuple[int, int] | None:
        """(H, W) of the image (or of the mask when there is no image); None if neither exists."""
        self._check_id(image_id)
        if image_id in self._images:
            return image_shape(self._images[image_id])
        if image_id in self._masks:
            return image_shape(self._masks[image_id])
        return None

    def image(self, image_id: str) -> np.ndarray:
        """The image pixels as stored ((H, W) or (H, W, C)); see :func:`cellmaps.io.read_image`."""
        path = self.image_path(image_id)
        if path is None:
            raise CellmapsInputError(f"no image for id {image_id!r}", self.root / "images")
        return read_image(path)

    def points(self, image_id: str, shape: tuple[int, int] | None = None) -> Points | None:
        """Points of an image (checked to lie inside it), or None when there is no points file."""
        self._check_id(image_id)
        if image_id not in self._points:
            return None
        path = self._points[image_id]
        if path.suffix.lower() in (".geojson", ".json"):
            return read_geojson_points(path, shape or self.shape(image_id))
        return read_points(path, shape or self.shape(image_id))

    def mask(self, image_id: str, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """Instance label image (checked against the image shape), or None when absent."""
        self._check_id(image_id)
        if image_id not in self._masks:
            return None
        if shape is None and image_id in self._images:
            shape = image_shape(self._images[image_id])
        return read_mask(self._masks[image_id], shape)

    def roi(self, image_id: str) -> np.ndarray | None:
        """ROI class mask, or None when absent."""
        self._check_id(image_id)
        if image_id not in self._rois:
            return None
        return read_roi(self._rois[image_id], self.shape(image_id))


def link_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    rows: list[str],
    subs: tuple[str, ...] = ("images", "masks", "points"),
) -> Path:
    """A dataset folder ``dst`` of symlinks to the ``subs`` folders of ``src`` (those it has)
    with its own ``splits.csv`` rows (``id,split,group``): another split or subset of a
    dataset, nothing copied. Returns ``dst``."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for sub in subs:
        link = dst / sub
        if not link.exists() and (src / sub).exists():
            os.symlink((src / sub).resolve(), link)
    (dst / "splits.csv").write_text("\n".join(["id,split,group", *rows]) + "\n")
    return dst
