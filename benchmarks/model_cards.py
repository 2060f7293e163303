"""Write the bundled models' cards (``src/cellmaps/models/cards.json``) from the model files
and the results JSON of the scripts that trained and scored them (no figure typed by hand).

    python -m benchmarks.model_cards

What a script cannot know — the data's licence, the modality, what the model finds — is in
:data:`FACTS` below; every figure comes from ``results/<name>.json`` or the model file.
"""

from __future__ import annotations

import argparse
import hashlib
import json

from benchmarks._common import REPO, RESULTS
from cellmaps.io._atomic import write_text_atomic
from cellmaps.io.modality import BRIGHTFIELD, FLUORESCENCE
from cellmaps.model import Model

MODELS = REPO / "src" / "cellmaps" / "models"
LICENCE = {
    "crchisto": "research use only, cite the paper (no open licence)",
    "monuseg": "CC BY-NC-SA 4.0",
    "mbm_bonemarrow": "none stated; cite the papers",
    "bcdata_ki67": "none stated; academic research use, cite the paper",
    "dsb2018_fluo": "CC0 (BBBC038)",
}
FACTS = {
    "default": {
        "what": "nuclei as points (no outlines) in H&E and IHC brightfield images",
        "what_outlines": "nuclei as points and outlines (--masks: the cell pixels split by a "
        "watershed from the detections) in H&E and IHC brightfield images",
        "modality": BRIGHTFIELD,
        "scale": "trained at a nucleus radius of 6 px (CRCHisto 20x, MoNuSeg and MBM 40x "
        "resampled to it); each input's scale estimated (inference.object_size: auto)",
        "data": ["crchisto", "monuseg", "mbm_bonemarrow"],
        "results": "default_model",
        "command": "python -m benchmarks.train_default_model (results/default_model.json "
        "'command' for its options)",
    },
    "ki67": {
        "what": "Ki67-positive and -negative tumour nuclei (points with a class) in IHC images",
        "modality": BRIGHTFIELD,
        "scale": "BCData's one magnification (about 20x, not stated at source); give "
        "--object-size for other scanners",
        "data": ["bcdata_ki67"],
        "results": "ki67_model",
        "command": "python -m benchmarks.train_ki67_model (results/ki67_model.json 'command')",
    },
    "fluo-nuclei": {
        "what": "fluorescent nuclei, points and outlines (--masks: DeepSplit's border-limited "
        "split)",
        "modality": FLUORESCENCE,
        "scale": "trained at a nucleus radius of 8 px (DSB 2018 images resampled to it)",
        "data": ["dsb2018_fluo"],
        "results": "fluo_model",
        "command": "python -m benchmarks.train_fluo_model",
    },
}


def detection_rows(rows: list[dict]) -> list[str]:
    return [
        f"{r['dataset']} test, {r['n_images']} images, scale "
        f"{'given' if r.get('object_size') else 'estimated'}: F1 {r['f1']:.3f} "
        f"(P {r['precision']:.3f}, R {r['recall']:.3f}; match radius {r['radius']:g} px)"
        for r in rows
    ]


def scale_shift_rows() -> list[str] | None:
    """The default model's test F1 with the scale estimated by today's estimator (``net``)
    and given, at the images' own magnification and rescaled, from results/scale_shift_test.json
    (None before that run)."""
    path = RESULTS / "scale_shift_test.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    if res.get("model_sha256") != Model.load(MODELS / "default.safetensors").fingerprint():
        return None  # measured on another model: rerun benchmarks/scale_shift.py
    f1 = {(c["source"], c["shift"], c["policy"]): c["f1"] for c in res["cells"]}
    rows = []
    for source in dict.fromkeys(c["source"] for c in res["cells"]):
        est = {s: f1[(source, s, "net")] for (src, s, pol) in f1 if src == source and pol == "net"}
        given = f1[(source, 1.0, "given")]
        rows.append(f"{source} test, scale estimated: F1 {est[1.0]:.3f} (given: {given:.3f}); "
                    f"rescaled 0.5-2: {min(est.values()):.3f}-{max(est.values()):.3f} "
                    "(benchmarks/scale_shift.py)")  # fmt: skip
    return rows


def tumour_gate_rows() -> list[str]:
    """The Ki67 scorer with its tumour gate on the test stand-ins
    (results/ki67_tumour_only_test.json), when that run exists."""
    path = RESULTS / "ki67_tumour_only_test.json"
    if not path.is_file():
        return []
    s = json.loads(path.read_text())["summary"]
    gate = next((g for g in s if g.startswith("morphology")), None)
    if gate is None:
        return []
    crc, bc = s[gate]["cases"]["crchisto-ihc"], s[gate]["cases"]["bcdata ×1"]
    before = s["none"]["cases"]["crchisto-ihc"]
    return [f"tumour gate ({gate}): BCData test count ratio {bc['count_ratio']:.2f}; CRCHisto "
            f"test as IHC, nuclei scored / epithelial {crc['count_ratio']:.2f} (without the "
            f"gate {before['count_ratio']:.2f}), spurious index {crc['pooled_index']:.3f} "
            f"(benchmarks/ki67_tumour_only.py)"]  # fmt: skip


def test_rows(name: str, res: dict) -> list[str]:
    """The test figures of a results JSON, as the card prints them."""
    t = res["test"]
    if name == "default":
        shift = scale_shift_rows()
        outlines = res.get("outlines_test")
        rows = [] if not outlines else [
            f"monuseg test, {outlines['n_images']} images, outlines (scale given): AJI "
            f"{outlines['aji']:.3f}, Dice {outlines['dice']:.3f}, PQ {outlines['pq']:.3f} (SQ "
            f"{outlines['sq']:.3f}, DQ {outlines['dq']:.3f})"
        ]  # fmt: skip
        if shift is None:
            return detection_rows(t) + rows
        return detection_rows([r for r in t if r.get("object_size")]) + shift + rows
    if name == "ki67":
        k = t["ki67"]
        return [
            f"bcdata_ki67 test, {t['n_images']} images: detection F1 {t['f1']:.3f}; class F1 "
            f"positive {t['classification']['per_class']['positive']['f1']:.3f}, negative "
            f"{t['classification']['per_class']['negative']['f1']:.3f}; Ki67 index MAE "
            f"{k['index_mae']:.3f} (pooled {k['pooled_pred']:.3f} vs {k['pooled_truth']:.3f})"
            + (
                "; with the tumour gate"
                if res.get("scored_with_tumour_gate")
                else "; before the tumour gate"
                if tumour_gate_rows()
                else ""
            )  # fmt: skip
        ] + tumour_gate_rows()
    return [
        f"dsb2018_fluo test: DSC {t['dsc']:.3f}, AJI {t['aji']:.3f}, CDS {t['cds']:.3f} "
        f"(P {t['precision']:.3f}, R {t['recall']:.3f})"
    ]


def validation_rows(model: Model, res: dict) -> list[str]:
    t = model.training
    if "split_choice" in t:
        c = t["split_choice"]
        return [f"dsb2018_fluo val: CDS {c['cds']:.3f}, AJI {c['aji']:.3f} (post-processing "
                "chosen here)"]  # fmt: skip
    where = ", ".join(str(s["folder"]).rstrip("/").split("/")[-1] for s in t.get("tuned_on", []))
    return [f"pooled F1 {t['tuned_f1']:.3f} on the val images of {where} (ξ and floor chosen)"]


def card(name: str) -> dict | None:
    facts = FACTS[name]
    path = MODELS / f"{name}.safetensors"
    results = RESULTS / f"{facts['results']}.json"
    if not path.is_file() or not results.is_file():
        return None
    res = json.loads(results.read_text())
    model = Model.load(path)
    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "what": facts["what_outlines"]
        if model.can_outline and "what_outlines" in facts
        else facts["what"],
        "modality": facts["modality"],
        "scale": facts["scale"],
        "data": [{"name": d, "role": "train/val", "licence": LICENCE[d]} for d in facts["data"]],
        "validation": validation_rows(model, res),
        "test": test_rows(name, res),
        "command": facts["command"],
        "description": model.training.get("description", ""),
    }


README = REPO / "README.md"
#: the command a newcomer runs with each bundled model on a folder of their own images
RUN = {
    "default": "cellmaps predict my_images/ --out results/",
    "ki67": "cellmaps ki67 my_ihc_images/ --out ki67/",
    "fluo-nuclei": "cellmaps predict fluo-nuclei my_images/ --masks --out results/",
}


def first_test_row(card_: dict) -> str:
    """The card's first test line, shortened to its first figure."""
    row = card_["test"][0] if card_["test"] else ""
    return row.split(" (")[0]


def models_table(cards: dict) -> str:
    """The README's table of bundled models (name, what it finds, the command, one test
    figure), from the cards: no figure typed."""
    lines = [
        "| model | finds | run it on your folder | test (more: `cellmaps models NAME`) |",
        "|---|---|---|---|",
    ]
    for name, c in cards.items():
        lines.append(f"| `{name}` | {c['what']} | `{RUN[name]}` | {first_test_row(c)} |")
    return "\n".join(lines)


def update_readme_models(cards: dict) -> None:
    """Replace the text between the README's models markers with :func:`models_table`."""
    begin, end = "<!-- BEGIN models (benchmarks/model_cards.py) -->", "<!-- END models -->"
    text = README.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise SystemExit(f"README.md has no {begin} ... {end} markers")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    write_text_atomic(README, f"{head}{begin}\n{models_table(cards)}\n{end}{tail}")


DOCS_MODELS = REPO / "docs" / "models.md"


def models_page(cards: dict) -> str:
    """docs/models.md: every bundled model's card, from cards.json (no figure typed)."""
    out = [
        "# Bundled models",
        "",
        "Written by `python -m benchmarks.model_cards` from the model files and the results "
        "JSON; `cellmaps models NAME` prints the same card.",
        "",
        models_table(cards),
    ]
    for name, c in cards.items():
        out += ["", f"## `{name}`", "", c["description"], "",
                f"- **Finds:** {c['what']}", f"- **Modality:** {c['modality']}",
                f"- **Scale:** {c['scale']}",
                "- **Training data:** " + "; ".join(f"{d['name']} ({d['role']}; licence: "
                                                     f"{d['licence']})" for d in c["data"]),
                f"- **Trained by:** `{c['command']}`", "", "Validation:", ""]  # fmt: skip
        out += [f"- {v}" for v in c["validation"]] + ["", "Test (scored once):", ""]
        out += [f"- {t}" for t in c["test"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    cards = {n: c for n in FACTS if (c := card(n)) is not None}
    write_text_atomic(MODELS / "cards.json", json.dumps(cards, indent=1) + "\n")
    update_readme_models(cards)
    write_text_atomic(DOCS_MODELS, models_page(cards))
    print(f"wrote {MODELS / 'cards.json'}, README's model table and {DOCS_MODELS.name}: "
          f"{', '.join(cards)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
