"""``cellmaps crosseval``: MicroNet's cross-dataset study (seed micronet.md §IV, Fig. 4) — one
model per dataset, each scored on every dataset's test split.

The matrix (rows: trained on, columns: tested on; pooled detection F1 with the recipe's
radius, ``radius``, or one radius per test set) is written as JSON, CSV and a heat-map PNG,
with the mean of the diagonal (same source) and of the off-diagonal cells (other sources).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellmaps.errors import CellmapsInputError
from cellmaps.io._atomic import atomic_path, write_csv_atomic, write_text_atomic
from cellmaps.io.dataset import Dataset, link_dataset
from cellmaps.model import Model
from cellmaps.training import train
from cellmaps.tune import score_split


def dataset_names(folders: list[str | os.PathLike]) -> list[str]:
    """Folder names as row/column labels; refused when two folders share a name."""
    names = [Path(f).resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise CellmapsInputError(f"dataset folders must have different names, got {names}")
    return names


def check_splits(folder: str | os.PathLike) -> str | None:
    """The split that tunes a model trained on ``folder``: 'val' when the dataset has one,
    else 'train' (said in the result). Refuses folders without train and test splits."""
    ds = Dataset(folder)
    splits = {v[0] for v in ds.splits.values()}
    missing = {"train", "test"} - splits
    if missing:
        raise CellmapsInputError(
            f"cross-evaluation needs train and test splits in splits.csv; missing {sorted(missing)}",
            folder,
        )
    return "val" if "val" in splits else "train"


def group_folders(
    folders: list[str | os.PathLike], out: str | os.PathLike
) -> tuple[list[Path], dict[str, str]]:
    """One dataset per group of each folder's splits.csv (e.g. MoNuSeg's organs): folders of
    symlinks under ``out/groups/`` holding that group's rows (named by the group, or
    ``<folder>-<group>`` when several folders are given). Groups without both train and
    test images are left out and returned with the reason."""
    made, skipped = [], {}
    for folder in folders:
        ds = Dataset(folder)
        groups: dict[str, list[tuple[str, str]]] = {}
        for image_id, (split, group) in sorted(ds.splits.items()):
            if not group:
                raise CellmapsInputError(
                    f"--by-group needs a group column in splits.csv ({image_id} has none)", folder
                )
            groups.setdefault(group, []).append((image_id, split))
        for group, members in groups.items():
            name = group if len(folders) == 1 else f"{Path(folder).resolve().name}-{group}"
            missing = {"train", "test"} - {split for _, split in members}
            if missing:
                skipped[name] = f"no {' or '.join(sorted(missing))} images"
                continue
            rows = [f"{i},{split},{group}" for i, split in members]
            made.append(link_dataset(folder, Path(out) / "groups" / name, rows))
    if len(made) < 2:
        raise CellmapsInputError(
            f"--by-group needs two or more groups with train and test images; skipped {skipped}"
        )
    return made, skipped


def summarise(matrix: np.ndarray) -> dict:
    """Mean F1 on the diagonal (tested on its own source) and off it (other sources)."""
    n = matrix.shape[0]
    off = matrix[~np.eye(n, dtype=bool)]
    return {
        "same_source_mean": float(np.mean(np.diag(matrix))),
        "other_source_mean": float(np.mean(off)) if off.size else float("nan"),
    }


def radii_per_test_set(radius: float | Sequence[float] | None, n: int) -> list[float | None]:
    """The matching radius of each of ``n`` test sets: one value (or None: the recipe's) for
    all, or one per dataset in the order given (datasets at different magnifications)."""
    if radius is None or isinstance(radius, int | float):
        return [radius] * n
    radii = [float(r) for r in radius]
    if len(radii) == 1:
        return radii * n
    if len(radii) != n:
        raise CellmapsInputError(
            f"give one radius for all datasets or one per dataset ({n}), got {len(radii)}"
        )
    return radii


def cross_evaluate(
    recipe: dict,
    folders: list[str | os.PathLike],
    out: str | os.PathLike,
    radius: float | Sequence[float] | None = None,
    progress: bool = True,
    skipped: dict[str, str] | None = None,
) -> dict:
    """Train ``recipe`` on each folder's train split (models kept in ``out/models/``; an
    existing model there is reused, and a stopped training resumes from its checkpoint),
    score every model on every folder's test split and write ``out/crosseval.json``,
    ``crosseval.csv`` and ``crosseval.png``. Returns the result (``skipped``: groups left
    out by :func:`group_folders` and why, recorded as ``left_out``)."""
    names = dataset_names(folders)
    radii = radii_per_test_set(radius, len(folders))
    tune_splits = [check_splits(f) for f in folders]
    out = Path(out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    models = {}
    for name, folder, tune_split in zip(names, folders, tune_splits, strict=True):
        path = out / "models" / f"{name}.safetensors"
        if path.is_file():
            models[name] = Model.load(path)
            continue
        ckpt = path.with_name(path.name + ".ckpt")
        models[name] = train(
            recipe,
            [(str(folder), "train", 1.0)],
            path,
            [(str(folder), tune_split)],
            resume=ckpt.is_file(),
            progress=progress,
        )
    matrix = np.zeros((len(names), len(names)))
    cells = []
    for i, trained_on in enumerate(names):
        for j, (tested_on, folder) in enumerate(zip(names, folders, strict=True)):
            r = score_split(models[trained_on], folder, "test", radii[j])
            matrix[i, j] = r["f1"]
            cells.append({"trained_on": trained_on, "tested_on": tested_on, **r})
    result = {
        "recipe": recipe["name"],
        "datasets": names,
        "folders": [str(f) for f in folders],
        "tuned_on": dict(zip(names, tune_splits, strict=True)),
        "radius": radii,
        "left_out": skipped or {},
        "f1": matrix.tolist(),
        "cells": cells,
        **summarise(matrix),
    }
    write_text_atomic(out / "crosseval.json", json.dumps(result, indent=1, default=float) + "\n")
    write_csv_atomic(
        out / "crosseval.csv",
        ["trained_on \\ tested_on", *names],
        [[n, *(f"{v:.4f}" for v in row)] for n, row in zip(names, matrix, strict=True)],
    )
    plot_matrix(matrix, names, out / "crosseval.png", recipe["name"])
    return result


def plot_matrix(matrix: np.ndarray, names: list[str], path: Path, title: str) -> None:
    """Heat map of the F1 matrix with the values written in the cells."""
    # imported here: matplotlib (Agg backend) is needed only for this plot and slows start-up
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 1.8))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                    color="white" if matrix[i, j] < 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(n), names, rotation=30, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("tested on (test split)")
    ax.set_ylabel("trained on (train split)")
    s = summarise(matrix)
    ax.set_title(
        f"{title}: F1, same source {s['same_source_mean']:.2f}, other {s['other_source_mean']:.2f}",
        fontsize=9,
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
