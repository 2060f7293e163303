"""``cellmaps targets``: draw an image and every target map its annotations allow, in one PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cellmaps.io._atomic import atomic_path
from cellmaps.io.images import read_image, to_uint8_rgb
from cellmaps.io.masks import read_mask, read_roi
from cellmaps.io.points import read_points
from cellmaps.targets._common import IGNORE_INDEX
from cellmaps.targets.build import TARGETS, Annotations, available_targets, make_targets


def load_annotations(
    image: str | os.PathLike,
    points: str | os.PathLike | None = None,
    mask: str | os.PathLike | None = None,
    roi: str | os.PathLike | None = None,
) -> Annotations:
    """Read an image and its annotation files (each checked against the image shape)."""
    img = read_image(image)
    shape = img.shape[:2]
    pts = read_points(points, shape) if points else None
    return Annotations(
        image=img,
        points=None if pts is None else pts.coords,
        labels=None if pts is None else pts.labels,
        mask=read_mask(mask, shape) if mask else None,
        roi=read_roi(roi, shape) if roi else None,
        source=str(image),
    )


def _panels(a: Annotations, maps: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, str]]:
    """(title, 2-D array, kind) per subplot; per-class maps get one subplot per class."""
    out = []
    for name, arr in maps.items():
        spec = TARGETS[name]
        if arr.ndim == 3:
            for cls, channel in zip(a.classes(), arr, strict=True):
                out.append((f"{spec.title}: {cls}", channel, spec.kind))
        else:
            out.append((spec.title, arr, spec.kind))
    return out


def draw_target_panel(
    a: Annotations, path: str | os.PathLike, names: list[str] | None = None
) -> list[str]:
    """Compute the maps (all available ones by default) and save a labelled panel PNG.

    Label maps are drawn black (0 = background), white (1 = nucleus/class 1) and mid-grey
    (ignore); regression and weight maps with a colour bar. Returns the map names drawn.
    """
    # imported here: matplotlib (Agg backend) is needed only for this plot and slows start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or available_targets(a)
    maps = make_targets(names, a)
    panels = _panels(a, maps)
    n = len(panels) + 1
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    ax = axes.flat[0]
    ax.imshow(to_uint8_rgb(a.image))
    pts = a.centres()
    if pts is not None and len(pts):
        ax.plot(pts[:, 1], pts[:, 0], "+", color="yellow", ms=4, mew=0.8)
    ax.set_title("image + points" if pts is not None else "image", fontsize=9)
    for ax, (title, arr, kind) in zip(axes.flat[1:], panels, strict=False):
        if kind == "labels":
            shown = np.where(arr == IGNORE_INDEX, 0.5, np.minimum(arr, 1)).astype(float)
            im = ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            title += " (grey = ignore)"
        else:
            im = ax.imshow(
                arr, cmap="magma" if kind != "binary" else "gray", interpolation="nearest"
            )
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(Path(a.source).name, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return names
