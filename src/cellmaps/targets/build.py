"""Which maps an image's annotations allow, and computing them by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io.masks import mask_centroids
from cellmaps.io.points import UNCLASSIFIED_LABELS
from cellmaps.targets.distance import boundary, foreground, inner_distance, outer_distance
from cellmaps.targets.proximity import (
    known_class_weights,
    proximity,
    proximity_per_class,
    repel_code,
)
from cellmaps.targets.roi import roi_labels
from cellmaps.targets.separation import separation, separation_weights, unet_weight_map
from cellmaps.targets.weak import (
    cluster_labels,
    filtered_repel,
    mask_filtered_repel,
    mask_labels,
    voronoi_labels,
)


@dataclass
class Annotations:
    """What is known about one image: the image, and any of points (+ labels), mask, ROI."""

    image: np.ndarray
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    roi: np.ndarray | None = None
    source: str = "image"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.asarray(self.image).shape[:2])

    def centres(self) -> np.ndarray | None:
        """Points, or the mask's centroids when only a mask is given."""
        if self.points is not None:
            return self.points
        if self.mask is not None:
            return mask_centroids(self.mask)[0]
        return None

    def crop(self, r0: int, c0: int, h: int, w: int) -> Annotations:
        """Annotations of the window [r0, r0+h) × [c0, c0+w); points shifted, outside dropped."""
        sl = (slice(r0, r0 + h), slice(c0, c0 + w))
        pts, labels = self.points, self.labels
        if pts is not None:
            keep = (
                (pts[:, 0] >= r0 - 0.5)
                & (pts[:, 0] < r0 + h - 0.5)
                & (pts[:, 1] >= c0 - 0.5)
                & (pts[:, 1] < c0 + w - 0.5)
            )
            pts = pts[keep] - [r0, c0]
            labels = None if labels is None else labels[keep]
        return Annotations(
            image=np.asarray(self.image)[sl],
            points=pts,
            labels=labels,
            mask=None if self.mask is None else self.mask[sl],
            roi=None if self.roi is None else self.roi[sl],
            source=self.source,
        )

    def classes(self) -> list[str]:
        if self.labels is None:
            return []
        return sorted({str(x) for x in self.labels} - UNCLASSIFIED_LABELS)


@dataclass(frozen=True)
class TargetSpec:
    name: str
    needs: str  # "mask", "points" (points or mask centroids), "classes", "roi"
    kind: str  # "regression", "labels" (uint8 with ignore 255), "weights", "binary"
    make: Callable[..., np.ndarray]
    title: str


def _pts(a: Annotations) -> np.ndarray:
    return a.centres()


TARGETS: dict[str, TargetSpec] = {
    s.name: s
    for s in [
        TargetSpec(
            "inner_distance",
            "mask",
            "regression",
            lambda a, **o: inner_distance(a.mask, **o),
            "inner distance (DeepDistance Eq. 1)",
        ),
        TargetSpec(
            "outer_distance",
            "mask",
            "regression",
            lambda a, **o: outer_distance(a.mask, **o),
            "outer distance (DeepDistance Eq. 2)",
        ),
        TargetSpec(
            "foreground",
            "mask",
            "binary",
            lambda a, **o: foreground(a.mask, **o),
            "cell pixels, boundaries subtracted",
        ),
        TargetSpec(
            "boundary", "mask", "binary", lambda a, **o: boundary(a.mask, **o), "cell boundary"
        ),
        TargetSpec(
            "separation",
            "mask",
            "binary",
            lambda a, **o: separation(a.mask, **o),
            "separation (DeepSplit)",
        ),
        TargetSpec(
            "unet_weight_map",
            "mask",
            "weights",
            lambda a, **o: unet_weight_map(a.mask, **o),
            "U-Net weight map (DeepSplit Eq. 1)",
        ),
        TargetSpec(
            "separation_weights",
            "mask",
            "weights",
            lambda a, **o: separation_weights(a.mask, **o),
            "separation weights 1/5/22.6",
        ),
        TargetSpec(
            "proximity",
            "points",
            "regression",
            lambda a, **o: proximity(_pts(a), a.shape, **o),
            "proximity (KiNet/MicroNet Eq. 1)",
        ),
        TargetSpec(
            "proximity_per_class",
            "classes",
            "regression",
            lambda a, classes=None, **o: proximity_per_class(
                a.points, a.labels, classes or a.classes(), a.shape, **o
            ),
            "proximity per class (KiNet)",
        ),
        TargetSpec(
            "known_class_weights",
            "classes",
            "weights",
            lambda a, classes=None, **o: known_class_weights(
                a.points, a.labels, classes or a.classes(), a.shape, **o
            ),
            "0 around nuclei of unknown class",
        ),
        TargetSpec(
            "repel_code",
            "points",
            "regression",
            lambda a, **o: repel_code(_pts(a), a.shape, **o),
            "repel code (Liang et al.)",
        ),
        TargetSpec(
            "voronoi_labels",
            "points",
            "labels",
            lambda a, **o: voronoi_labels(_pts(a), a.shape, **o),
            "Voronoi labels",
        ),
        TargetSpec(
            "cluster_labels",
            "points",
            "labels",
            lambda a, **o: cluster_labels(a.image, _pts(a), **o),
            "local k-means clusters",
        ),
        TargetSpec(
            "filtered_repel",
            "points",
            "regression",
            lambda a, **o: filtered_repel(a.image, _pts(a), **o),
            "filtered repel",
        ),
        TargetSpec(
            "mask_labels",
            "mask",
            "labels",
            lambda a, **o: mask_labels(a.mask),
            "nucleus / background from masks",
        ),
        TargetSpec(
            "mask_filtered_repel",
            "mask",
            "regression",
            lambda a, **o: mask_filtered_repel(a.mask, _pts(a), **o),
            "repel code on mask pixels",
        ),
        TargetSpec(
            "roi_labels",
            "roi",
            "labels",
            lambda a, **o: roi_labels(a.roi, **o),
            "ROI labels (KiNet)",
        ),
    ]
}


def available_targets(a: Annotations) -> list[str]:
    """Names of the maps these annotations allow, in registry order."""
    have = {
        "mask": a.mask is not None,
        "points": a.centres() is not None,
        "classes": a.points is not None and bool(a.classes()),
        "roi": a.roi is not None,
    }
    return [name for name, spec in TARGETS.items() if have[spec.needs]]


def make_targets(
    names: Sequence[str], a: Annotations, options: dict[str, dict] | None = None
) -> dict[str, np.ndarray]:
    """Compute the named maps (``options[name]`` are keyword arguments of its function);
    a clear error names what a map needs when it is missing."""
    options = options or {}
    out = {}
    allowed = set(available_targets(a))
    for name in names:
        if name not in TARGETS:
            raise CellmapsInputError(f"unknown target map {name!r}; known: {sorted(TARGETS)}")
        if name not in allowed:
            need = {
                "mask": "instance masks",
                "points": "points or masks",
                "classes": "points with class labels",
                "roi": "an ROI mask",
            }[TARGETS[name].needs]
            have = [k for k in ("points", "mask", "roi") if getattr(a, k) is not None]
            found = f"only {', '.join(have)} exist" if have else "the image has no annotation"
            raise CellmapsInputError(f"map {name!r} needs {need}, but {found}", a.source)
        out[name] = TARGETS[name].make(a, **options.get(name, {}))
    return out
