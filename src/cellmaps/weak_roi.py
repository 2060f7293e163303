"""``cellmaps weak-roi``: write a copy of a dataset folder with weak ROI annotation derived
from its classified points (and, optionally, nucleus points kept for only part of the
training images), for KiNet-style training when no pathologist outlined regions."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.io import normalize_image
from cellmaps.io._atomic import atomic_path, write_text_atomic
from cellmaps.io.dataset import Dataset
from cellmaps.io.points import Points, write_points
from cellmaps.model import Model
from cellmaps.targets.roi import tumour_regions_from_points, weak_roi_annotation
from cellmaps.training.data import measure_object_size

NOTICE = """# DERIVED DATA - weak ROIs computed by cellmaps, not drawn by a pathologist

Source dataset: {src}
Command: cellmaps weak-roi {src} --tumour {tumour} --out {out} --keep {keep} --sigma {sigma} \
--points-share {share} --seed {seed}

rois/<id>.png: 0 = not annotated, 1 = tumour, 2 = non-tumour. Tumour = where the Gaussian
density (sigma {sigma} px) of points labelled {tumour} is at least half an isolated point's
peak and exceeds the density of the other classified points; only a random {keep:.0%} of
{block}-px blocks is annotated and an {margin}-px band along the tumour border is left out
(cellmaps.targets.roi.tumour_regions_from_points / weak_roi_annotation).

images/, masks/ and points/ link to the source files. {points_note}{other_note}
"""

OTHER_NOTE = """

Non-tumour nuclei added: in {n_images} non-test image(s) points/<id>.csv is rewritten with
the source's points plus, labelled '{label}', every nucleus that {model} detects farther than
{min_gap:g} px from all annotated points and at least {edge:g} px inside the image{dab_note}
({n_added} points of {n_found} detections; run at the data's object scale, median radius
{object_size} px from the points; the source annotates every tumour cell, so an unannotated
nucleus is taken as non-tumour). Test images keep the source's points.
"""

DAB_NOTE = """, where
the mean DAB optical density (rgb2hed) around it is under {max_dab:.3f} (the geometric mean of
the median DAB at annotated positive and negative cells: a DAB-stained detection is a second
peak of an annotated positive cell, since every positive tumour cell is annotated)"""

#: gap between a detection and every annotated point, in median nucleus radii, beyond which
#: the detection is another nucleus (BCData: two-lobed and large DAB cells gave second peaks
#: up to about one radius from their point; docs/ki67_non_tumour.png)
GAP_RADII = 1.5
#: detections closer to the border than this many radii are skipped: a cut cell's peak sits
#: on the edge, and whether annotators marked cut cells is not known
EDGE_RADII = 0.5

NON_TUMOUR = "non_tumour"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def derive_weak_roi_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    tumour_classes: list[str],
    keep: float = 0.5,
    sigma: float = 20.0,
    block: int = 64,
    margin: int = 8,
    points_share: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    other_nuclei: str | os.PathLike | None = None,
    min_gap: float | None = None,
) -> dict:
    """Write ``out`` as a dataset folder: links to ``src``'s images/masks/points, a weak
    ROI mask per image with points, ``splits.csv`` and ``DERIVED.md`` saying how.

    With ``points_share`` < 1, only that share of the *train* split's images (chosen with
    ``seed``) keeps its points file; the others keep only the ROI (KiNet §IV-D2's
    limited fine-grained annotation). Returns a summary (images, kept points, ROI share).

    With ``other_nuclei`` (a detector model file), the train and val images' points gain
    every nucleus that model finds farther than ``min_gap`` px from all annotated points
    (default :data:`GAP_RADII` median radii, measured from the non-test points) and not on
    the image border, labelled ``non_tumour`` (:func:`add_non_tumour_points`); with positive
    and negative tumour classes on RGB images, detections on DAB-stained pixels are skipped
    too (:func:`dab_threshold`). For datasets that annotate every tumour cell (BCData), so
    that a KiNet model learns to find the stromal and immune nuclei and leave them out of
    the Ki67 index. They also count as "other" points for the ROIs.

    Everything is checked before anything is written (options, tumour labels present in the
    points, ``out`` new or empty unless ``overwrite``); the dataset is then written into a
    hidden temporary folder next to ``out`` and renamed to ``out`` when complete, so a
    failure or Ctrl-C leaves no half-derived dataset (and, with ``overwrite``, the old one).
    """
    ds = Dataset(src)
    src, out = Path(src), Path(out)
    if not 0.0 <= points_share <= 1.0 or not 0.0 < keep <= 1.0:
        raise CellmapsInputError(
            f"points_share must be in [0, 1] and keep in (0, 1], got {points_share} and {keep}"
        )
    if out.resolve() == src.resolve():
        raise CellmapsInputError("the output folder must differ from the source dataset", out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not overwrite:
            raise CellmapsInputError(
                "already exists; choose a new folder or pass --overwrite to replace it", out
            )
        if not is_derived_dataset(out):  # --overwrite replaces the whole folder
            raise CellmapsInputError(
                "--overwrite replaces only a dataset weak-roi derived (DERIVED.md from "
                "cellmaps); this folder holds something else — annotations, perhaps — and is "
                "kept; choose a new folder",
                out,
            )
    check_tumour_labels(ds, tumour_classes, src)
    if min_gap is not None and (min_gap <= 0 or min_gap != min_gap):
        raise CellmapsInputError(f"min_gap must be a positive number of pixels, got {min_gap}")
    detector = None
    if other_nuclei is not None:
        detector = Model.load(other_nuclei)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        summary = _write_weak_roi_dataset(
            ds,
            src,
            tmp,
            out,
            tumour_classes,
            keep,
            sigma,
            block,
            margin,
            points_share,
            seed,
            progress,
            (detector, other_nuclei, min_gap),
        )
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def add_non_tumour_points(
    points: Points,
    detections: np.ndarray,
    min_gap: float,
    shape: tuple[int, int] | None = None,
    edge: float = 0.0,
    dab: np.ndarray | None = None,
    max_dab: float | None = None,
) -> Points:
    """``points`` plus, labelled ``non_tumour``, each detection (row, col) farther than
    ``min_gap`` px from every annotated point (scores dropped), at least ``edge`` px inside an
    image of ``shape``, and, with ``dab`` (the DAB density at each detection) and
    ``max_dab``, under that density. In a dataset that annotates every tumour cell, a nucleus
    nobody annotated is a non-tumour nucleus (stroma, immune cells) — the examples KiNet's
    tumour-only index needs."""
    det = np.asarray(detections, np.float64).reshape(-1, 2)
    keep = np.ones(len(det), bool)
    if len(points.coords) and len(det):
        keep &= cKDTree(points.coords).query(det, k=1)[0] > min_gap
    if shape is not None and len(det):
        inside = np.minimum(det, np.asarray(shape[:2], np.float64) - 1 - det).min(axis=1)
        keep &= inside >= edge
    if dab is not None and max_dab is not None:
        keep &= np.asarray(dab, np.float64).reshape(-1) < max_dab
    det = det[keep]
    labels = np.concatenate([np.asarray(points.labels, object), [NON_TUMOUR] * len(det)])
    return Points(np.concatenate([points.coords, det]), labels)


def dab_density(image: np.ndarray, coords: np.ndarray, radius: float) -> np.ndarray:
    """Mean DAB optical density (scikit-image ``rgb2hed``, channel 2) in a box of side
    ``radius`` around each (row, col) point of an RGB image."""
    rgb = normalize_image(image)[..., :3]
    dab = ndi.uniform_filter(rgb2hed(rgb)[..., 2], size=max(int(round(radius)), 1))
    rc = np.round(np.asarray(coords, np.float64).reshape(-1, 2)).astype(int)
    rc = np.clip(rc, 0, np.asarray(dab.shape) - 1)
    return dab[rc[:, 0], rc[:, 1]]


def dab_threshold(positive: np.ndarray, negative: np.ndarray) -> float:
    """The DAB density that separates Ki67-positive from negative cells: the geometric mean
    of the median density at annotated positive and at annotated negative cells (BCData
    train + val: 0.495 and 0.022 → 0.104)."""
    return float(np.sqrt(max(np.median(positive), 1e-6) * max(np.median(negative), 1e-6)))


def dab_limit_from_points(ds: Dataset, ids: list[str], radius: float) -> float | None:
    """:func:`dab_threshold` of the DAB density at the points labelled positive and negative
    on the images ``ids`` (None when either class has no point there)."""
    at = {"positive": [], "negative": []}
    for i in ids:
        pts = ds.points(i)
        labels = np.asarray(pts.labels).astype(str)
        dab = dab_density(ds.image(i), pts.coords, radius)
        for k in at:
            at[k].append(dab[labels == k])
    pos, neg = (np.concatenate(at[k]) if at[k] else np.zeros(0) for k in at)
    return dab_threshold(pos, neg) if len(pos) and len(neg) else None


def check_tumour_labels(ds: Dataset, tumour_classes: list[str], src: Path) -> None:
    """Refuse tumour labels that no point of the dataset carries (naming those found)."""
    found: set[str] = set()
    for image_id in ds.ids():
        pts = ds.points(image_id) if ds.image_path(image_id) is not None else None
        if pts is not None:
            found |= {str(x) for x in pts.labels}
    missing = sorted(set(map(str, tumour_classes)) - found)
    if missing:
        raise CellmapsInputError(
            f"no point in the dataset has the tumour label(s) {missing}; labels found: "
            f"{sorted(found)}",
            src,
        )


def is_derived_dataset(folder: Path) -> bool:
    """Whether ``folder`` is a dataset this module wrote (its DERIVED.md starts with
    :data:`NOTICE`'s first line)."""
    notice = folder / "DERIVED.md"
    if not folder.is_dir() or not notice.is_file():
        return False
    with open(notice, encoding="utf-8", errors="replace") as fh:
        return fh.readline().strip() == NOTICE.splitlines()[0].strip()


def _replace_folder(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _write_weak_roi_dataset(
    ds: Dataset,
    src: Path,
    out: Path,
    final: Path,
    tumour_classes: list[str],
    keep: float,
    sigma: float,
    block: int,
    margin: int,
    points_share: float,
    seed: int,
    progress: bool,
    other: tuple,
) -> dict:
    detector, detector_path, min_gap = other
    rule = _non_tumour_rule(ds, tumour_classes, min_gap) if detector is not None else {}
    rng = np.random.default_rng(seed)
    train = ds.ids("train") if ds.splits else []
    n_keep = int(round(points_share * len(train)))
    dropped = set(rng.permutation(train)[n_keep:].tolist()) if train else set()
    ids = ds.ids()
    annotated, n_added, n_rewritten, n_found = [], 0, 0, 0
    for image_id in tqdm(ids, desc="weak ROIs", unit="img", disable=not progress):
        img_path = ds.image_path(image_id)
        if img_path is None:
            continue
        _link(img_path, out / "images" / img_path.name)
        mask_path = ds.file_path("mask", image_id)
        if mask_path is not None:
            _link(mask_path, out / "masks" / mask_path.name)
        pts = ds.points(image_id)
        if pts is None:
            continue
        if detector is not None and ds.split_of(image_id) != "test":
            image = ds.image(image_id)
            # run the detector at the data's object scale (median radius from the annotated
            # points): an H&E detector run at its own scale on IHC cells twice as large fires
            # on the rims of dark DAB-positive cells, and those would be taught as non-tumour
            scale = rule["radius"] if detector.train_radius is not None else None
            found = detector.detect(image, object_size=scale).coords
            before = len(pts)
            dab = None
            if rule["max_dab"] is not None:
                dab = dab_density(image, found, rule["radius"])
            pts = add_non_tumour_points(
                pts, found, rule["min_gap"], image.shape, rule["edge"], dab, rule["max_dab"]
            )
            n_found += len(found)
            n_added += len(pts) - before  # not the source's own non_tumour points
            n_rewritten += 1
            if image_id not in dropped:
                write_points(out / "points" / f"{image_id}.csv", pts)
        elif image_id not in dropped:
            _link(ds.file_path("points", image_id), out / "points" / f"{image_id}.csv")
        tumour = tumour_regions_from_points(
            pts.coords, pts.labels, ds.shape(image_id), tumour_classes, sigma
        )
        roi = weak_roi_annotation(tumour, rng, keep, block, margin)
        annotated.append(float((roi > 0).mean()))
        with atomic_path(out / "rois" / f"{image_id}.png") as tmp:
            Image.fromarray(roi).save(tmp, format="PNG")
    if (src / "splits.csv").is_file():
        write_text_atomic(out / "splits.csv", (src / "splits.csv").read_text())
    note = (
        f"points/ is missing for {len(dropped)} of the {len(train)} train images "
        f"(points share {points_share:g}, seed {seed}): those train only the ROI task."
        if dropped
        else "Every image keeps its points."
    )
    write_text_atomic(
        out / "DERIVED.md",
        NOTICE.format(
            src=src,
            out=final,
            tumour=",".join(tumour_classes),
            keep=keep,
            sigma=sigma,
            share=points_share,
            seed=seed,
            block=block,
            margin=margin,
            points_note=note,
            other_note=""
            if detector is None
            else OTHER_NOTE.format(
                n_images=n_rewritten,
                label=NON_TUMOUR,
                model=Path(detector_path).name,
                min_gap=rule["min_gap"],
                edge=rule["edge"],
                dab_note=""
                if rule["max_dab"] is None
                else DAB_NOTE.format(max_dab=rule["max_dab"]),
                n_added=n_added,
                n_found=n_found,
                object_size=f"{rule['radius']:.1f}",
            ),
        ),
    )
    return {
        "images": len(annotated),
        "train_with_points": len(train) - len(dropped),
        "train_images": len(train),
        "annotated_share": float(np.mean(annotated)) if annotated else 0.0,
        "non_tumour_added": n_added,
        "non_tumour_images": n_rewritten,
        "non_tumour_detections": n_found,
        "non_tumour_rule": rule,
    }


def _non_tumour_rule(ds: Dataset, tumour_classes: list[str], min_gap: float | None) -> dict:
    """How detections become non-tumour examples, measured on the non-test images' points
    (never the test split's): the median nucleus radius, the gap to annotated points
    (``min_gap``, default :data:`GAP_RADII` radii), the border margin (:data:`EDGE_RADII`
    radii) and, when the tumour classes are Ki67's positive / negative on RGB images, the
    DAB density above which a detection is taken for part of a positive cell."""
    ids = [i for i in ds.ids() if ds.has("points", i) and ds.split_of(i) != "test"]
    if not ids:
        raise CellmapsInputError(
            "no train or val image has points: the non-tumour rule is measured on them", ds.root
        )
    radius = float(measure_object_size(ds, ids, use_masks=False)[0])
    max_dab = None
    if {"positive", "negative"} <= set(map(str, tumour_classes)) and ds.image(ids[0]).ndim == 3:
        max_dab = dab_limit_from_points(ds, ids, radius)
    return {
        "radius": radius,
        "min_gap": float(GAP_RADII * radius if min_gap is None else min_gap),
        "edge": float(EDGE_RADII * radius),
        "max_dab": max_dab,
    }
