"""``cellmaps predict``: run a model on images and write the prediction layout."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import skimage
from PIL import Image
from tqdm import tqdm

from cellmaps.batch import (
    SKIPPED_FILE,
    BatchInterrupted,
    finished_inputs,
    input_fingerprint,
    is_complete,
    planned_outputs,
    record_finished_input,
    run_lock,
    start_run,
    stop_between_images,
    undone_if_nothing_written,
)
from cellmaps.bundled import check_modality, resolve_model
from cellmaps.cluster import cluster_client
from cellmaps.errors import CellmapsInputError
from cellmaps.inference.scale import AUTO
from cellmaps.inference.slides import detect_slide, segment_slide, slide_measurements
from cellmaps.io._atomic import atomic_path, write_csv_atomic
from cellmaps.io.dataset import Dataset
from cellmaps.io.images import (
    IMAGE_SUFFIXES,
    image_shape,
    normalize_image,
    read_image,
    select_channels,
)
from cellmaps.io.masks import write_mask
from cellmaps.io.points import Points, read_points
from cellmaps.io.slides import DEFAULT_STREAM_ABOVE, LazyImage, is_large_tiff
from cellmaps.io.stain import STAIN_NORM_METHODS, normalise_stain
from cellmaps.model import segment_image
from cellmaps.outputs import (
    PREVIEW_SIDE,
    draw_overlay,
    instance_outlines,
    label_counts,
    model_labels,
    read_regions,
    record_slide,
    region_counts,
    write_counts,
    write_overlay,
    write_points_outputs,
    write_regions,
)
from cellmaps.version import __version__


def sample_image_path() -> Path:
    """scikit-image's bundled IHC image (``skimage.data.immunohistochemistry()``), read
    from the installed package (no download)."""
    path = Path(skimage.__file__).parent / "data" / "ihc.png"
    if not path.is_file():
        raise CellmapsInputError("scikit-image's sample image ihc.png is not installed", path)
    return path


def collect_images(paths: list[str | os.PathLike], split: str | None = None) -> list[Path]:
    """Image files from files and folders (a dataset folder's images/ is used when present;
    with ``split``, only that split of each dataset folder's splits.csv)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir() and split is not None:
            ds = Dataset(p)
            out += [ds.image_path(i) for i in ds.ids(split) if ds.image_path(i) is not None]
        elif p.is_dir():
            folder = p / "images" if (p / "images").is_dir() else p
            named = sorted(
                f
                for f in folder.iterdir()
                if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
            )
            files = [f for f in named if f.is_file()]  # follows links; False for loops
            _warn_not_regular([f for f in named if not f.is_file()])
            if not files:
                raise CellmapsInputError("no images (png, tif, tiff, jpg) in folder", folder)
            out += files
        elif p.is_file():
            out.append(p)
        elif p.exists() or p.is_symlink():
            raise CellmapsInputError(f"not a regular file ({_file_kind(p)})", p)
        else:
            raise CellmapsInputError("no such image file or folder", p)
    stems = [p.stem for p in out]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise CellmapsInputError(
            f"several inputs share the id(s) {sorted(dup)}; outputs would overwrite each other"
        )
    return out


def _file_kind(path: Path) -> str:
    """What a path that is not a regular file is (for messages)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:  # a broken link or a loop of links
        return f"a link that leads nowhere: {exc.strerror}"
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name + (" behind a link" if path.is_symlink() else "")
    return "not a file"


def _warn_not_regular(paths: list[Path]) -> None:
    """Name, before any image runs, the folder entries that are not regular files (named
    pipes, devices, broken links, loops of links): they are skipped."""
    if paths:
        warnings.warn(
            f"skipping {len(paths)} entr{'y' if len(paths) == 1 else 'ies'} that "
            f"{'is' if len(paths) == 1 else 'are'} not a regular file: "
            + "; ".join(f"{p} ({_file_kind(p)})" for p in paths[:5])
            + (" …" if len(paths) > 5 else ""),
            stacklevel=3,
        )


def _predict_one(
    m,
    f: Path,
    out: Path,
    xi,
    masks: bool,
    channels: list[int] | None,
    inference: dict,
    slides: dict | None = None,
    client=None,
) -> dict[str, int]:
    """Detect in one image and write its outputs (each atomically); returns its counts.
    Large or pyramidal TIFFs (``slides`` options: ``stream_above``, ``tissue``,
    ``magnification``, ``parquet``) are read lazily and streamed (:mod:`cellmaps.inference.slides`)."""
    slides = slides or {}
    try:
        if is_large_tiff(f, slides.get("stream_above") or DEFAULT_STREAM_ABOVE):
            if slides.get("page") is not None or slides.get("project") is not None:
                raise CellmapsInputError(
                    "--page and --project are for images read whole, not for streamed slides"
                )
            if slides.get("stain_norm"):
                raise CellmapsInputError(
                    "--stain-norm is for images read whole, not for streamed slides (the stain "
                    "estimate would change from tile to tile)"
                )
            return _predict_slide(m, f, out, xi, masks, channels, inference, slides, client)
        pixel_size = inference.get("pixel_size")  # the user's, for µm areas in the table
        image, factor, inference = _scaled_input(m, f, channels, inference, slides)
        mask = None
        if masks:
            pts, mask = segment_image(m, image, **inference)
        else:
            pts = m.detect(image, xi=xi, **inference)
        _write_detections(m, f, out, image, pts, mask, factor, pixel_size, slides)
    except CellmapsInputError as exc:
        if exc.path is None:  # name the file the problem came from
            raise _naming(exc, f) from exc
        raise
    return label_counts(pts)


def _naming(exc: CellmapsInputError, f: Path) -> CellmapsInputError:
    """``exc``, or the same problem naming the file it came from when it names none."""
    return CellmapsInputError(exc.problem, f) if exc.path is None else exc


def _scaled_input(m, f: Path, channels, inference: dict, slides: dict):
    """(image as the model sees it, its input scale, the inference options that give the
    model that scale): :func:`_model_input`, then :func:`resolved_scale`."""
    image = _model_input(f, channels, slides, m)
    factor, inference = resolved_scale(m, image, inference)
    return image, factor, inference


def _write_detections(m, f, out, image, pts, mask, factor, pixel_size, slides) -> None:
    """An image's outputs (each written atomically): points, table (areas in µm² given the
    user's ``pixel_size``), geojson (the outlines of ``mask`` when given, written to masks/
    too) and overlay."""
    outlines = None
    if mask is not None:
        write_mask(out / "masks" / f"{f.stem}.tif", mask)
        outlines = instance_outlines(mask, m.training.get("label") or "nucleus")
    table = m.measure(pts, image, mask, factor, pixel_size)
    write_points_outputs(out, f.stem, pts, slides.get("parquet", False), outlines, table)
    write_overlay(out / "overlays" / f"{f.stem}.png", image, pts)


def _predict_stacked(
    m, files: list[Path], out: Path, xi, masks: bool, channels, inference: dict, slides: dict
) -> Iterator[dict[str, int] | CellmapsInputError]:
    """:func:`_predict_one` for a few small images, their net run on the images' tiles
    stacked (:meth:`~cellmaps.model.Model.detect_many`; with ``masks``,
    :meth:`~cellmaps.model.Model.predict_maps_many` then :func:`segment_image`): yields, per
    image in order, its counts once its outputs are written, or the error that stopped it
    (naming the file). Every image is predicted before the first is written; an image's
    outputs are written only when its result is asked for, so a run stopped between two
    images leaves none half written."""
    errors: dict[int, CellmapsInputError] = {}
    pixel_size = inference.get("pixel_size")  # the user's, for µm areas in the table
    ready = []
    for k, f in enumerate(files):
        try:
            ready.append((k, f, *_scaled_input(m, f, channels, inference, slides)))
        except CellmapsInputError as exc:
            errors[k] = _naming(exc, f)
    images = [r[2] for r in ready]
    try:
        if masks:
            tiling = {k: v for k, v in inference.items() if k not in ("object_size", "pixel_size")}
            found = m.predict_maps_many(images, [r[3] for r in ready], len(files), **tiling)
        else:
            sizes = [r[4].get("object_size") for r in ready]
            found = m.detect_many(images, xi=xi, stack=len(files),
                                  **{**inference, "object_size": sizes})  # fmt: skip
    except CellmapsInputError:  # which image? predict them one by one below to name it
        found = [None] * len(ready)
    by_file = {r[0]: (r, res) for r, res in zip(ready, found, strict=True)}
    for k in range(len(files)):
        if k in errors:
            yield errors[k]
            continue
        (_, f, image, factor, inf), res = by_file[k]
        try:
            mask = None
            if masks:
                pts, mask = segment_image(m, image, maps=res, **inf)
            else:
                pts = m.detect(image, xi=xi, **inf) if res is None else res
            _write_detections(m, f, out, image, pts, mask, factor, pixel_size, slides)
            yield label_counts(pts)
        except CellmapsInputError as exc:
            yield _naming(exc, f)


def _model_input(f: Path, channels: list[int] | None, slides: dict, m=None) -> np.ndarray:
    """An image read whole as the model sees it: the page / projection and channels asked
    for, checked for colour (``need_colour``) and, given the model ``m``, for its modality,
    then stain-normalised (``stain_norm``)."""
    image = select_channels(
        read_image(f, page=slides.get("page"), project=slides.get("project")), channels, f
    )
    if slides.get("need_colour"):
        check_colour(image, f)
    if m is not None:
        check_modality(m, image, f, slides)
    if slides.get("stain_norm"):
        image = _stain_normalised(image, slides["stain_norm"], slides.get("stain_ref"), f)
    return image


SHARED = "shared"  # --object-size shared: one estimate for the whole run
#: images predicted together, their tiles stacked in the net's batches; 1 = one by one,
#: the faster on this 2-core CPU (BENCHMARKS.md "Small images stacked")
STACK_IMAGES = 1
#: the largest image (pixels) stacked with others; larger ones run alone
STACK_MAX_PIXELS = 2048 * 2048
SHARED_SCALE_IMAGES = 8  # images the shared estimate is made from, spread over the run


def spread_sample(items: list, k: int) -> list:
    """Up to ``k`` of ``items`` spread evenly over the list (the first and last included)."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, k).round().astype(int))]


def median_factor(factors: list[float]) -> float:
    """The median of input → net factors, taken in log factor (so 0.5× and 2× are as far
    from 1×); with an even count, the geometric mean of the middle two."""
    return float(np.exp(np.median(np.log(np.asarray(factors, dtype=float)))))


def shared_object_size(
    m,
    files: list[Path],
    channels: list[int] | None,
    slides: dict,
    progress: bool = False,
    skip_bad: bool = False,
) -> tuple[float, list[str]]:
    """``--object-size shared``: the object radius (input px) for every image of a run,
    estimated once — the per-image estimate (:func:`~cellmaps.inference.scale.estimate_input_scale`)
    of up to :data:`SHARED_SCALE_IMAGES` images spread over the run (slides left out: they
    are not read whole), combined by :func:`median_factor`. For a folder from one scanner
    this replaces an estimate per image (most of the time of a small image) by a few, and
    one image with few objects cannot pull its own scale astray. Returns the radius and the
    ids of the images it was estimated from (with ``skip_bad``, an image that cannot be read
    is left out here and reported by the run as it comes)."""
    if not m.train_radius:
        raise CellmapsInputError(
            "--object-size shared needs a model that records the object size it was trained "
            "at; give --object-size in px or --pixel-size"
        )
    stream_above = slides.get("stream_above") or DEFAULT_STREAM_ABOVE
    whole = [f for f in files if not is_large_tiff(f, stream_above)]
    if not whole:
        raise CellmapsInputError(
            "--object-size shared is estimated from images read whole, and every input here "
            "is a slide read by region: give --object-size in px, --pixel-size or "
            "--magnification"
        )
    factors, used = [], []
    sample = spread_sample(whole, SHARED_SCALE_IMAGES)
    for f in tqdm(sample, desc="object size", unit="img", disable=not progress):
        try:
            factors.append(m.input_scale(AUTO, None, _model_input(f, channels, slides)))
            used.append(f.stem)
        except CellmapsInputError as exc:
            if not skip_bad:
                raise CellmapsInputError(exc.problem, exc.path or f) from exc
    if not factors:
        raise CellmapsInputError(
            "--object-size shared: none of the images sampled for the estimate could be read "
            f"({len(sample)} tried)"
        )
    return float(m.train_radius) / median_factor(factors), used


def resolved_scale(m, image: np.ndarray, inference: dict) -> tuple[float, dict]:
    """The image's input scale (:meth:`~cellmaps.model.Model.input_scale`, estimated once
    when it is ``auto``) and the inference options that give the model exactly that scale
    (the object size in px for models with a training radius), so detection and the
    measurement discs agree."""
    factor = m.input_scale(inference.get("object_size"), inference.get("pixel_size"), image)
    if m.train_radius:
        inference = {**inference, "object_size": m.train_radius / factor, "pixel_size": None}
    return factor, inference


def check_colour(image: np.ndarray, path=None) -> None:
    """Refuse an image that is not colour: one that has not three channels, or whose three
    channels are equal (a grey image saved as RGB). A Ki67 call tells DAB-brown from
    haematoxylin-blue nuclei, which needs the colours."""
    if image.ndim != 3 or image.shape[-1] != 3:
        have = 1 if image.ndim == 2 else image.shape[-1]
        raise CellmapsInputError(
            f"a Ki67 call needs a brightfield RGB image (brown DAB and blue haematoxylin), "
            f"but this one has {have} channel(s)",
            path,
        )
    step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / 1e6))))
    sample = image[::step, ::step]  # about a million pixels decide
    if np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(
        sample[..., 0], sample[..., 2]
    ):
        raise CellmapsInputError(
            "a Ki67 call needs a brightfield RGB image (brown DAB and blue haematoxylin), but "
            "this one is grey (its three channels are equal)",
            path,
        )


def _stain_normalised(image: np.ndarray, method: str, reference, f: Path) -> np.ndarray:
    """``--stain-norm``: the RGB image brought to the reference stain appearance
    (:func:`cellmaps.io.stain.normalise_stain`); other images are refused, naming the file."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise CellmapsInputError(
            f"--stain-norm needs RGB brightfield images; this one has shape {image.shape}", f
        )
    return normalise_stain(_uint8_pixels(image, f), method, reference)


def _uint8_pixels(image: np.ndarray, path=None) -> np.ndarray:
    """The image's intensities as uint8 (cellmaps' bit-depth rule, no contrast stretch: the
    stain estimate must see the true colours)."""
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(normalize_image(image, path), 0, 1) * 255).astype(np.uint8)


def _stain_reference(method: str | None, path) -> np.ndarray | None:
    """The ``--stain-reference`` image's RGB pixels (checked), or None."""
    if method is None:
        if path is not None:
            raise CellmapsInputError("--stain-reference needs --stain-norm macenko|reinhard")
        return None
    if method not in STAIN_NORM_METHODS:
        raise CellmapsInputError(f"unknown --stain-norm {method!r}; known: {STAIN_NORM_METHODS}")
    if path is None:
        if method == "reinhard":
            raise CellmapsInputError("--stain-norm reinhard needs --stain-reference IMAGE")
        return None  # Macenko's own H&E reference
    ref = read_image(path)
    if ref.ndim != 3 or ref.shape[-1] < 3:
        raise CellmapsInputError(f"the stain reference must be an RGB image, got {ref.shape}", path)
    return _uint8_pixels(ref[..., :3], path)


def _slide_thumbnail(f: Path, side: int, channels: list[int] | None) -> tuple[np.ndarray, float]:
    """A slide's downsampled copy (at most ``side`` px a side) with ``channels`` picked, and
    its scale."""
    with LazyImage(f) as img:
        thumb, scale = img.thumbnail(side)
    return select_channels(thumb if thumb.shape[-1] > 1 else thumb[..., 0], channels, f), scale


def _predict_slide(m, f, out, xi, masks, channels, inference, slides, client) -> dict[str, int]:
    """A slide read lazily: streamed detection, outputs, and a downsampled overlay."""
    thumb = None
    if slides.get("need_colour") or m.training.get("modality"):
        thumb = _slide_thumbnail(f, 512, channels)[0]
    if slides.get("need_colour"):
        check_colour(thumb, f)
    if thumb is not None:
        check_modality(m, thumb, f, slides)
    opts = dict(
        tissue=slides.get("tissue", True),
        magnification=slides.get("magnification"),
        channels=channels,
        progress=slides.get("progress", False),
        **inference,
    )
    table = None
    if masks:  # region growing block by block, serially (ids numbered as blocks finish)
        pts, info = segment_slide(m, f, out / "masks" / f"{f.stem}.tif", **opts)
    else:
        pts, info = detect_slide(m, f, xi=xi, client=client, **opts)
        table = slide_measurements(m, f, pts, brightfield=m.training.get("modality", "brightfield")
                                   == "brightfield", **opts)  # fmt: skip
    write_points_outputs(out, f.stem, pts, slides.get("parquet", False), table=table)
    thumb, scale = _slide_thumbnail(f, PREVIEW_SIDE, channels)
    small = Points((pts.coords + 0.5) * scale - 0.5, pts.labels, pts.scores)
    with atomic_path(out / "overlays" / f"{f.stem}.png") as tmp:
        Image.fromarray(draw_overlay(thumb, small, radius=2)).save(tmp, format="PNG")
    record_slide(out, f.stem, dict(info, detections=len(pts)))
    tqdm.write(
        f"{f.name}: {len(pts)} detections at pyramid level {info['level']}, "
        f"{100 * info['skipped_tiles']:.0f} % of tiles skipped as background"
    )
    return label_counts(pts)


def _run_record(m, xi, masks: bool, split, channels, inference: dict) -> dict:

    settings = {"xi": xi, "masks": masks, "split": split, "channels": channels}
    settings.update({k: v for k, v in inference.items() if k != "progress"})
    return {"cellmaps": __version__, "model": m.fingerprint(), "settings": settings}


def predict_paths(
    model,
    paths: list[str | os.PathLike],
    out: str | os.PathLike,
    xi: float | None = None,
    progress: bool = True,
    split: str | None = None,
    masks: bool = False,
    min_score: float | None = None,
    reserved_ids: tuple[str, ...] = (),
    overwrite: bool = False,
    resume: bool = False,
    skip_bad: bool = False,
    channels: list[int] | None = None,
    write_tables=None,
    workers: int | None = None,
    scheduler: str | None = None,
    stream_above: int | None = None,
    tissue: bool = True,
    magnification: float | None = None,
    parquet: bool = False,
    regions: str | os.PathLike | None = None,
    stain_norm: str | None = None,
    stain_reference: str | os.PathLike | None = None,
    page: int | None = None,
    project: str | None = None,
    need_colour: bool = False,
    **inference,
) -> list[dict]:
    """Detect objects in every image and write ``points/<id>.csv`` (x,y,label,score),
    ``geojson/<id>.geojson`` (QuPath), ``overlays/<id>.png`` and ``counts.csv``; with
    ``masks``, also ``masks/<id>.tif`` instance masks (region growing for models with outer
    distance and cell-pixel tasks, DeepDistance §4.7; the border-limited watershed for
    DeepSplit models; argmax + watershed for weakly-points) and, for images (not slides),
    the geojson holds one polygon per instance instead of the points.

    ``model`` is a model file, a loaded :class:`~cellmaps.model.Model` or None (the
    bundled default). ``xi`` and ``min_score`` override the model's relative threshold and
    absolute evidence floor. The output folder is managed by :mod:`cellmaps.batch`: another
    run's folder is refused unless ``overwrite``; ``resume`` continues this run, skipping
    finished images. ``counts.csv`` is rewritten after every image. With ``skip_bad``, an
    image that cannot be read or processed is listed in ``skipped.csv`` and the run goes
    on; without it the run stops at that image with its error (finished images are kept).
    Ctrl-C stops after the current image (:class:`~cellmaps.batch.BatchInterrupted`).
    ``channels`` picks image channels (0-based) before the model sees them.
    ``write_tables(out, rows)``, if given, writes further tables whenever counts.csv is.

    TIFFs that are pyramidal or larger than ``stream_above`` pixels are read by region and
    streamed (:mod:`cellmaps.inference.slides`): ``tissue`` skips background tiles, ``magnification``
    (objective power) gives their pixel size, and their overlay is a downsampled preview.
    ``parquet`` also writes ``points/<id>.parquet``. ``workers`` runs the images (and the
    row bands of slides) on a local Dask cluster of that many processes, ``scheduler`` on a
    running one (:mod:`cellmaps.cluster`); the outputs are the same as a serial run's.
    ``regions`` (a folder of ``<id>.geojson`` or one GeoJSON file of polygons, in the image's
    level-0 pixels) adds ``regions.csv``: counts (and Ki67 index) per region.
    ``page`` / ``project`` choose the image of multi-page TIFFs (:func:`read_image`);
    ``need_colour`` refuses images that are not RGB colour (:func:`check_colour`).

    Returns one row per image processed or resumed: id, count and count per label.
    """
    m = resolve_model(model)
    if xi is not None and not (np.isfinite(xi) and 0 <= xi <= 1):
        raise CellmapsInputError(f"xi must be a number in [0, 1], got {xi!r}")
    if min_score is not None:
        if not (np.isfinite(min_score) and min_score >= 0):
            raise CellmapsInputError(f"min_score must be a number >= 0, got {min_score!r}")
        m = m.with_decode(min_score=float(min_score))  # the caller's model stays as it is
    files = collect_images(paths, split)
    for f in files:
        if f.stem in reserved_ids:
            raise CellmapsInputError(
                f"the image name {f.stem!r} is reserved for the summary row of the output "
                "table; rename the image",
                f,
            )
    for f in files:  # bad region files are reported before anything is written
        read_regions(regions, f.stem)
    stain_ref = _stain_reference(stain_norm, stain_reference)
    sample = None
    if inference.get("object_size") == SHARED:
        size, sample = shared_object_size(
            m, files, channels, {"stream_above": stream_above, "page": page, "project": project,
                                 "stain_norm": stain_norm, "stain_ref": stain_ref}, progress,
            skip_bad,
        )  # fmt: skip
        inference = {**inference, "object_size": size}
        tqdm.write(
            f"object size estimated once for the run: radius {size:.2f} px "
            f"(median over {len(sample)} image(s))"
        )
    slides = {"stream_above": stream_above, "tissue": tissue, "magnification": magnification,
              "regions": None if regions is None else str(regions), "stain_norm": stain_norm,
              "stain_reference": None if stain_reference is None else str(stain_reference),
              "page": page, "project": project}  # fmt: skip
    record = _run_record(m, xi, masks, split, channels, dict(inference, **slides))
    if sample is not None:  # the shared estimate's images: a resume must find the same
        record["settings"]["object_size_from"] = sample
    slides.update(parquet=parquet, progress=progress and len(files) == 1, stain_ref=stain_ref,
                  need_colour=need_colour)  # fmt: skip
    with undone_if_nothing_written(out), run_lock(out) as out:
        return _run_batch(
            m, out, files, record, (xi, masks, channels, inference, slides),
            overwrite=overwrite, resume=resume, progress=progress, regions=regions,
            write_tables=write_tables, skip_bad=skip_bad, workers=workers, scheduler=scheduler,
        )  # fmt: skip


def _predict_or_error(m, f: Path, out: Path, args: tuple, client) -> dict | CellmapsInputError:
    """:func:`_predict_one`'s counts, or the input error that stopped it."""
    try:
        return _predict_one(m, f, out, *args, client)
    except CellmapsInputError as exc:
        return exc


def stacked_groups(
    files: list[tuple[int, Path]], size: int, stream_above: int | None
) -> list[list[tuple[int, Path]]]:
    """``files`` (index, path) in order, cut into the groups a run predicts together:
    consecutive images of at most :data:`STACK_MAX_PIXELS` pixels (read from the header),
    up to ``size`` per group (their tiles stacked, :func:`_predict_stacked`); any other file
    (a slide, a large or unreadable image) alone."""
    groups: list[list[tuple[int, Path]]] = []
    run: list[tuple[int, Path]] = []
    for item in files:
        if size > 1 and _stackable(item[1], stream_above):
            run.append(item)
            if len(run) == size:
                groups.append(run)
                run = []
            continue
        if run:
            groups.append(run)
            run = []
        groups.append([item])
    if run:
        groups.append(run)
    return groups


def _stackable(f: Path, stream_above: int | None) -> bool:
    """Whether ``f`` is an image read whole and small enough to be stacked with others
    (unreadable files are not: they are reported on their own)."""
    try:
        if is_large_tiff(f, stream_above or DEFAULT_STREAM_ABOVE):
            return False
        h, w = image_shape(f)
    except (CellmapsInputError, OSError, ValueError):
        return False
    return h * w <= STACK_MAX_PIXELS


def _run_batch(
    m,
    out: Path,
    files: list[Path],
    record: dict,
    args: tuple,
    *,
    overwrite: bool,
    resume: bool,
    progress: bool,
    regions,
    write_tables,
    skip_bad: bool,
    workers: int | None,
    scheduler: str | None,
) -> list[dict]:
    """The body of :func:`predict_paths` once the output folder is locked; ``args`` is what
    :func:`_predict_one` takes after the model, file and folder."""
    masks, slides = args[1], args[-1]
    stream_above = slides["stream_above"]
    owned = planned_outputs(out, [f.stem for f in files], masks, slides["parquet"])
    out = start_run(out, record, overwrite, resume, owned)
    labels = model_labels(m)
    previous_inputs = finished_inputs(out) if resume else {}
    prints: dict[int, dict] = {}  # file index → input fingerprint, taken before predicting
    done: dict[int, dict] = {}  # file index → row; tables list them in file order
    rows: list[dict] = []
    in_regions: dict[int, list[dict]] = {}

    def finished(i: int, f: Path, counts: dict) -> None:
        if i in prints:
            record_finished_input(out, f.stem, prints.pop(i))
        done[i] = {"id": f.stem, "count": sum(counts.values()), **counts}
        rows[:] = [done[k] for k in sorted(done)]
        write_counts(out, rows, labels)
        if write_tables is not None:
            write_tables(out, rows)
        polygons = read_regions(regions, f.stem)
        if polygons:
            pts = read_points(out / "points" / f"{f.stem}.csv")
            in_regions[i] = [{"id": f.stem, **r} for r in region_counts(pts, polygons)]
            write_regions(out, [r for k in sorted(in_regions) for r in in_regions[k]])

    skipped: list[list[str]] = []

    def failed(f: Path, exc: CellmapsInputError) -> None:
        if not skip_bad:
            raise exc
        skipped.append([f.stem, str(f), exc.problem])
        tqdm.write(f"skipped {f}: {exc.problem}")

    with cluster_client(workers, scheduler) as client, stop_between_images() as stop:
        todo = []
        for i, f in enumerate(files):
            if resume and is_complete(out, f.stem, masks):
                fingerprint = input_fingerprint(f)
                if previous_inputs.get(f.stem) == fingerprint:  # unchanged: its outputs stand
                    finished(i, f, label_counts(read_points(out / "points" / f"{f.stem}.csv")))
                    continue
                prints[i] = fingerprint
                tqdm.write(
                    f"{f.name} changed since its outputs were written (or they were not "
                    "recorded as this run's); predicting it again"
                )
            todo.append((i, f))
        bar = tqdm(total=len(files), initial=len(done), desc="predict", unit="img",
                   disable=not progress)  # fmt: skip
        pending = {}
        if client is not None:  # ordinary images as tasks; slides are split into bands below
            model_f = client.scatter(m, broadcast=True)
            for i, f in todo:
                if not is_large_tiff(f, stream_above or DEFAULT_STREAM_ABOVE):
                    prints.setdefault(i, input_fingerprint(f))
                    fut = client.submit(_predict_one, model_f, f, out, *args, pure=False, retries=2)
                    pending[fut] = (i, f)
        serial = [(i, f) for i, f in todo if (i, f) not in pending.values()]
        stack = STACK_IMAGES if client is None else 1
        for group in stacked_groups(serial, stack, stream_above):
            if stop.is_set():  # counts.csv already holds every finished image
                raise BatchInterrupted(len(rows), len(files), out)
            for i, f in group:
                prints.setdefault(i, input_fingerprint(f))
            if len(group) > 1:
                results = _predict_stacked(m, [f for _, f in group], out, *args)
            else:
                results = iter([_predict_or_error(m, group[0][1], out, args, client)])
            for k, (i, f) in enumerate(group):
                if k and stop.is_set():  # the group's later images are not written
                    raise BatchInterrupted(len(rows), len(files), out)
                result = next(results)
                if isinstance(result, CellmapsInputError):
                    failed(f, result)
                else:
                    finished(i, f, result)
                bar.update(1)
        if pending:
            # imported here: distributed is optional (cellmaps[cluster]), and pending is
            # only non-empty with a cluster client
            from distributed import as_completed

            for fut in as_completed(list(pending)):
                i, f = pending[fut]
                if stop.is_set():
                    client.cancel(list(pending))
                    raise BatchInterrupted(len(rows), len(files), out)
                try:
                    finished(i, f, fut.result())
                except CellmapsInputError as exc:
                    failed(f, exc)
                bar.update(1)
        bar.close()
    write_counts(out, rows, labels)
    if write_tables is not None:
        write_tables(out, rows)
    if skipped:
        write_csv_atomic(out / SKIPPED_FILE, ["id", "file", "problem"], skipped)
        print(
            f"skipped {len(skipped)} image(s) that could not be processed; see {out / SKIPPED_FILE}"
        )
    return rows
