"""How the bundled models hold up when the stain changes: each model scored on its test split
after seeded haematoxylin / eosin / DAB shifts at five strengths.

    python -m benchmarks.stain_shift [--seed 0] [--compare-default MODEL]
        [--stain-norm macenko|reinhard] [--report-only]

At strength s every test image is re-stained in stain space (`cellmaps.io.stain.shift_stains`):
each of H, E and DAB is scaled by 1 + σ·s with a sign σ = ±1 drawn per image and stain from
``--seed`` (so half the images get fainter haematoxylin, half darker, and so on), s ∈ {0, 0.1,
0.2, 0.3, 0.4, 0.5}; s = 0 is the unshifted test split. Scores: the default detector's pooled
F1 on crchisto/test (r 6 px) and monuseg/test (r 12 px); the Ki67 model's detection F1 (r 10)
and per-image Ki67 index MAE on bcdata_ki67/test. Writes results/stain_shift.json,
docs/stain_shift.png (scores by strength), docs/stain_shift_panel.png (one crop of each test
set at every strength) and the 'stain_shift' section of BENCHMARKS.md. Nothing here chooses a
parameter: it only measures.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    machine,
    machine_line,
    read_results,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from cellmaps.io import Dataset, normalize_image
from cellmaps.io.stain import STAIN_NORM_METHODS, normalise_stain, shift_stains
from cellmaps.metrics import match_points, pool_detection
from cellmaps.metrics.counts import ki67_index, mean_absolute_error
from cellmaps.metrics.evaluate import KI67_CLASSES
from cellmaps.model import Model, bundled_model_path

STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
# (bundled model, dataset, matching radius px, Ki67 index?)
CASES = (
    ("default", "crchisto", 6.0, False),
    ("default", "monuseg", 12.0, False),
    ("ki67", "bcdata_ki67", 10.0, True),
)
KI67_TARGET_MAE = 0.05  # the robustness issue's target at every strength


def stain_signs(seed: int, image_index: int) -> np.ndarray:
    """±1 per stain (H, E, DAB) for one image: which way its stains move."""
    rng = np.random.default_rng([seed, image_index])
    return rng.choice([-1.0, 1.0], size=3)


def shifted_image(image: np.ndarray, strength: float, signs: np.ndarray) -> np.ndarray:
    """The image (as stored) re-stained: each stain scaled by 1 + sign · strength."""
    rgb = normalize_image(image)[..., :3]
    return shift_stains(rgb, scale=1.0 + signs * strength)


def as_uint8(rgb: np.ndarray) -> np.ndarray:
    """An RGB image in [0, 1] as uint8, what stain normalisation takes."""
    return np.round(rgb * 255).astype(np.uint8)


def stain_reference(ds: Dataset) -> np.ndarray:
    """The first train image of a dataset as uint8 RGB: the reference a user would pick for
    ``--stain-norm`` (a tile of the data the model was trained on)."""
    return as_uint8(normalize_image(ds.image(ds.ids("train")[0]))[..., :3])


def score_case(
    model: Model,
    dataset: str,
    radius: float,
    ki67: bool,
    seed: int,
    norm: str | None = None,
    split: str = "test",
    progress: bool = True,
) -> list[dict]:
    """Scores of ``model`` on ``dataset``/``split`` at every strength; with ``norm`` each
    shifted image is stain-normalised (`cellmaps.io.stain.normalise_stain`, as `predict
    --stain-norm`) to :func:`stain_reference` first. (``split`` 'val' lets a training script
    choose between models on shifted val images.)"""
    ds = Dataset(SHARED_DATA / dataset)
    ids = ds.ids(split)
    ref = stain_reference(ds) if norm else None
    rows = []
    for s in STRENGTHS:
        matches, t_idx, p_idx = [], [], []
        for k, image_id in enumerate(ids):
            truth = ds.points(image_id)
            image = shifted_image(ds.image(image_id), s, stain_signs(seed, k))
            if norm:
                image = normalise_stain(as_uint8(image), norm, ref)
            found = model.detect(image)
            coords, found_labels = found.coords, np.asarray(found.labels).astype(str)
            if ki67:  # tumour nuclei only: a model's non-tumour class is left out, as in the index
                keep = np.isin(found_labels, KI67_CLASSES)
                coords, found_labels = coords[keep], found_labels[keep]
            matches.append(match_points(truth.coords, coords, radius))
            if ki67:
                for side, labels in ((t_idx, truth.labels), (p_idx, found_labels)):
                    labels = np.asarray(labels).astype(str)
                    side.append(
                        ki67_index(np.sum(labels == "positive"), np.sum(labels == "negative"))
                    )
        row = {"strength": s, **pool_detection(matches)}
        if ki67:
            t, p = np.asarray(t_idx, float), np.asarray(p_idx, float)
            ok = np.isfinite(t) & np.isfinite(p)
            row["index_mae"] = mean_absolute_error(t[ok], p[ok])
        rows.append(row)
        if progress:
            print(f"  {dataset}/{split} s={s:.1f}: F1 {row['f1']:.3f}", flush=True)
    return rows


def model_sha(name: str) -> str:
    return hashlib.sha256(bundled_model_path(name).read_bytes()).hexdigest()[:16]


def panel_png(seed: int) -> None:
    """One 160² crop of the first test image of each dataset at every strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({d for _, d, _, _ in CASES})
    fig, axes = plt.subplots(
        len(names), len(STRENGTHS), figsize=(2 * len(STRENGTHS), 2 * len(names))
    )
    for r, name in enumerate(names):
        ds = Dataset(SHARED_DATA / name)
        image = ds.image(ds.ids("test")[0])
        for c, s in enumerate(STRENGTHS):
            img = shifted_image(image, s, stain_signs(seed, 0))[:160, :160]
            axes[r, c].imshow(img)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(f"strength {s:.1f}")
        axes[r, 0].set_ylabel(name)
    fig.tight_layout()
    save_figure(fig, REPO / "docs" / "stain_shift_panel.png", dpi=55)  # photos: keep it small


def scores_png(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    for case in results["cases"]:
        xs = [r["strength"] for r in case["rows"]]
        ax[0].plot(
            xs, [r["f1"] for r in case["rows"]], "o-", label=f"{case['model']} on {case['dataset']}"
        )
        if case["ki67"]:
            ax[1].plot(xs, [r["index_mae"] for r in case["rows"]], "o-", label=f"{case['model']}")
    ax[1].axhline(KI67_TARGET_MAE, color="grey", ls="--", label=f"target {KI67_TARGET_MAE}")
    ax[0].set(xlabel="stain shift strength", ylabel="detection F1", ylim=(0, 1))
    ax[1].set(xlabel="stain shift strength", ylabel="Ki67 index MAE")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, REPO / "docs" / "stain_shift.png")


def kept_line(results: dict) -> str:
    """Where the rows not rescored (``--only``) come from."""
    kept = results.get("kept_from")
    if not kept:
        return ""
    c, m = kept["command"], kept["machine"]
    flags = "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in c.items() if v and k not in ("seed", "only")
    )
    return (
        f" Rows of the other bundled model kept from `python -m benchmarks.stain_shift --seed "
        f"{c['seed']}{flags}` (commit {m['commit']}, {m['date']}; its file unchanged since)."
    )


def report(results: dict) -> str:
    head = "| model | test split | " + " | ".join(f"s {s:.1f}" for s in STRENGTHS) + " |"
    lines = [
        "## Stain shift",
        "",
        f"Command: `python -m benchmarks.stain_shift --seed {results['command']['seed']}"
        + (
            f" --compare-default {results['command']['compare_default']}"
            if results["command"].get("compare_default")
            else ""
        )
        + (
            f" --compare-ki67 {results['command']['compare_ki67']}"
            if results["command"].get("compare_ki67")
            else ""
        )
        + (
            f" --stain-norm {results['command']['stain_norm']}"
            if results["command"].get("stain_norm")
            else ""
        )
        + (f" --only {results['command']['only']}" if results["command"].get("only") else "")
        + "`. "
        + machine_line(results["machine"])
        + kept_line(results),
        "",
        "Each test image re-stained in H/E/DAB space: every stain scaled by 1 ± s (sign drawn "
        "per image and stain from the seed; `cellmaps.io.stain.shift_stains`). Bundled models "
        f"as committed (sha256 {', '.join(f'{k} {v}' for k, v in results['models'].items())}). "
        "Panel: docs/stain_shift_panel.png; curves: docs/stain_shift.png."
        + (
            f" Rows '+ {results['command']['stain_norm']}': each shifted image stain-normalised "
            "(as `predict --stain-norm`) to the first train image of its dataset."
            if results["command"].get("stain_norm")
            else ""
        ),
        "",
        "Detection F1 (pooled, Hungarian):",
        "",
        head,
        "|---|---|" + "---|" * len(STRENGTHS),
    ]
    for case in results["cases"]:
        cells = " | ".join(f"{r['f1']:.3f}" for r in case["rows"])
        lines.append(f"| {case['model']} | {case['dataset']} (r {case['radius']:g}) | {cells} |")
    ki67_cases = [c for c in results["cases"] if c["ki67"]]
    if ki67_cases:
        lines += ["", "Ki67 index MAE per image (bcdata_ki67/test):", "", head]
        lines.append("|---|---|" + "---|" * len(STRENGTHS))
        verdicts = []
        for case in ki67_cases:
            maes = [r["index_mae"] for r in case["rows"]]
            cells = " | ".join(f"{m:.4f}" for m in maes)
            lines.append(f"| {case['model']} | {case['dataset']} | {cells} |")
            over = [s for s, m in zip(STRENGTHS, maes, strict=True) if m > KI67_TARGET_MAE]
            verdicts.append(
                f"- {case['model']}: target MAE ≤ {KI67_TARGET_MAE} at every strength "
                + ("met." if not over else f"not met at s = {', '.join(f'{s:.1f}' for s in over)}.")
            )
        lines += ["", *verdicts, ""]
    for case in results["cases"]:
        f1 = [r["f1"] for r in case["rows"]]
        lines.append(
            f"- {case['model']} on {case['dataset']}: F1 {f1[0]:.3f} unshifted, {min(f1):.3f} at "
            f"worst (s = {STRENGTHS[int(np.argmin(f1))]:.1f}), a drop of {f1[0] - min(f1):.3f}."
        )
    return "\n".join(lines)


def kept_cases(only: str, shas: dict) -> dict:
    """The rows of the model *not* rescored (``--only``), from results/stain_shift.json, with
    the model hashes and machine of that run; refused when that model's file has changed
    since (its rows would describe another model)."""
    old, _ = read_results("stain_shift")
    other = "ki67" if only == "default" else "default"
    if old["models"].get(other) != shas[other]:
        raise SystemExit(
            f"the bundled {other} model changed since results/stain_shift.json was written: "
            "rerun without --only"
        )
    cases = [c for c in old["cases"] if c["model"].split(" ")[0] == other]
    models = {k: v for k, v in old["models"].items() if k.split(" ")[0] == other}
    return {"cases": cases, "models": models, "machine": old["machine"], "command": old["command"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-only", action="store_true", help="rewrite docs from the results")
    ap.add_argument(
        "--compare-default",
        help="also score this default-detector file (e.g. the previous bundled model)",
    )
    ap.add_argument(
        "--stain-norm",
        choices=STAIN_NORM_METHODS,
        help="also score the bundled models with this stain normalisation before detection",
    )
    ap.add_argument(
        "--compare-ki67",
        help="also score this Ki67 model file (e.g. the previous bundled Ki67 model)",
    )
    ap.add_argument(
        "--only",
        choices=("default", "ki67"),
        help="score only this bundled model's cases (and its --compare-* file); the other "
        "model's rows are kept from results/stain_shift.json when its file is unchanged",
    )
    args = ap.parse_args()
    if args.report_only:
        results, _ = read_results("stain_shift")
    else:
        from pathlib import Path

        models = {name: Model.load(bundled_model_path(name)) for name in ("default", "ki67")}
        shas = {name: model_sha(name) for name in models}
        case_list = list(CASES)
        for base, other_file in (("default", args.compare_default), ("ki67", args.compare_ki67)):
            if other_file:
                other = f"{base} before ({Path(other_file).name})"
                models[other] = Model.load(other_file)
                shas[other] = hashlib.sha256(Path(other_file).read_bytes()).hexdigest()[:16]
                case_list += [(other, d, r, k) for name, d, r, k in CASES if name == base]
        norms = {}
        if args.stain_norm:
            for name, d, r, k in CASES:
                normed = f"{name} + {args.stain_norm}"
                models[normed], norms[normed] = models[name], args.stain_norm
                case_list.append((normed, d, r, k))
        cases, kept = [], {}
        if args.only:
            kept = kept_cases(args.only, shas)
            case_list = [c for c in case_list if c[0].split(" ")[0] == args.only]
        for name, dataset, radius, ki67 in case_list:
            print(f"{name} on {dataset}/test", flush=True)
            rows = score_case(models[name], dataset, radius, ki67, args.seed, norms.get(name))
            cases.append(
                {"model": name, "dataset": dataset, "radius": radius, "ki67": ki67, "rows": rows}
            )
        results = {
            "command": {
                "seed": args.seed,
                "compare_default": args.compare_default,
                "compare_ki67": args.compare_ki67,
                "stain_norm": args.stain_norm,
                "only": args.only,
            },
            "machine": machine(),
            "strengths": list(STRENGTHS),
            "models": {**kept.get("models", {}), **shas},
            "cases": kept.get("cases", []) + cases,
        }
        if kept:
            results["kept_from"] = {"machine": kept["machine"], "command": kept["command"]}
        write_results("stain_shift", results)
        panel_png(args.seed)
    scores_png(results)
    update_benchmarks_md("stain_shift", report(results))


if __name__ == "__main__":
    main()
