"""Training data: images and their target maps in memory, random crops, augmentation."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from cellmaps.errors import CellmapsInputError
from cellmaps.inference import tile_starts
from cellmaps.io.dataset import Dataset
from cellmaps.io.images import normalize_image
from cellmaps.io.points import UNCLASSIFIED_LABELS
from cellmaps.io.scale import (
    base_image,
    mask_object_radii,
    median_object_radius,
    rescale_image,
    rescale_labels,
    scale_factor,
    standardize,
    to_scaled_coords,
)
from cellmaps.targets import IGNORE_INDEX, TARGETS, Annotations, available_targets, make_targets
from cellmaps.training.augment import (
    acquisition_jitter,
    color_jitter,
    empty_image,
    flip_rot,
    geometric_margin,
    sample_coords,
    stain_jitter,
    warp,
)


@dataclass
class Sample:
    image_id: str
    image: np.ndarray  # (C, H, W) float32 in [0, 1] (normalised by dtype), not standardised
    targets: dict[str, np.ndarray]  # name -> (C, H, W) float32 or (1, H, W) uint8 labels
    weight: float = 1.0
    # target maps this image's annotations cannot give (e.g. nucleus proximity for an image
    # with only an ROI, KiNet Eq. 5): stored as blank maps, and their loss is zeroed
    missing: frozenset[str] = frozenset()


@dataclass
class TrainingData:
    """Images of one or more datasets with their targets, ready to crop.

    ``weight`` per dataset multiplies the loss of its samples (MicroNet's dataset
    balancing L = γ·L_target + L_auxiliary with γ the target's weight).
    """

    samples: list[Sample]
    tasks: list[dict]
    classes: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    # median object radius (px): per source folder in its own pixels, and in the net's
    object_sizes: list[dict] = field(default_factory=list)
    train_radius: float | None = None  # median object radius in the net's pixels

    @property
    def in_channels(self) -> int:
        return self.samples[0].image.shape[0]


# targets that take the list of classes (fixed over the whole training set)
CLASS_AWARE_TARGETS = ("proximity_per_class", "known_class_weights")


def task_target_names(task: dict) -> list[str]:
    names = [task["target"]]
    if task.get("weights_map"):
        names.append(task["weights_map"])
    return names


def _classes_of(ds_list: list[tuple[Dataset, list[str], float]]) -> list[str]:

    found = set()
    for ds, ids, _ in ds_list:
        for i in ids:
            p = ds.points(i)
            if p is not None:
                found |= {str(x) for x in p.labels} - UNCLASSIFIED_LABELS
    return sorted(found)


def recipe_reads_masks(recipe: dict) -> bool:
    """Whether any of the recipe's target maps needs instance masks. Recipes that learn
    from points never open a mask file (the weakly supervised recipe's promise), except to
    take centres from masks where an image has no points."""
    names = [n for t in recipe["tasks"] for n in task_target_names(t)]
    return any(TARGETS[n].needs == "mask" for n in names if n in TARGETS)


def measure_object_size(ds: Dataset, ids: list[str], use_masks: bool = True) -> tuple[float, str]:
    """Median object radius (px) of a dataset's images: from their instance masks (unless
    ``use_masks`` is False), else from half the nearest-neighbour spacing of their points
    (see :func:`cellmaps.io.scale.median_object_radius`)."""
    if use_masks or not all(ds.has("points", i) for i in ids):
        masks = [ds.mask(i) for i in ids]
        if any(m is not None for m in masks):
            return median_object_radius(masks=masks)
    pts = [ds.points(i) for i in ids]
    return median_object_radius(points=[p.coords for p in pts if p is not None])


def source_scales(
    opened: list[tuple[Dataset, list[str], float]],
    canonical: float | None,
    sizes: list[float | None] | None = None,
    use_masks: bool = True,
) -> list[dict]:
    """Per source: its measured (or given) median object radius and the factor that
    brings it to the ``canonical`` radius (1 without one); ``use_masks`` False measures
    from points wherever every image has them."""
    out = []
    for k, (ds, ids, _) in enumerate(opened):
        given = sizes[k] if sizes and k < len(sizes) else None
        if given is not None:
            scale_factor(1.0, float(given))  # refuses sizes that are not positive
            radius, how = float(given), "given"
        else:
            try:
                radius, how = measure_object_size(ds, ids, use_masks)
            except CellmapsInputError as exc:
                if canonical is not None:  # resampling needs the size
                    raise CellmapsInputError(exc.problem, ds.root) from exc
                radius, how = None, "unknown"
        factor = 1.0 if canonical is None else scale_factor(canonical, radius)
        out.append(
            {"folder": str(ds.root), "radius": radius, "measured_from": how, "factor": factor}
        )
    return out


def rescaled_annotations(a: Annotations, factor: float) -> Annotations:
    """Image and annotations resampled by ``factor`` (image bilinear/area, masks and ROIs
    nearest, points moved to the new pixel grid); the image becomes float32 in [0, 1]."""
    if factor == 1.0:
        return a

    img = rescale_image(normalize_image(a.image, a.source), factor)
    shape = a.shape
    pts = None if a.points is None else to_scaled_coords(a.points, shape, img.shape[:2])
    if pts is not None:  # keep points inside the new grid after rounding of the size
        pts = np.clip(pts, -0.5, np.array(img.shape[:2]) - 0.5 - 1e-6)
    return Annotations(
        image=img,
        points=pts,
        labels=a.labels,
        mask=rescale_labels(a.mask, factor),
        roi=rescale_labels(a.roi, factor),
        source=a.source,
    )


#: fewest objects an image needs for its own median radius (``training.object_scale: image``);
#: images with fewer keep their source's factor
MIN_OBJECTS_FOR_IMAGE_SCALE = 3


def image_object_radius(mask: np.ndarray | None, points: np.ndarray | None) -> float | None:
    """One image's median object radius (px): from its instance mask, else from half the
    lower-quartile nearest-neighbour spacing of its points (the rule of
    :func:`cellmaps.io.scale.median_object_radius`); None with fewer than
    :data:`MIN_OBJECTS_FOR_IMAGE_SCALE` objects."""
    if mask is not None:
        radii = mask_object_radii(mask)
        if len(radii) >= MIN_OBJECTS_FOR_IMAGE_SCALE:
            return float(np.median(radii))
    if points is not None and len(points) >= MIN_OBJECTS_FOR_IMAGE_SCALE:
        return median_object_radius(points=[np.asarray(points)])[0]
    return None


def image_scale_factor(a: Annotations, canonical: float, source_factor: float) -> float:
    """Factor that brings this image's own median object radius to ``canonical`` px
    (``training.object_scale: image``: a set whose images were taken at different
    magnifications, e.g. DSB 2018 with nucleus radii of 4-47 px, is trained at one object
    size per image, not per set); ``source_factor`` when the image has too few objects."""
    radius = image_object_radius(a.mask, a.points)
    return source_factor if radius is None else scale_factor(canonical, radius)


def subsample_ids(ids: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded share of the image ids (at least one), in their original order: the
    "fraction of the target images" of MicroNet's fine-tuning and mixing studies."""
    if not 0.0 < fraction <= 1.0:
        raise CellmapsInputError(f"a data fraction must be in (0, 1], got {fraction}")
    n = max(1, int(round(fraction * len(ids))))
    keep = set(np.random.default_rng(seed).permutation(len(ids))[:n].tolist())
    return [i for k, i in enumerate(ids) if k in keep]


def load_training_data(
    sources: list[tuple[str, str | None, float]],
    recipe: dict,
    progress: bool = True,
    classes: list[str] | None = None,
    object_sizes: list[float | None] | None = None,
    scales: list[dict] | None = None,
) -> TrainingData:
    """Read every image of the given (dataset folder, split, weight[, fraction]) sources and
    compute the recipe's target maps once. A fraction below 1 keeps a seeded share of the
    source's images (:func:`subsample_ids`, seed ``training.seed``).

    With ``training.train_radius`` in the recipe, each source's images and annotations are
    resampled so its median object radius (measured, or given in ``object_sizes``) becomes
    that size before the targets are computed; with ``training.object_scale: image`` each
    image is brought there from its own radius instead (:func:`image_scale_factor`).
    ``scales`` reuses the factors of another call (validation data resampled like the
    training data)."""
    opened = []
    for root, split, weight, *share in sources:
        ds = Dataset(root)
        ids = ds.ids(split) if split else ds.ids()
        if not ids:
            raise CellmapsInputError(f"no images in split {split!r}", root)
        if share and share[0] < 1.0:
            ids = subsample_ids(ids, share[0], recipe["training"]["seed"])
        opened.append((ds, ids, float(weight)))
    canonical = recipe["training"]["train_radius"]
    per_image = recipe["training"]["object_scale"] == "image"
    reads_masks = recipe_reads_masks(recipe)
    if scales is None:
        scales = source_scales(opened, canonical, object_sizes, reads_masks)
    tasks = recipe["tasks"]
    per_class = any(t["target"] == "proximity_per_class" for t in tasks)
    classes = classes if classes is not None else (_classes_of(opened) if per_class else [])
    samples = []
    unusable = 0  # images without any annotation the recipe's tasks can use
    first_unusable = None  # (annotations, options, names) of the first, for the message
    total = sum(len(ids) for _, ids, _ in opened)
    bar = tqdm(total=total, desc="targets", unit="img", disable=not progress, leave=False)
    for (ds, ids, weight), sc in zip(opened, scales, strict=True):
        for image_id in ids:
            raw = ds.image(image_id)
            shape = raw.shape[:2]
            pts = ds.points(image_id, shape)
            a = Annotations(
                image=raw,
                points=None if pts is None else pts.coords,
                labels=None if pts is None else pts.labels,
                mask=ds.mask(image_id, shape) if reads_masks or pts is None else None,
                roi=ds.roi(image_id),
                source=str(ds.image_path(image_id)),
            )
            factor = sc["factor"]
            if per_image and canonical is not None:
                factor = image_scale_factor(a, canonical, factor)
            a = rescaled_annotations(a, factor)
            opts = {}
            names = []
            for t in tasks:
                names += task_target_names(t)
                opts[t["target"]] = dict(t["target_options"])
                if t.get("weights_map"):
                    opts[t["weights_map"]] = dict(t.get("weights_map_options") or {})
                for name in task_target_names(t):
                    if name in CLASS_AWARE_TARGETS:
                        opts.setdefault(name, {})["classes"] = classes
            maps, missing = _targets_or_blanks(list(dict.fromkeys(names)), a, opts, tasks)
            if maps is None:
                unusable += 1
                first_unusable = first_unusable or (a, opts, names)
                bar.update()
                continue
            img = base_image(
                a.image,
                recipe["training"]["hist_eq"],
                source=a.source,
                intensity=recipe["training"]["intensity"],
            )
            targets = {}
            for name, m in maps.items():
                m = m[None] if m.ndim == 2 else m
                targets[name] = m if TARGETS[name].kind == "labels" else m.astype(np.float32)
            samples.append(Sample(image_id, img, targets, weight, frozenset(missing)))
            bar.update()
    bar.close()
    if not samples:
        a, opts, names = first_unusable
        make_targets(names, a, opts)  # raises, naming what the tasks need and the file
    if unusable:
        warnings.warn(
            f"{unusable} of {total} images have no annotation any task can use "
            f"(e.g. {first_unusable[0].source}); they are left out",
            stacklevel=2,
        )
    chans = {s.image.shape[0] for s in samples}
    if len(chans) > 1:
        raise CellmapsInputError(f"training images have different channel counts {sorted(chans)}")
    data = TrainingData(samples, tasks, classes, object_sizes=scales)
    if scales[0]["radius"] is not None:
        data.train_radius = scales[0]["radius"] * scales[0]["factor"]
    stack = np.concatenate([s.image.reshape(s.image.shape[0], -1) for s in samples], axis=1)
    data.mean = stack.mean(1).astype(np.float32)
    data.std = np.maximum(stack.std(1), 1e-6).astype(np.float32)
    return data


def _targets_or_blanks(
    names: list[str], a: Annotations, opts: dict, tasks: list[dict]
) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    """The named target maps; maps the annotations cannot give become blank maps (listed
    second) so that an image with, say, only an ROI still trains its other tasks (KiNet
    Eq. 5: 1(y ≠ ∅)·L_NI). Maps are None when the image can give none of them."""
    have = set(available_targets(a))
    missing = [n for n in names if n not in have]
    if len(missing) == len(names):
        return None, missing
    maps = make_targets([n for n in names if n in have], a, opts)
    channels = {t["target"]: t["channels"] for t in tasks}
    for name in missing:
        kind = TARGETS[name].kind
        c = channels.get(name, 1) if kind == "regression" else 1
        if name == "proximity_per_class":
            c = len(opts[name]["classes"])
        if kind == "labels":
            maps[name] = np.full(a.shape, blank_value(name), np.uint8)
        else:
            maps[name] = np.full((c, *a.shape) if c > 1 else a.shape, blank_value(name), np.float32)
    return maps, missing


def blank_value(name: str) -> float:
    """What a target map holds where it says nothing is there: the ignore value for label
    maps (their background class is recipe-specific), 1 for pixel-weight maps (every pixel
    counts) and 0 for the rest."""
    kind = TARGETS[name].kind
    return IGNORE_INDEX if kind == "labels" else 1.0 if kind == "weights" else 0.0


def _window(arr: np.ndarray, r0: int, c0: int, size: int, fill) -> np.ndarray:
    """(C, size, size) window starting at (r0, c0), padded where it leaves the array
    (reflect for images, ``fill`` for targets)."""
    c, h, w = arr.shape
    out_r = slice(max(r0, 0), min(r0 + size, h))
    out_c = slice(max(c0, 0), min(c0 + size, w))
    sub = arr[:, out_r, out_c]
    pad = (
        (0, 0),
        (out_r.start - r0, r0 + size - out_r.stop),
        (out_c.start - c0, c0 + size - out_c.stop),
    )
    if any(p for pair in pad for p in pair):
        if fill == "reflect":
            sub = np.pad(sub, pad, mode="reflect" if min(sub.shape[1:]) > 1 else "edge")
            if sub.shape[1:] != (size, size):  # reflect cannot pad past twice the size
                sub = np.pad(
                    sub, ((0, 0), (0, size - sub.shape[1]), (0, size - sub.shape[2])), mode="wrap"
                )
        else:
            sub = np.pad(sub, pad, mode="constant", constant_values=fill)
    return sub


def tile_origins(data: TrainingData, crop: int, stride: int) -> list[tuple[int, int, int]]:
    """(sample index, row, col) of every crop-sized tile cut at ``stride`` (DeepDistance:
    512×512 tiles at stride 256); the last tile of a row/column ends at the image edge."""
    out = []
    for k, s in enumerate(data.samples):
        _, h, w = s.image.shape
        out += [
            (k, r, c) for r in tile_starts(h, crop, stride) for c in tile_starts(w, crop, stride)
        ]
    return out


def random_crop(
    sample: Sample,
    rng: np.random.Generator,
    crop: int,
    aug: dict,
    origin: tuple[int, int] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A crop of a sample (at a random place, or at ``origin``) with augmentation applied
    to image and targets alike."""
    margin = geometric_margin(crop, aug)
    size = crop + 2 * margin
    _, h, w = sample.image.shape
    if origin is None:
        origin = (
            int(rng.integers(min(0, h - crop), max(h - crop, 0) + 1)),
            int(rng.integers(min(0, w - crop), max(w - crop, 0) + 1)),
        )
    r0, c0 = origin[0] - margin, origin[1] - margin
    coords = sample_coords(rng, crop, margin, aug)
    img = warp(_window(sample.image, r0, c0, size, "reflect"), coords, 1)
    names = list(sample.targets)
    maps = []
    for name in names:
        t = sample.targets[name]
        is_label = t.dtype == np.uint8
        win = _window(t, r0, c0, size, IGNORE_INDEX if is_label else 0)
        maps.append(warp(win, coords, 0 if is_label else 1))
    arrs = flip_rot([img, *maps], rng, aug)
    img = stain_jitter(arrs[0], rng, aug["stain"], aug["stain_offset"])
    img = acquisition_jitter(img, rng, aug)
    img = color_jitter(img, rng, aug["color"])
    return img, dict(zip(names, arrs[1:], strict=True))


def empty_crop(
    sample: Sample, rng: np.random.Generator, crop: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A negative example shaped like ``sample``'s crops: an image with nothing in it
    (:func:`~cellmaps.training.augment.empty_image`) and targets that say so
    (:func:`blank_value`; a weight map filled with 0, as before, made KiNet's proximity loss
    ignore its empty crops — the Ki67 model trained with 30 % of them still peaked on noise)."""
    img = empty_image(rng, sample.image.shape[0], crop)
    maps = {}
    for name, t in sample.targets.items():
        maps[name] = np.full((t.shape[0], crop, crop), blank_value(name), t.dtype)
    return img, maps


def make_batch(
    data: TrainingData,
    rng: np.random.Generator,
    batch: int,
    crop: int,
    aug: dict,
    tiles: list[tuple[int, int, int]] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """A batch of crops: standardised images, targets, per-sample weights and, per target,
    which samples have it (1) or lack the annotation for it (0). Random crops of randomly
    chosen images, or randomly chosen ``tiles`` from :func:`tile_origins`."""
    if tiles:
        picks = [tiles[int(i)] for i in rng.integers(len(tiles), size=batch)]
    else:
        picks = [(int(i), None, None) for i in rng.integers(len(data.samples), size=batch)]
    imgs, targets, weights = [], {}, []
    for i, r, c in picks:
        s = data.samples[i]
        if aug["empty"] and rng.random() < aug["empty"]:
            img, maps = empty_crop(s, rng, crop)
        else:
            img, maps = random_crop(s, rng, crop, aug, None if r is None else (r, c))
        imgs.append(standardize(img, data.mean, data.std))
        for k, v in maps.items():
            targets.setdefault(k, []).append(v)
        weights.append(s.weight)
    x = torch.from_numpy(np.stack(imgs).astype(np.float32))
    t = {k: torch.from_numpy(np.stack(v)) for k, v in targets.items()}
    present = {
        k: torch.tensor([float(k not in data.samples[i].missing) for i, _, _ in picks])
        for k in targets
    }
    return x, t, torch.tensor(weights, dtype=torch.float32), present
