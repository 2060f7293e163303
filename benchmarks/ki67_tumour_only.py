"""Does the Ki67 index count tumour nuclei only? Stand-ins for another hospital's slides (#33 part 5)

    python -m benchmarks.ki67_tumour_only --split val [--gates none,roi]
    python -m benchmarks.ki67_tumour_only --split test --final      # once, after the choice

Another hospital's breast Ki67 images hold lymphocytes and stroma that BCData's crops mostly
do not, and the bundled scorer counted 1.9× the annotated tumour cells there (nearly all
extra ones negative). Two stand-ins built from the shared data:

1. **bcdata** — BCData (every tumour cell annotated positive or negative) at scales 0.7, 1
   and 1.4 (object size given, the scale × the training size) and re-stained at strength 0.3
   (`benchmarks.stain_shift`'s seeded signs): count ratio (tumour nuclei scored / annotated),
   pooled Ki67 index against the annotated one, per-image index MAE.
2. **crchisto-ihc** — the CRCHisto images whose every nucleus is classified, re-rendered as
   Ki67-negative IHC (haematoxylin only: :func:`skimage.color.rgb2hed`, eosin and DAB set to
   0, :func:`~skimage.color.hed2rgb`), given at their nucleus size (5.4 px): epithelial
   nuclei are the tumour cells of this colorectal carcinoma; inflammatory and fibroblast
   nuclei are not. Count ratio = scored / epithelial; ``non-tumour share`` = the share of the
   scored nuclei that sit on an inflammatory or fibroblast point (matched within 6 px, one to
   one, against all classified points).

Gates (what keeps a detection in the index): ``none`` (the scorer as bundled: positive and
negative classes; its ``non_tumour`` class learned from 10 examples), ``roi`` (also the
KiNet ROI head's tumour probability at the detection ≥ 0.5), ``morphology@T`` (P(tumour) ≥
T under :mod:`cellmaps.postprocess.tumour_gate`'s logistic regression on scale-free optical
density and shape measurements, fitted with ``--fit`` on the scorer's own detections in the
*train* splits: CRCHisto's classified nuclei as IHC and BCData's tumour cells; T on a grid of 0.3–0.7: steps of 0.1 in the first val run, refined to 0.05 after it showed
the count ratio crossing 1 between 0.4 and 0.5 — on val, before any test run).

Selection rule, fixed before any test run (2026-12-07): on **val** (bcdata val: 3 images;
crchisto-ihc val: the 2 fully classified val images), the gate with the smallest worst
|log count ratio| over every stand-in case; it must not raise the worst bcdata index MAE
by more than 0.02 over ``none``. Test is scored once with ``--final``.

**Approach 3, a learned non-tumour class** (rule written 2026-12-07, before its training). A
candidate scorer is fine-tuned from the bundled one with CRCHisto's fully classified *train*
images added as haematoxylin-only IHC (epithelial = negative tumour nuclei; inflammatory,
fibroblast and miscellaneous = ``non_tumour``; ``python -m benchmarks.train_ki67_model
--crchisto-ihc ...``). ``--candidate PATH`` scores it on the same val cases with gates ``none``
(its own classes only), ``roi`` and ``morphology@T`` (its own gate, fitted with ``--fit`` on its
train detections as above). Its gate is chosen by the rule above, the bcdata index-MAE limit
being the *bundled* scorer's ``none`` + 0.02. It replaces the bundled model (with that gate)
iff (a) its chosen gate's worst |log count ratio| on val is smaller than the bundled model's
chosen gate's, and (b) its BCData val detection F1 is not below the bundled model's by more
than that F1's sampling error and it finds no more nuclei on the noise image
(train_ki67_model's figures, results/ki67_candidates.json). Then, once, ``--candidate PATH
--split test --final``. Caveat, known before the run: the candidate has seen CRCHisto-as-IHC
*train* images, so the crchisto-ihc stand-in (val / test images) is closer to its training
data than to the bundled model's; the bcdata stand-ins are not.

Writes results/ki67_tumour_only_<split>.json (``_learned_<sha8>_<split>`` for a candidate, by
the first 8 hex digits of its file's SHA-256, so every candidate keeps its table) and the
'ki67_tumour_only' section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
from skimage.color import hed2rgb, rgb2hed
from skimage.transform import rescale

from benchmarks._common import (
    RESULTS,
    SHARED_DATA,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)
from benchmarks.stain_shift import as_uint8, shifted_image, stain_signs
from cellmaps.io.dataset import Dataset
from cellmaps.io.images import write_image
from cellmaps.io.points import Points, write_points
from cellmaps.io.scale import to_scaled_coords
from cellmaps.metrics import match_points
from cellmaps.metrics.counts import NEGATIVE, POSITIVE, ki67_index
from cellmaps.model import Model, bundled_model_path
from cellmaps.postprocess.tumour_gate import (
    NON_TUMOUR,
    fit_gate,
    nucleus_features,
    tumour_probability,
)

SCALES = (0.7, 1.0, 1.4)
STAIN = 0.3
#: BCData's median nucleus radius (px, measured from the train points): the Ki67 model's
#: training radius (its ``data_object_size``)
BCDATA_RADIUS = 13.901438774457844
CRC_RADIUS = 5.4  # CRCHisto's median nucleus radius (px, train points)
MATCH_RADIUS = 6.0  # CRCHisto's matching radius at 20x
ROI_MIN = 0.5
GOAL_RATIO = (0.8, 1.25)
GOAL_MAE = 0.05
TUMOUR = (POSITIVE, NEGATIVE)


def roi_probability(model: Model, maps, coords: np.ndarray) -> np.ndarray:
    """The ROI head's tumour probability (channel 0: ROI class 1 = tumour) at each point
    (input px), read at the nearest net pixel."""
    roi = maps["roi"][0]
    q = to_scaled_coords(coords, maps.input_shape, roi.shape)
    rc = np.clip(np.rint(q).astype(int), 0, np.array(roi.shape) - 1)
    return roi[rc[:, 0], rc[:, 1]]


def detections(model: Model, image: np.ndarray, object_size: float, gate: dict | None) -> dict:
    """The scorer's tumour-class detections (positive / negative) with what each gate reads:
    ROI tumour probability and P(tumour) of the fitted morphology gate (NaN without one)."""
    maps = model.predict_maps(image, object_size=object_size)
    pts = model.decode_maps(maps)
    pts = pts.subset(np.isin(pts.labels, TUMOUR))
    p = (tumour_probability(gate, nucleus_features(image, pts.coords, object_size))
         if gate else np.full(len(pts), np.nan))  # fmt: skip
    return {"coords": pts.coords, "labels": pts.labels, "roi": roi_probability(model, maps, pts.coords),
            "p_tumour": p}  # fmt: skip


def gate_keeps(gate: str, d: dict) -> np.ndarray:
    """Which detections a gate keeps: ``none``, ``roi``, ``morphology@T`` (P(tumour) ≥ T)."""
    if gate == "none":
        return np.ones(len(d["labels"]), bool)
    if gate == "roi":
        return np.asarray(d["roi"]) >= ROI_MIN
    return np.asarray(d["p_tumour"]) >= float(gate.split("@")[1])


def ihc_negative(rgb: np.ndarray) -> np.ndarray:
    """An H&E image re-rendered as Ki67-negative IHC: its haematoxylin only."""
    hed = rgb2hed(rgb[..., :3])
    hed[..., 1:] = 0.0
    return as_uint8(np.clip(hed2rgb(hed), 0, 1))


def bcdata_cases(split: str, seed: int):
    """(case name, image id, image, truth Points, object size) of the bcdata stand-in."""
    ds = Dataset(SHARED_DATA / "bcdata_ki67")
    size = BCDATA_RADIUS
    for k, image_id in enumerate(ds.ids(split)):
        image, pts = ds.image(image_id), ds.points(image_id)
        for s in SCALES:
            img = image if s == 1.0 else (rescale(image, s, order=1, channel_axis=-1,
                                                  preserve_range=True, anti_aliasing=s < 1)
                                          + 0.5).astype(np.uint8)  # fmt: skip
            yield (f"bcdata ×{s:g}", image_id, img,
                   Points((pts.coords + 0.5) * s - 0.5, pts.labels), size * s)  # fmt: skip
        img = as_uint8(shifted_image(image, STAIN, stain_signs(seed, k)))
        yield f"bcdata stain {STAIN:g}", image_id, img, pts, size


def crchisto_cases(split: str):
    """(case name, image id, image, classified Points, object size) of crchisto-ihc."""
    ds = Dataset(SHARED_DATA / "crchisto")
    for image_id in ds.ids(split):
        pts = ds.points(image_id)
        if "nucleus" in set(pts.labels):
            continue  # not every nucleus classified
        yield "crchisto-ihc", image_id, ihc_negative(ds.image(image_id)), pts, CRC_RADIUS


#: CRCHisto's classes as Ki67 training labels (approach 3): the epithelial nuclei of this
#: colorectal carcinoma are its tumour cells, Ki67-negative once rendered without DAB; the rest
#: are not tumour (miscellaneous — e.g. necrotic and mitotic figures, 6 % — counted as not)
CRC_AS_KI67 = {"epithelial": NEGATIVE, "inflammatory": NON_TUMOUR, "fibroblast": NON_TUMOUR,
               "miscellaneous": NON_TUMOUR}  # fmt: skip


def write_crchisto_ihc(out: Path) -> dict:
    """CRCHisto's fully classified *train* images as a Ki67 training set at ``out``
    (:func:`ihc_negative` images, points relabelled by :data:`CRC_AS_KI67`, every image in
    split train): the data of the learned non-tumour class (approach 3). The val and test
    images, which the crchisto-ihc stand-in scores, are never written. Written into a hidden
    folder next to ``out`` and renamed when complete. Returns images and points per label."""
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "points").mkdir()
    counts: dict = {"images": 0}
    for _, image_id, img, pts, _ in crchisto_cases("train"):
        labels = np.array([CRC_AS_KI67[str(x)] for x in pts.labels])
        write_image(tmp / "images" / f"{image_id}.png", img)
        write_points(tmp / "points" / f"{image_id}.csv", Points(pts.coords, labels))
        counts["images"] += 1
        for lab in labels.astype(str):
            counts[str(lab)] = counts.get(str(lab), 0) + 1
    ids = sorted(p.stem for p in (tmp / "images").glob("*.png"))
    (tmp / "splits.csv").write_text("id,split,group\n" + "".join(f"{i},train,{i}\n" for i in ids))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return counts


def case_rows(
    model: Model, split: str, seed: int, gate: dict | None, gates: list[str]
) -> list[dict]:
    rows = []
    cases = [*bcdata_cases(split, seed), *crchisto_cases(split)]
    for case, image_id, img, truth, size in cases:
        d = detections(model, img, size, gate)
        t_tumour = np.isin(truth.labels, TUMOUR) if case.startswith("bcdata") else (
            truth.labels == "epithelial")  # fmt: skip
        row = {"case": case, "id": image_id, "annotated_tumour": int(t_tumour.sum()),
               "annotated_positive": int((truth.labels == POSITIVE).sum()), "gates": {}}  # fmt: skip
        other = np.isin(truth.labels, ("inflammatory", "fibroblast"))
        for g in gates:
            keep = gate_keeps(g, d)
            labels = np.asarray(d["labels"])[keep]
            r = {"scored": int(keep.sum()), "positive": int((labels == POSITIVE).sum())}
            if case == "crchisto-ihc":
                m = match_points(truth.coords, np.asarray(d["coords"])[keep], MATCH_RADIUS)
                r["on_non_tumour"] = int(other[m.truth_idx].sum())
                r["on_tumour"] = int(t_tumour[m.truth_idx].sum())
            row["gates"][g] = r
        rows.append(row)
        print(case, image_id, {k: v["scored"] for k, v in row["gates"].items()},
              "annotated", row["annotated_tumour"], flush=True)  # fmt: skip
    return rows


def training_samples(model: Model) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features and tumour (1) / non-tumour (0) labels of the scorer's own detections on the
    *train* splits: CRCHisto's fully classified images as IHC (matched within 6 px:
    epithelial 1, inflammatory or fibroblast 0, others left out) and BCData (matched to an
    annotated tumour cell within 10 px: 1; farther than 2R from every annotation: 0, BCData
    annotating every tumour cell)."""
    xs, ys, counts = [], [], {"crchisto": 0, "bcdata": 0}
    for _, _image_id, img, truth, size in crchisto_cases("train"):
        d = detections(model, img, size, None)
        m = match_points(np.asarray(d["coords"]), truth.coords, MATCH_RADIUS)
        cls = truth.labels[m.pred_idx]
        use = np.isin(cls, ("epithelial", "inflammatory", "fibroblast"))
        xs.append(nucleus_features(img, np.asarray(d["coords"])[m.truth_idx[use]], size))
        ys.append((cls[use] == "epithelial").astype(float))
        counts["crchisto"] += int(use.sum())
    ds = Dataset(SHARED_DATA / "bcdata_ki67")
    size = BCDATA_RADIUS
    for image_id in ds.ids("train"):
        img, truth = ds.image(image_id), ds.points(image_id)
        d = detections(model, img, size, None)
        coords = np.asarray(d["coords"])
        m = match_points(coords, truth.coords, 10.0)
        near = np.zeros(len(coords), bool)
        if len(truth.coords) and len(coords):
            dist = np.hypot(*(coords[:, None, :] - truth.coords[None, :, :]).transpose(2, 0, 1))
            near = dist.min(1) <= 2 * size
        far = np.flatnonzero(~near)
        xs.append(nucleus_features(img, coords[np.r_[m.truth_idx, far]], size))
        ys.append(np.r_[np.ones(len(m.truth_idx)), np.zeros(len(far))])
        counts["bcdata"] += len(m.truth_idx) + len(far)
        print("bcdata train", image_id, len(m.truth_idx), "tumour", len(far), "far", flush=True)
    return np.concatenate(xs), np.concatenate(ys), counts


def summarise(rows: list[dict]) -> dict:
    """Per gate and case: count ratio, pooled index (scored vs annotated), index MAE, and for
    crchisto-ihc the non-tumour share of the scored nuclei."""
    out = {}
    gates = list(rows[0]["gates"])
    for gate in gates:
        per_case = {}
        for case in dict.fromkeys(r["case"] for r in rows):
            rs = [r for r in rows if r["case"] == case]
            scored = sum(r["gates"][gate]["scored"] for r in rs)
            annotated = sum(r["annotated_tumour"] for r in rs)
            pos = sum(r["gates"][gate]["positive"] for r in rs)
            c = {"count_ratio": scored / annotated if annotated else float("nan"),
                 "pooled_index": ki67_index(pos, scored - pos),
                 "pooled_index_truth": ki67_index(sum(r["annotated_positive"] for r in rs),
                                                  annotated - sum(r["annotated_positive"]
                                                                  for r in rs))}  # fmt: skip
            idx = [abs(ki67_index(r["gates"][gate]["positive"],
                                  r["gates"][gate]["scored"] - r["gates"][gate]["positive"])
                       - ki67_index(r["annotated_positive"],
                                    r["annotated_tumour"] - r["annotated_positive"]))
                   for r in rs]  # fmt: skip
            c["index_mae"] = float(np.nanmean(idx)) if idx else float("nan")
            if case == "crchisto-ihc":
                c["non_tumour_share"] = sum(r["gates"][gate]["on_non_tumour"] for r in rs) / max(
                    scored, 1
                )
                c["tumour_found"] = sum(r["gates"][gate]["on_tumour"] for r in rs) / max(
                    annotated, 1
                )
            per_case[case] = c
        ratios = np.array([c["count_ratio"] for c in per_case.values()])
        bc = [c["index_mae"] for k, c in per_case.items() if k.startswith("bcdata")]
        out[gate] = {
            "cases": per_case,
            "worst_abs_log_ratio": float(np.max(np.abs(np.log(ratios)))),
            "worst_bcdata_index_mae": float(np.max(bc)),
        }
    return out


def chosen_gate(summary: dict) -> str:
    """The selection rule of the module docstring."""
    base = summary["none"]["worst_bcdata_index_mae"]
    ok = [g for g, s in summary.items() if s["worst_bcdata_index_mae"] <= base + 0.02]
    return min(ok, key=lambda g: summary[g]["worst_abs_log_ratio"])


def learned_decision(learned: dict, bundled: dict, detection: dict) -> tuple[bool, str]:
    """Approach 3's rule (module docstring): does the learned-class candidate replace the
    bundled scorer? ``learned`` / ``bundled``: the val summaries of :func:`summarise`;
    ``detection``: the candidate's entry in results/ki67_candidates.json."""
    gate = learned_gate(learned, bundled)
    if gate is None:
        limit = bundled["none"]["worst_bcdata_index_mae"] + 0.02
        return False, f"no gate keeps the worst bcdata index MAE within {limit:.3f}"
    old_gate = chosen_gate(bundled)
    a, b = learned[gate]["worst_abs_log_ratio"], bundled[old_gate]["worst_abs_log_ratio"]
    f, f0, err = detection["val_f1"], detection["previous_val_f1"], detection["val_f1_error"]
    n, n0 = detection["noise_detections"], detection["previous_noise_detections"]
    why = (f"worst |log count ratio| {a:.3f} ({gate}) vs {b:.3f} ({old_gate}); val F1 {f:.3f} vs "
           f"{f0:.3f} (sampling error {err:.3f}); noise {n} vs {n0}")  # fmt: skip
    return bool(a < b and f >= f0 - err and n <= n0), why


def learned_gate(learned: dict, bundled: dict) -> str | None:
    """A candidate's gate under approach 3's rule: the smallest worst |log count ratio| among
    its gates whose worst bcdata index MAE is within the bundled scorer's ``none`` + 0.02."""
    limit = bundled["none"]["worst_bcdata_index_mae"] + 0.02
    ok = [g for g, x in learned.items() if x["worst_bcdata_index_mae"] <= limit]
    return min(ok, key=lambda g: learned[g]["worst_abs_log_ratio"]) if ok else None


def candidate_record(path: Path) -> dict:
    """The candidate's entry in results/ki67_candidates.json (train_ki67_model's val F1 and
    noise figures), found by the file's SHA-256."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        return candidate_record_by_sha(digest)
    except StopIteration:
        msg = f"{path} is no candidate of results/ki67_candidates.json (SHA-256)"
        raise SystemExit(msg) from None


def results_name(split: str, learned: str | None = None) -> str:
    """The results file of a split: the bundled scorer's, or (``learned``: the first 8 hex
    digits of a candidate file's SHA-256) a learned-class candidate's."""
    return f"ki67_tumour_only_{f'learned_{learned}_' if learned else ''}{split}"


def gate_file_of(learned: str | None = None) -> Path:
    """The fitted morphology gate of the bundled scorer or of a candidate (see above)."""
    return RESULTS / f"ki67_tumour_gate{f'_learned_{learned}' if learned else ''}.json"


def short_sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8]


def learned_runs() -> list[str]:
    """The candidates scored so far (short SHA-256), oldest first."""
    files = sorted(RESULTS.glob("ki67_tumour_only_learned_*_val.json"),
                   key=lambda f: json.loads(f.read_text())["machine"]["date"])  # fmt: skip
    return [f.name.split("_")[4] for f in files]


def report() -> None:
    lines = ["## Ki67: tumour nuclei only (`benchmarks/ki67_tumour_only.py`)", ""]
    runs = [(split, None) for split in ("val", "test")]
    runs += [(split, sha) for sha in learned_runs() for split in ("val", "test")]
    for split, learned in runs:
        path = RESULTS / f"{results_name(split, learned)}.json"
        if not path.exists():
            continue
        res = json.loads(path.read_text())
        s = res["summary"]
        if learned:
            lines += [f"Approach 3, a learned non-tumour class (candidate {learned}, "
                      f"{res['candidate_description']}):", ""]  # fmt: skip
        cases = list(next(iter(s.values()))["cases"])
        lines += [
            f"**{split}** — `{res['command']}`. {machine_line(res['machine'])} "
            f"Count ratio = tumour nuclei scored / annotated (goal {GOAL_RATIO[0]}–"
            f"{GOAL_RATIO[1]}); pooled index scored vs annotated; per-image index MAE (goal ≤ "
            f"{GOAL_MAE}); crchisto-ihc: share of the scored nuclei on inflammatory or fibroblast "
            "points.",
            "",
            "| gate | " + " | ".join(cases) + " |",
            "|---|" + "---|" * len(cases),
        ]
        for gate, g in s.items():
            cells = []
            for case in cases:
                c = g["cases"][case]
                text = (f"ratio {c['count_ratio']:.2f}, index {c['pooled_index']:.3f} vs "
                        f"{c['pooled_index_truth']:.3f}, MAE {c['index_mae']:.3f}")  # fmt: skip
                if "non_tumour_share" in c:
                    text += (f", non-tumour {c['non_tumour_share']:.0%}, tumour found "
                             f"{c['tumour_found']:.0%}")  # fmt: skip
                cells.append(text)
            lines.append(f"| {gate} | " + " | ".join(cells) + " |")
        met = [g for g, x in s.items()
               if all(GOAL_RATIO[0] <= c["count_ratio"] <= GOAL_RATIO[1] and c["index_mae"]
                      <= GOAL_MAE for c in x["cases"].values())]  # fmt: skip
        chosen = ("" if learned else  # a candidate's gate is named in its decision below
                  f"Chosen by the rule: **{chosen_gate(s)}**. ")  # fmt: skip
        lines += ["", f"{chosen}Goals met on every case by: {', '.join(met) or 'none'}.", ""]
        if "decision" in res:
            d = res["decision"]
            lines += [f"Learned class vs the bundled scorer (rule above): "
                      f"{'**replaces it**' if d['replace'] else '**bundled scorer kept**'} — "
                      f"{d['why']}.", ""]  # fmt: skip
    lines += approach3_summary()
    update_benchmarks_md("ki67_tumour_only", "\n".join(lines).rstrip())
    print("\n".join(lines))


def approach3_summary() -> list[str]:
    """What each learned-class candidate changed on val against the bundled scorer (both
    without a gate) and which part of the rule stopped it: computed from the results."""
    bundled_path = RESULTS / "ki67_tumour_only_val.json"
    if not learned_runs() or not bundled_path.exists():
        return []
    bundled = json.loads(bundled_path.read_text())["summary"]
    b = bundled["none"]["cases"]["crchisto-ihc"]
    b_worst = bundled[chosen_gate(bundled)]["worst_abs_log_ratio"]
    lines = ["Approach 3 on val, without any gate (the bundled scorer: crchisto-ihc count ratio "
             f"{b['count_ratio']:.2f}, spurious index {b['pooled_index']:.3f}):", ""]  # fmt: skip
    for sha in learned_runs():
        res = json.loads((RESULTS / f"{results_name('val', sha)}.json").read_text())
        c = res["summary"]["none"]["cases"]["crchisto-ihc"]
        rec = candidate_record_by_sha(res["candidate_sha256"])
        stops = []
        if rec["val_f1"] < rec["previous_val_f1"] - rec["val_f1_error"]:
            stops.append(f"BCData val F1 {rec['val_f1']:.3f} vs {rec['previous_val_f1']:.3f}, "
                         f"beyond its sampling error {rec['val_f1_error']:.3f}")  # fmt: skip
        gate = learned_gate(res["summary"], bundled)
        worst = None if gate is None else res["summary"][gate]["worst_abs_log_ratio"]
        if worst is None or worst >= b_worst:
            stops.append(f"worst |log count ratio| {'–' if worst is None else f'{worst:.3f}'} "
                         f"({gate}) not below the bundled scorer's {b_worst:.3f}")  # fmt: skip
        lines.append(f"- candidate {sha} ({rec['command']['iterations']} iterations, CRCHisto loss weight "
                     f"{rec['command'].get('crchisto_weight', 1.0):g}, class gain "
                     f"{rec['class_gain']}): crchisto-ihc count ratio {c['count_ratio']:.2f}, "
                     f"spurious index {c['pooled_index']:.3f}; "
                     + ("replaces the bundled scorer" if res["decision"]["replace"]
                        else "stopped by: " + ("; ".join(stops) or "the rule")) + ".")  # fmt: skip
    return lines


def candidate_record_by_sha(digest: str) -> dict:
    history = json.loads((RESULTS / "ki67_candidates.json").read_text())
    return next(h for h in reversed(history) if h.get("sha256") == digest)


def bundle_gate(candidate: str | None = None) -> None:
    """The morphology gate with the threshold the val run chose, stored in the bundled Ki67
    model (``training.tumour_gate``; weights unchanged, float16 as before). With a
    ``candidate`` (approach 3), only when its val run decided that it replaces the bundled
    model: the candidate, with its own chosen gate (none: no gate), becomes the bundled
    model, and its entry in results/ki67_candidates.json says so."""
    learned = short_sha(candidate) if candidate is not None else None
    name = results_name("val", learned)
    val = json.loads((RESULTS / f"{name}.json").read_text())
    choice = chosen_gate(val["summary"])
    path = bundled_model_path("ki67")
    if candidate is not None:
        digest = hashlib.sha256(Path(candidate).read_bytes()).hexdigest()
        if val.get("candidate_sha256") != digest:
            raise SystemExit(f"{candidate} is not the candidate {name}.json scored")
        if not val["decision"]["replace"]:
            raise SystemExit(f"the rule kept the bundled scorer: {val['decision']['why']}")
        model = Model.load(candidate)
        mark_candidate_bundled(digest)
    else:
        model = Model.load(path)
    model.training.pop("tumour_gate", None)
    if choice.startswith("morphology@"):
        gate_file = gate_file_of(learned)
        gate = {k: v for k, v in json.loads(gate_file.read_text()).items() if k != "machine"}
        gate |= {"threshold": float(choice.split("@")[1]),
                 "chosen_on": f"benchmarks/ki67_tumour_only.py, val (results/{name}.json)"}  # fmt: skip
        model.training["tumour_gate"] = gate
    elif candidate is None:
        raise SystemExit(f"val chose {choice!r}: no gate to bundle")
    model.save(path, half=True)
    print(f"{path}: gate {choice}" + (f" (the candidate {candidate})" if candidate else ""))


def mark_candidate_bundled(digest: str) -> None:
    """Mark the candidate with this SHA-256 bundled in results/ki67_candidates.json, by the
    tumour-only rule (train_ki67_model leaves such a candidate to it)."""
    history = json.loads((RESULTS / "ki67_candidates.json").read_text())
    entry = next(h for h in reversed(history) if h.get("sha256") == digest)
    entry["kept"], entry["rule"] = True, "tumour-only rule (ki67_tumour_only --candidate)"
    write_results("ki67_candidates", history)


THRESHOLDS = tuple(np.round(np.arange(0.3, 0.701, 0.05), 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit", action="store_true", help="fit the morphology gate on train first")
    ap.add_argument("--final", action="store_true", help="needed with --split test (run once)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--candidate", help="a learned-class candidate model file (approach 3)")
    ap.add_argument("--bundle", action="store_true",
                    help="write the gate chosen on val into the bundled Ki67 model and stop")  # fmt: skip
    args = ap.parse_args()
    if args.report_only:
        report()
        return
    if args.bundle:
        bundle_gate(args.candidate)
        return
    if args.split == "test" and not args.final:
        ap.error("test is scored once, after the choice on val: add --final")
    mach = machine()
    learned = short_sha(args.candidate) if args.candidate is not None else None
    path = Path(args.candidate) if learned else bundled_model_path("ki67")
    model = Model.load(path)
    gate_file = gate_file_of(learned)
    if args.fit:
        x, y, counts = training_samples(model)
        gate = fit_gate(x, y) | {"training_samples": counts, "tumour_share": float(y.mean())}
        write_results(gate_file.stem, gate | {"machine": mach})
    gate = json.loads(gate_file.read_text()) if gate_file.exists() else None
    if args.split == "val":
        gates = ["none", "roi"] + ([f"morphology@{t:g}" for t in THRESHOLDS] if gate else [])
    else:
        val = json.loads((RESULTS / f"{results_name('val', learned)}.json").read_text())
        gates = ["none", chosen_gate(val["summary"])]
    rows = case_rows(model, args.split, args.seed, gate, list(dict.fromkeys(gates)))
    res = {"machine": mach, "model_sha256": model.fingerprint(), "split": args.split,
           "seed": args.seed, "gate": gate, "rows": rows, "summary": summarise(rows),
           "command": f"python -m benchmarks.ki67_tumour_only --split {args.split}"
                      + (f" --candidate {args.candidate}" if learned else "")
                      + (" --fit" if args.fit else "") + (" --final" if args.final else "")}  # fmt: skip
    if learned:
        record = candidate_record(path)
        res |= {"candidate": args.candidate, "candidate_sha256": record["sha256"],
                "candidate_description": model.training.get("description", "")}  # fmt: skip
        if args.split == "val":
            bundled = json.loads((RESULTS / "ki67_tumour_only_val.json").read_text())["summary"]
            replace, why = learned_decision(res["summary"], bundled, record)
            res["decision"] = {"replace": replace, "why": why}
    write_results(results_name(args.split, learned), res)
    report()


if __name__ == "__main__":
    main()
