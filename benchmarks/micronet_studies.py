"""MicroNet's transfer studies (seed micronet.md §IV, Figs. 4–8) at CPU scale, run with
cellmaps' own commands (`cellmaps crosseval`, `train --init --freeze --fraction`, `--aux
--aux-fraction --gamma`, here through the same library calls).

    python -m benchmarks.micronet_studies [--iterations 300] [--base 8] [--crop 128]
        [--seed 0] [--report-only | --loso-only]

Datasets: crchisto (H&E colon, 20×), monuseg (H&E, 7 organs, 40×) and mbm_bonemarrow (H&E
bone marrow). Matching radius per test set: 6 px (crchisto, the paper's), 12 px (monuseg,
40×) and 11 px (mbm: the same share, ≈ 0.4, of its median nearest-neighbour distance, 27.7 px,
as 6 px is of crchisto's 14.6 px and 12 of monuseg's 29.8).

1. **Matrix** (Fig. 4): one model per dataset (train split), ξ tuned on its val split
   (MoNuSeg has none: one train image per organ is held out as val,
   :func:`benchmarks.train_default_model.monuseg_with_val`), F1 on every test split;
   same- vs other-source means.
2. **Fine-tuning vs scratch by target fraction** (Fig. 5 row 2): target mbm_bonemarrow; the
   base model is the other-source model of the matrix that scores best on the target's *val*
   split (the paper's "best base dataset", chosen without its test split). 10 / 20 / 40 /
   100 % of the target train images (seeded), fine-tuned from the base model vs from
   scratch, same iterations.
3. **Frozen blocks** (Fig. 5 row 4): fine-tuning on all target images with the first 0 / 2 /
   4 / 8 learning blocks frozen.
4. **Auxiliary data** (Figs. 6–8): all target images plus 5 % / 50 % (seeded) of the other
   two datasets' train images, L = γ·L_target + L_aux with γ ∈ {0.5, 1, 5}, against the
   target-only model.
5. **Leave one source out**: for each dataset, a model trained on the other two, ξ tuned on
   their val splits, scored on the held-out dataset's test split, next to same-source
   training and the best single other source; once at each source's own pixel scale and once
   with every source resampled to a common nucleus radius (``COMMON_RADIUS``; the unseen
   source resampled by the radius measured on its train points).

Every model: recipe `micronet` at base ``--base``, ``--crop``² crops, ``--iterations`` steps,
seed ``--seed``; ξ and the evidence floor tuned on the target's val split; models cached by
recipe, data and code (`runs/micronet_studies/`). Scores are target *test* F1 (reported, not
used to choose anything). Writes results/micronet_studies.json, docs/micronet_matrix.png,
docs/micronet_studies.png and the 'micronet_studies' section of BENCHMARKS.md, whose findings
(which of the paper's observations hold here) are computed from the figures.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    cached_train,
    machine,
    machine_line,
    read_results,
    save_figure,
    update_benchmarks_md,
    write_results,
)
from benchmarks.train_default_model import monuseg_with_val
from cellmaps.crosseval import check_splits, plot_matrix, summarise
from cellmaps.recipes import load_recipe, validate_recipe
from cellmaps.tune import score_split

RADIUS = {"crchisto": 6.0, "monuseg": 12.0, "mbm_bonemarrow": 11.0}
TARGET = "mbm_bonemarrow"
FRACTIONS = (0.1, 0.2, 0.4, 1.0)
FROZEN = (0, 2, 4, 8)
AUX_SHARES = (0.05, 0.5)
GAMMAS = (0.5, 1.0, 5.0)
WORK = REPO / "runs" / "micronet_studies"
TRAINED: dict[str, float] = {}  # model file → training seconds, for the report


def study_recipe(args) -> dict:
    r = load_recipe("micronet")
    r["net"]["base"] = args.base
    r["training"].update(iterations=args.iterations, seed=args.seed, crop=args.crop)
    return validate_recipe(r, "micronet_studies")


FOLDERS: dict[str, str] = {}  # dataset → folder; monuseg's gets a val split (main)


def folder(name: str) -> str:
    return FOLDERS.get(name, str(SHARED_DATA / name))


def tune_source(name: str) -> list[tuple[str, str]]:
    return [(folder(name), check_splits(folder(name)))]


def trained(recipe: dict, sources: list[tuple], tune_on: str | list[str], name: str, **options):
    """A model trained (or taken from the cache) with ξ tuned on the tuning split of
    ``tune_on`` (one dataset or several, each matched at its own radius). Runs that would
    train the same thing share a name, so the cache serves them once."""
    tune = [tune_on] if isinstance(tune_on, str) else list(tune_on)
    val = [s for n in tune for s in tune_source(n)]
    options.setdefault("val_radii", [RADIUS[n] for n in tune])
    m = cached_train(recipe, sources, val, WORK, name, **options)
    TRAINED[str(m.path)] = m.training["elapsed_seconds"]
    return m


def f1_on_test(model, name: str, object_size: float | None = None) -> float:
    return score_split(model, folder(name), "test", RADIUS[name], object_size=object_size)["f1"]


def run_matrix(recipe: dict) -> tuple[dict, dict]:
    names = list(RADIUS)
    models = {n: trained(recipe, [(folder(n), "train", 1.0)], n, f"scratch_{n}") for n in names}
    f1 = np.array([[f1_on_test(models[a], b) for b in names] for a in names])
    target_val = {
        n: score_split(models[n], folder(TARGET), "val", RADIUS[TARGET])["f1"] for n in names
    }
    matrix = {"datasets": names, "f1": f1.tolist(), "target_val_f1": target_val, **summarise(f1)}
    return matrix, models


def run_fractions(recipe: dict, base) -> list[dict]:
    rows = []
    for frac in FRACTIONS:
        src = [(folder(TARGET), "train", 1.0, frac) if frac < 1 else (folder(TARGET), "train", 1.0)]
        row = {"fraction": frac}
        # at 100 %: the matrix's target model, and frozen-0 of the next study
        scratch = trained(
            recipe, src, TARGET, f"scratch_{TARGET}" if frac == 1 else f"scratch_{frac:g}"
        )
        tuned = trained(recipe, src, TARGET, f"finetune_{frac:g}_k0", init=str(base.path), freeze=0)
        row["scratch"], row["fine-tuned"] = f1_on_test(scratch, TARGET), f1_on_test(tuned, TARGET)
        rows.append(row)
        print(row, flush=True)
    return rows


def run_frozen(recipe: dict, base) -> list[dict]:
    rows = []
    for k in FROZEN:
        m = trained(
            recipe,
            [(folder(TARGET), "train", 1.0)],
            TARGET,
            f"finetune_1_k{k}",
            init=str(base.path),
            freeze=k,
        )
        rows.append({"frozen": k, "f1": f1_on_test(m, TARGET)})
        print(rows[-1], flush=True)
    return rows


def run_aux(recipe: dict) -> list[dict]:
    aux = [n for n in RADIUS if n != TARGET]
    rows = []
    for share in AUX_SHARES:
        for gamma in GAMMAS:
            src = [(folder(TARGET), "train", gamma, 1.0)]
            src += [(folder(a), "train", 1.0, share) for a in aux]
            m = trained(recipe, src, TARGET, f"aux_{share:g}_{gamma:g}")
            rows.append({"aux_share": share, "gamma": gamma, "f1": f1_on_test(m, TARGET)})
            print(rows[-1], flush=True)
    return rows


# Leave-one-source-out variant at a common object scale: every training source resampled so
# its median nucleus radius is this many pixels (CRCHisto's is 5.4 px at 20×, MoNuSeg's 12.1
# and MBM's 11.5 at 40×), and the unseen source resampled likewise at prediction.
COMMON_RADIUS = 6.0


def held_out_object_size(name: str) -> float:
    """The unseen source's median nucleus radius, from its *train* split's points (what a user
    measures on a few annotated images of their own, or knows from the magnification)."""
    from cellmaps.io.dataset import Dataset
    from cellmaps.training.data import measure_object_size

    ds = Dataset(folder(name))
    return measure_object_size(ds, ds.ids("train"), use_masks=False)[0]


def run_loso(recipe: dict, matrix: dict) -> list[dict]:
    """Leave one source out: for each dataset, a model trained on the other two (ξ tuned on
    *their* tuning splits: the held-out source plays a user's unseen lab), against the model
    trained on the dataset itself (the matrix diagonal) and the best single other source; once
    at each source's own scale and once at a common object scale (:data:`COMMON_RADIUS`)."""
    names = matrix["datasets"]
    f1 = np.array(matrix["f1"])
    scaled = validate_recipe(
        {**recipe, "training": {**recipe["training"], "train_radius": COMMON_RADIUS}},
        "micronet_studies",
    )
    rows = []
    for j, n in enumerate(names):
        others = [m for m in names if m != n]
        src = [(folder(o), "train", 1.0) for o in others]
        m = trained(recipe, src, others, f"loso_{n}")
        ms = trained(scaled, src, others, f"loso_{n}_scaled")
        size = held_out_object_size(n)
        rows.append(
            {
                "held_out": n,
                "trained_on": others,
                "f1": f1_on_test(m, n),
                "f1_common_scale": f1_on_test(ms, n, object_size=size),
                "held_out_object_size": size,
                "same_source": float(f1[j, j]),
                "best_single_other": float(max(f1[i, j] for i in range(len(names)) if i != j)),
            }
        )
        print(rows[-1], flush=True)
    return rows


def findings(res: dict) -> list[str]:
    """Which of the paper's observations hold here, computed from the figures."""
    mx = res["matrix"]
    out = []
    same, other = mx["same_source_mean"], mx["other_source_mean"]
    out.append(
        f"Same-source training beats other sources (Fig. 4): same-source mean F1 {same:.3f}, "
        f"other-source {other:.3f} — {'holds' if same > other else 'does not hold'} here."
    )
    fr = res["fractions"]
    wins = sum(r["fine-tuned"] > r["scratch"] for r in fr)
    out.append(
        f"Fine-tuning beats learning from scratch at the same iterations (Fig. 5 rows 1–2): "
        f"{wins} of {len(fr)} target fractions"
        + (
            f"; largest gain {max(r['fine-tuned'] - r['scratch'] for r in fr):+.3f} at "
            f"{max(fr, key=lambda r: r['fine-tuned'] - r['scratch'])['fraction']:.0%}."
        )
    )
    small = [r for r in fr if r["fraction"] < 1]
    full = next(r for r in fr if r["fraction"] == 1)
    reach = [r["fraction"] for r in small if r["fine-tuned"] >= full["scratch"]]
    out.append(
        "Fine-tuning needs less target data for the same accuracy: "
        + (
            f"fine-tuned on {min(reach):.0%} of the target images it reaches scratch-on-100 % "
            f"({full['scratch']:.3f})."
            if reach
            else f"no smaller fraction fine-tuned reaches scratch-on-100 % ({full['scratch']:.3f})."
        )
    )
    fz = {r["frozen"]: r["f1"] for r in res["frozen"]}
    scratch = full["scratch"]
    out.append(
        "Frozen blocks (Fig. 5 row 4): F1 "
        + ", ".join(f"{k} frozen {v:.3f}" for k, v in fz.items())
        + f" (scratch {scratch:.3f}); 2 frozen "
        + ("competes with" if fz[2] >= scratch - 0.01 else "falls short of")
        + " scratch, 8 frozen "
        + ("falls below it" if fz[8] < scratch else "does not fall below it")
        + " (the paper: few frozen blocks compete, many fall below)."
    )
    lo = res.get("loso", [])
    if lo:
        for key, how in (
            ("f1", "at each source's own scale"),
            ("f1_common_scale", f"at a common object scale (radius {COMMON_RADIUS:g} px)"),
        ):
            if key not in lo[0]:
                continue
            beats = sum(r[key] > r["best_single_other"] for r in lo)
            gap = np.mean([r["same_source"] - r[key] for r in lo])
            out.append(
                f"Leave one source out, {how}: trained on the other two sources, F1 on the unseen "
                "one "
                + ", ".join(f"{r['held_out']} {r[key]:.3f}" for r in lo)
                + f"; beats the best single other source on {beats} of {len(lo)}; on average "
                f"{gap:.3f} {'below' if gap > 0 else 'above'} same-source training."
            )
        if "f1_common_scale" in lo[0]:
            better = sum(r["f1_common_scale"] > r["f1"] for r in lo)
            out.append(
                f"The common object scale helps the unseen source on {better} of {len(lo)} "
                f"(mean change {np.mean([r['f1_common_scale'] - r['f1'] for r in lo]):+.3f})."
            )
    target_only = full["scratch"]
    ax = res["aux"]
    helps = sum(r["f1"] > target_only for r in ax)
    out.append(
        f"Auxiliary data helps the target (Figs. 6–8): {helps} of {len(ax)} mixes beat "
        f"target-only training ({target_only:.3f}) at this budget."
    )
    for share in AUX_SHARES:
        rows = {r["gamma"]: r["f1"] for r in ax if r["aux_share"] == share}
        best_gamma = max(rows, key=rows.get)
        out.append(
            f"Auxiliary {share:.0%} (Figs. 6–8): F1 "
            + ", ".join(f"γ {g:g} {v:.3f}" for g, v in rows.items())
            + f" vs target only {target_only:.3f}; γ < 1 "
            + ("is the worst" if rows[min(rows)] == min(rows.values()) else "is not the worst")
            + f", best γ {best_gamma:g} (the paper: γ < 1 worst, γ > 1 best)."
        )
    return out


def plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mx = res["matrix"]
    plot_matrix(
        np.array(mx["f1"]), mx["datasets"], REPO / "docs" / "micronet_matrix.png", "micronet"
    )
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    fr = res["fractions"]
    x = [r["fraction"] * 100 for r in fr]
    ax[0].plot(x, [r["scratch"] for r in fr], "o-", label="scratch")
    ax[0].plot(x, [r["fine-tuned"] for r in fr], "s-", label=f"fine-tuned from {res['base']}")
    ax[0].set(xlabel="% of target train images", ylabel=f"{TARGET} test F1", title="Fig. 5 row 2")
    ax[0].legend()
    fz = res["frozen"]
    ax[1].plot([r["frozen"] for r in fz], [r["f1"] for r in fz], "s-", label="fine-tuned")
    ax[1].axhline(fr[-1]["scratch"], color="grey", ls="--", label="scratch, 100 %")
    ax[1].set(xlabel="frozen blocks", title="Fig. 5 row 4")
    ax[1].legend()
    for share in AUX_SHARES:
        rows = [r for r in res["aux"] if r["aux_share"] == share]
        ax[2].plot(
            [r["gamma"] for r in rows], [r["f1"] for r in rows], "o-", label=f"aux {share:.0%}"
        )
    ax[2].axhline(fr[-1]["scratch"], color="grey", ls="--", label="target only")
    ax[2].set(xscale="log", xlabel="γ (target loss weight)", title="Figs. 6–8")
    ax[2].set_xticks(list(GAMMAS), [f"{g:g}" for g in GAMMAS])
    ax[2].minorticks_off()
    ax[2].legend()
    lo = res.get("loso", [])
    x = np.arange(len(lo))
    bars = [
        ("same_source", "same source"),
        ("best_single_other", "best other"),
        ("f1", "other two"),
        ("f1_common_scale", "other two, common scale"),
    ]
    bars = [b for b in bars if lo and b[0] in lo[0]]
    w = 0.8 / max(len(bars), 1)
    for k, (key, label) in enumerate(bars):
        ax[3].bar(x + (k - (len(bars) - 1) / 2) * w, [r[key] for r in lo], w, label=label)
    ax[3].set_xticks(x, [r["held_out"] for r in lo])
    ax[3].set(ylabel="test F1", title="leave one source out", ylim=(0, 1.25))
    ax[3].legend(fontsize=7, ncol=2, loc="upper center")
    fig.tight_layout()
    save_figure(fig, REPO / "docs" / "micronet_studies.png")


def report(res: dict) -> str:
    c, mx = res["command"], res["matrix"]
    names = mx["datasets"]
    lines = [
        "## MicroNet transfer studies (`benchmarks/micronet_studies.py`)",
        "",
        f"`python -m benchmarks.micronet_studies --iterations {c['iterations']} --base "
        f"{c['base']} --crop {c['crop']} --seed {c['seed']}`. {machine_line(res['machine'])}",
        f"Every model: MicroNet recipe, base {c['base']}, {c['crop']}² crops, {c['iterations']} "
        f"iterations (the paper trains for tens of thousands); {res['n_models']} models, "
        f"{res['train_minutes']:.0f} training minutes in all. Radii: "
        + ", ".join(f"{n} {RADIUS[n]:g} px" for n in names)
        + ". Test F1 (pooled, Hungarian).",
        "",
        "Matrix (rows trained on, columns tested on):",
        "",
        "| trained on \\ tested on | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for n, row in zip(names, mx["f1"], strict=True):
        lines.append(f"| {n} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines += [
        "",
        f"Target {TARGET}; base model for fine-tuning: **{res['base']}** (best other-source "
        f"model on the target's *val* split: "
        + ", ".join(f"{n} {v:.3f}" for n, v in mx["target_val_f1"].items() if n != TARGET)
        + ").",
        "",
        "| target train images | scratch | fine-tuned |",
        "|---|---|---|",
    ]
    for r in res["fractions"]:
        lines.append(f"| {r['fraction']:.0%} | {r['scratch']:.3f} | {r['fine-tuned']:.3f} |")
    lines += ["", "| frozen blocks | fine-tuned F1 |", "|---|---|"]
    lines += [f"| {r['frozen']} | {r['f1']:.3f} |" for r in res["frozen"]]
    lines += ["", "| aux share | γ | F1 |", "|---|---|---|"]
    lines += [f"| {r['aux_share']:.0%} | {r['gamma']:g} | {r['f1']:.3f} |" for r in res["aux"]]
    lines += [
        "",
        "Leave one source out (trained on the other two, ξ tuned on their val splits)"
        + (
            f"; rerun with `--loso-only` ({res['loso_train_minutes']:.0f} training minutes), "
            + machine_line(res["loso_machine"])
            if res.get("loso_machine")
            else ""
        )
        + ":",
        "",
        f"| held out | trained on | F1 | F1, common scale (r {COMMON_RADIUS:g} px) | "
        "same source | best single other |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['held_out']} | {' + '.join(r['trained_on'])} | {r['f1']:.3f} | "
        + (f"{r['f1_common_scale']:.3f}" if "f1_common_scale" in r else "—")
        + f" | {r['same_source']:.3f} | {r['best_single_other']:.3f} |"
        for r in res.get("loso", [])
    ]
    lines += ["", "![](docs/micronet_matrix.png)", "", "![](docs/micronet_studies.png)", ""]
    lines += [f"- {f}" for f in findings(res)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--loso-only",
        action="store_true",
        help="rerun only the leave-one-source-out study (with the saved run's settings and "
        "matrix) and record its own code version",
    )
    args = ap.parse_args()
    if args.report_only:
        res, _ = read_results("micronet_studies")
    elif args.loso_only:
        res, saved = read_results("micronet_studies")
        FOLDERS["monuseg"] = str(monuseg_with_val(saved.seed))
        res["loso"] = run_loso(study_recipe(saved), res["matrix"])
        res["loso_machine"] = machine()
        res["loso_train_minutes"] = sum(TRAINED.values()) / 60
        write_results("micronet_studies", res)
    else:
        FOLDERS["monuseg"] = str(monuseg_with_val(args.seed))
        recipe = study_recipe(args)
        matrix, models = run_matrix(recipe)
        others = {n: v for n, v in matrix["target_val_f1"].items() if n != TARGET}
        base = max(others, key=others.get)
        res = {
            "command": {k: getattr(args, k) for k in ("iterations", "base", "crop", "seed")},
            "machine": machine(),
            "matrix": matrix,
            "base": base,
            "fractions": run_fractions(recipe, models[base]),
            "frozen": run_frozen(recipe, models[base]),
            "aux": run_aux(recipe),
            "loso": run_loso(recipe, matrix),
        }
        res["n_models"] = len(TRAINED)
        res["train_minutes"] = sum(TRAINED.values()) / 60
        write_results("micronet_studies", res)
    plot(res)
    text = report(res)
    update_benchmarks_md("micronet_studies", text)
    print(text)


if __name__ == "__main__":
    main()
