"""How a Ki67 scorer's positive / negative call holds up when the stain moves, on BCData *val*
(the split that chooses; test is never read here).

    python -m benchmarks.ki67_classifier_ablation [--seed 0] [--compare MODEL ...]

Each val image is re-stained as in `benchmarks/stain_shift.py` (every stain scaled by 1 ± s,
signs from the seed, s ∈ {0, 0.1, …, 0.5}) and the per-image Ki67 index MAE is reported for
three ways of calling the tumour nuclei a model detects:

- **net**: the model's own class (KiNet: the class whose map is highest at the peak, with the
  model's ``decode.class_gain``) — for the bundled Ki67 model and every ``--compare`` file;
- **DAB density**: the bundled model's detections, called positive when the mean DAB optical
  density (scikit-image ``rgb2hed``) in a box of one nucleus radius around the point exceeds a
  fixed limit: the geometric mean of the median density at annotated positive and negative
  cells of the *train* images (`cellmaps.weak_roi.dab_limit_from_points`), i.e. colour deconvolution
  with a threshold, the rule of most IHC scoring tools.

Writes results/ki67_classifier_ablation.json and the 'ki67_classifier_ablation' section of
BENCHMARKS.md. It chooses nothing: it records the ablation behind the bundled Ki67 model.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from benchmarks._common import (
    SHARED_DATA,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from benchmarks.stain_shift import STRENGTHS, shifted_image, stain_signs
from cellmaps.io import Dataset
from cellmaps.metrics.counts import ki67_index, mean_absolute_error
from cellmaps.metrics.evaluate import KI67_CLASSES
from cellmaps.model import Model, bundled_model_path
from cellmaps.training.data import measure_object_size
from cellmaps.weak_roi import dab_density, dab_limit_from_points

BCDATA = SHARED_DATA / "bcdata_ki67"


def labels_of(points) -> np.ndarray:
    return np.asarray(points.labels).astype(str)


def index_of(labels: np.ndarray) -> float:
    return float(ki67_index(np.sum(labels == "positive"), np.sum(labels == "negative")))


def train_dab_rule(ds: Dataset) -> tuple[float, float]:
    """(nucleus radius, DAB limit) from the train images' annotated points."""
    ids = [i for i in ds.ids("train") if ds.has("points", i)]
    radius = float(measure_object_size(ds, ids, use_masks=False)[0])
    return radius, dab_limit_from_points(ds, ids, radius)


def val_maes(models: dict[str, Model], seed: int, radius: float, limit: float) -> dict:
    """Per-image index MAE at every strength for each model's own call and for the DAB
    rule applied to the first model's detections."""
    ds = Dataset(BCDATA)
    ids = ds.ids("val")
    truth = np.array([index_of(labels_of(ds.points(i))) for i in ids])
    names = [*models, "DAB density"]
    out = {n: [] for n in names}
    for s in STRENGTHS:
        pred = {n: [] for n in names}
        for k, image_id in enumerate(ids):
            image = shifted_image(ds.image(image_id), s, stain_signs(seed, k))
            for j, (name, model) in enumerate(models.items()):
                found = model.detect(image)
                tumour = found.subset(np.isin(labels_of(found), KI67_CLASSES))
                pred[name].append(index_of(labels_of(tumour)))
                if j == 0:
                    dab = dab_density(image, tumour.coords, radius)
                    called = np.where(dab > limit, "positive", "negative")
                    pred["DAB density"].append(index_of(called))
        for n in names:
            p = np.asarray(pred[n])
            ok = np.isfinite(truth) & np.isfinite(p)
            out[n].append(mean_absolute_error(truth[ok], p[ok]))
        print(f"s={s:.1f}: " + ", ".join(f"{n} {out[n][-1]:.4f}" for n in names), flush=True)
    return out


def report(res: dict) -> str:
    head = "| call | " + " | ".join(f"s {s:.1f}" for s in STRENGTHS) + " | worst |"
    rows = [
        "## Ki67 positive / negative call under stain shifts, on val "
        "(`benchmarks/ki67_classifier_ablation.py`)",
        "",
        f"`{res['command']}`. {machine_line(res['machine'])}",
        "",
        'Per-image Ki67 index MAE on bcdata_ki67/val re-stained as in "Stain shift" (models: '
        + ", ".join(f"{k} {v}" for k, v in res["models"].items())
        + f"). DAB density: the bundled model's detections called positive above DAB "
        f"{res['dab_limit']:.3f} (from the train points; radius {res['radius']:.1f} px).",
        "",
        head,
        "|---|" + "---|" * (len(STRENGTHS) + 1),
    ]
    for name, maes in res["mae"].items():
        rows.append(f"| {name} | " + " | ".join(f"{m:.4f}" for m in maes) + f" | {max(maes):.4f} |")
    best = min(res["mae"], key=lambda n: max(res["mae"][n]))
    rows += ["", f"Lowest worst-strength val MAE: {best} ({max(res['mae'][best]):.4f})."]
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="append", default=[], help="another Ki67 model file")
    args = ap.parse_args()
    files = {"net (bundled ki67)": bundled_model_path("ki67")}
    files.update({f"net ({Path(f).name})": Path(f) for f in args.compare})
    models = {n: Model.load(f) for n, f in files.items()}
    radius, limit = train_dab_rule(Dataset(BCDATA))
    mae = val_maes(models, args.seed, radius, limit)
    res = {
        "command": "python -m benchmarks.ki67_classifier_ablation --seed "
        + str(args.seed)
        + "".join(f" --compare {f}" for f in args.compare),
        "machine": machine(),
        "models": {
            n: hashlib.sha256(Path(f).read_bytes()).hexdigest()[:16] for n, f in files.items()
        },
        "radius": radius,
        "dab_limit": limit,
        "strengths": list(STRENGTHS),
        "mae": mae,
    }
    write_results("ki67_classifier_ablation", res)
    update_benchmarks_md("ki67_classifier_ablation", report(res))
    print(report(res))


if __name__ == "__main__":
    main()
