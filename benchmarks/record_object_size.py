"""Record in the bundled models the object size they were trained at (models trained
before cellmaps recorded it), without retraining: the weights are written back unchanged.

    python -m benchmarks.record_object_size

For each bundled model, the median object radius of its training data's first source (the
target dataset; masks → equivalent-disc radius, points only → half the nearest-neighbour
spacing) is measured on the same train split from ../shared/data and stored as
``training.train_radius`` = ``training.data_object_size`` (the models were trained at the
data's own scale), with every source's radius in ``training.object_sizes``. The Ki67 model
was trained on a weak-ROI copy of bcdata_ki67 (same images and points), measured on
bcdata_ki67 itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors import safe_open

from benchmarks._common import SHARED_DATA
from cellmaps.io import Dataset
from cellmaps.model import Model, bundled_model_path
from cellmaps.training.data import measure_object_size

DERIVED = {"bcdata_ki67_roi": "bcdata_ki67"}  # weak-ROI copies → the dataset they link to


def stored_as_half(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as f:
        return any(str(f.get_slice(k).get_dtype()) == "F16" for k in f.keys())


def record(name: str) -> dict:
    path = bundled_model_path(name)
    model = Model.load(path)
    sizes = []
    for src in model.training["data"]:
        folder = Path(src["folder"]).name
        root = SHARED_DATA / DERIVED.get(folder, folder)
        ds = Dataset(root)
        radius, how = measure_object_size(ds, ds.ids(src["split"]))
        sizes.append({"folder": str(root), "radius": radius, "measured_from": how, "factor": 1.0})
    model.training.update(
        train_radius=sizes[0]["radius"], data_object_size=sizes[0]["radius"], object_sizes=sizes
    )
    model.save(path, half=stored_as_half(path))
    return {"model": name, **{s["folder"].split("/")[-1]: round(s["radius"], 2) for s in sizes}}


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    for name in ("default", "ki67"):
        print(record(name))


if __name__ == "__main__":
    main()
