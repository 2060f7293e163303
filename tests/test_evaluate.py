"""`cellmaps evaluate`: truth against itself, known perturbations, JSON layout, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cellmaps.cli import main
from cellmaps.io import Dataset, Points, write_mask, write_points
from cellmaps.metrics import evaluate
from tests.conftest import DATASETS, shared_dataset


@pytest.mark.parametrize("name", DATASETS)
def test_truth_against_itself_is_perfect_on_every_shared_dataset(name):
    root = shared_dataset(name)
    r = evaluate(root, root)
    s = r["summary"]
    assert s["tp"] == sum(v["n_truth"] for v in r["per_image"].values()) > 0
    assert s["fp"] == s["fn"] == 0
    assert s["precision"] == s["recall"] == s["f1"] == 1.0
    assert s["count_mae"] == 0.0
    if "dice" in s:
        for k in ("dice", "aji", "cds", "object_dice", "pixel_accuracy", "pixel_f1", "ap"):
            assert s[k] == 1.0, k
    if "classification" in s:
        assert s["classification"]["weighted"]["f1"] == 1.0
    if "ki67" in s:
        assert s["ki67"]["index_mae"] == 0.0


def test_iou_protocol_against_itself(monuseg):
    s = evaluate(monuseg, monuseg, split="test", protocol="iou")["summary"]
    assert s["f1"] == 1.0 and s["aji"] == 1.0


def make_pred_folder(src: Dataset, dst, split, shift=0.0, drop_every=0, relabel=None, score=False):
    """Write predictions derived from the truth with known changes."""
    for image_id in src.ids(split):
        p = src.points(image_id)
        keep = np.ones(len(p), bool)
        if drop_every:
            keep[::drop_every] = False
        labels = p.labels[keep][p.coords[keep][:, 0] + shift < src.shape(image_id)[0] - 0.5]
        if relabel:
            labels = np.array([relabel.get(x, x) for x in labels], dtype=object)
        h, w = src.shape(image_id)
        coords = p.coords[keep] + [shift, 0]
        coords = coords[coords[:, 0] < h - 0.5]  # shifted out of the image: not predicted
        write_points(
            dst / "points" / f"{image_id}.csv",
            Points(coords, labels, np.linspace(1, 0, len(coords)) if score else None),
        )


def test_known_perturbations_give_known_scores(crchisto, tmp_path):
    ds = Dataset(crchisto)
    make_pred_folder(ds, tmp_path, "test", shift=0.0, drop_every=4, score=True)
    r = evaluate(crchisto, tmp_path, split="test")
    s = r["summary"]
    n = sum(len(ds.points(i)) for i in ds.ids("test"))
    dropped = sum(len(range(0, len(ds.points(i)), 4)) for i in ds.ids("test"))
    assert s["fn"] == dropped and s["fp"] == 0 and s["tp"] == n - dropped
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx((n - dropped) / n)
    assert "pr_auc" in s


def test_shift_beyond_radius_loses_everything(crchisto, tmp_path):
    ds = Dataset(crchisto)
    make_pred_folder(ds, tmp_path, "val", shift=3.0)
    near = evaluate(crchisto, tmp_path, split="val", radius=6)["summary"]
    assert near["mean_distance"] == pytest.approx(3.0, abs=0.01)
    assert near["fp"] == 0 and near["fn"] > 0  # points shifted off the bottom edge are missed
    # CRCHisto nuclei can sit closer than 3 px, so a few pairs trade partners; recall stays high.
    assert near["recall"] > 0.99
    far = evaluate(crchisto, tmp_path, split="val", radius=2.9)["summary"]
    assert far["tp"] <= near["fn"] + 50 and far["recall"] < 0.05


def test_classification_swap_is_scored(crchisto, tmp_path):
    ds = Dataset(crchisto)
    make_pred_folder(ds, tmp_path, "test", relabel={"fibroblast": "inflammatory"})
    s = evaluate(crchisto, tmp_path, split="test")["summary"]
    c = s["classification"]["per_class"]
    assert s["f1"] == 1.0
    assert c["fibroblast"]["tp"] == 0 and c["fibroblast"]["recall"] == 0.0
    assert c["inflammatory"]["recall"] == 1.0 and c["inflammatory"]["precision"] < 1.0
    assert c["epithelial"]["f1"] == 1.0


def test_cli_writes_json_with_summary_and_per_image(monuseg, tmp_path, capsys):
    pred = tmp_path / "pred"
    ds = Dataset(monuseg)
    for image_id in ds.ids("test"):
        m = ds.mask(image_id)
        m[m % 5 == 0] = 0  # drop every object whose id is a multiple of 5
        write_mask(pred / "masks" / f"{image_id}.tif", m)
    out = tmp_path / "r.json"
    code = main(
        [
            "evaluate",
            "--truth",
            str(monuseg),
            "--pred",
            str(pred),
            "--split",
            "test",
            "--json",
            str(out),
            "--plot",
            str(tmp_path / "r.png"),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean over 14 images" in printed and "pooled over images" in printed
    r = json.loads(out.read_text())
    for k in (
        "precision",
        "recall",
        "f1",
        "tp",
        "fp",
        "fn",
        "dice",
        "aji",
        "cds",
        "pixel_accuracy",
        "pixel_f1",
    ):
        assert k in r["summary"]
    assert set(r["per_image"]) == set(ds.ids("test"))
    assert r["summary"]["precision"] == 1.0 and r["summary"]["recall"] < 1.0
    assert set(r["per_group"]) == {ds.group_of(i) for i in ds.ids("test")}
    assert (tmp_path / "r.png").stat().st_size > 10_000


def test_cli_errors_name_the_problem(crchisto, tmp_path, capsys):
    (tmp_path / "points").mkdir()
    shutil.copy(crchisto / "points" / "crc_img1.csv", tmp_path / "points")
    args = ["evaluate", "--truth", str(crchisto), "--pred", str(tmp_path), "--quiet"]
    assert main([*args, "--strict"]) == 2
    assert "no prediction for 99 of 100 images" in capsys.readouterr().err
    # without --strict: the one image with a prediction is scored, the rest named in a warning
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    assert "warning: " in (err := capsys.readouterr().err) and "scoring the other 1" in err
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert summary["n_images"] == 1 and summary["n_images_without_prediction"] == 99
    assert summary["f1"] == 1.0  # its own annotations as the prediction
    (tmp_path / "points" / "crc_img1.csv").rename(tmp_path / "points" / "elsewhere.csv")
    assert main(args) == 2  # nothing to score at all
    assert "no prediction for 100 of 100" in capsys.readouterr().err
    assert (
        main(["evaluate", "--truth", str(crchisto), "--pred", str(tmp_path), "--split", "tst"]) == 2
    )
    assert "unknown split 'tst'" in capsys.readouterr().err
    shutil.copytree(crchisto / "points", tmp_path / "points", dirs_exist_ok=True)
    (tmp_path / "points" / "crc_img1.csv").write_text("x,y,label\n600,3,nucleus\n")
    assert main(["evaluate", "--truth", str(crchisto), "--pred", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "crc_img1.csv" in err and "outside the 500x500 image" in err
    assert (
        main(["evaluate", "--truth", str(crchisto), "--pred", str(crchisto), "--protocol", "iou"])
        == 2
    )
    assert "protocol 'iou' needs masks" in capsys.readouterr().err


def test_evaluate_by_group_and_with_the_one_to_one_protocol_by_hand(tmp_path, capsys):
    """Two groups of one image each. Image a (group g1): truth at (10,10) and (30,30),
    predictions at (12,10) and (50,50) → TP 1, FP 1, FN 1. Image b (g2): truth (10,10),
    predictions (13,10) and (10,14), both within r 6 → Hungarian TP 1 FP 1; one-to-one TP 0
    (the truth point has two partners, DeepDistance §4.2) FP 2 FN 1."""
    import json

    from PIL import Image

    from cellmaps.cli import main

    truth, pred = tmp_path / "t", tmp_path / "p"
    for root in (truth, pred):
        (root / "points").mkdir(parents=True)
    (truth / "images").mkdir()
    for i in ("a", "b"):
        Image.fromarray(np.zeros((60, 60), np.uint8)).save(truth / "images" / f"{i}.png")
    (truth / "splits.csv").write_text("id,split,group\na,test,g1\nb,test,g2\n")
    (truth / "points" / "a.csv").write_text("x,y,label\n10,10,n\n30,30,n\n")
    (pred / "points" / "a.csv").write_text("x,y,label\n10,12,n\n50,50,n\n")
    (truth / "points" / "b.csv").write_text("x,y,label\n10,10,n\n")
    (pred / "points" / "b.csv").write_text("x,y,label\n10,13,n\n14,10,n\n")

    def run(*extra):
        out = tmp_path / "r.json"
        argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--json", str(out)]
        assert main([*argv, "--quiet", *extra]) == 0
        capsys.readouterr()
        return json.loads(out.read_text())

    r = run()
    assert (r["summary"]["tp"], r["summary"]["fp"], r["summary"]["fn"]) == (2, 2, 1)
    g = r["per_group"]
    assert (g["g1"]["tp"], g["g1"]["fp"], g["g1"]["fn"]) == (1, 1, 1)
    assert (g["g2"]["tp"], g["g2"]["fp"], g["g2"]["fn"]) == (1, 1, 0)
    s = run("--group", "g2")["summary"]
    assert s["n_images"] == 1 and (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    s = run("--protocol", "one-to-one")["per_group"]["g2"]
    assert (s["tp"], s["fp"], s["fn"]) == (0, 2, 1)
    assert main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--group", "g3"]) == 2
    assert "unknown group 'g3'" in capsys.readouterr().err


def test_evaluate_scores_only_the_labels_asked_for(tmp_path, capsys):
    """Truth: a positive at (10,10) and a negative at (30,30). Prediction: both found, plus a
    'non_tumour' nucleus at (50,50). All labels: TP 2, FP 1; --labels positive,negative: TP 2,
    FP 0, and the Ki67 index is the truth's (1/2) on both sides."""
    import json

    from PIL import Image

    truth, pred = tmp_path / "t", tmp_path / "p"
    for root in (truth, pred):
        (root / "points").mkdir(parents=True)
    (truth / "images").mkdir()
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(truth / "images" / "a.png")
    (truth / "points" / "a.csv").write_text("x,y,label\n10,10,positive\n30,30,negative\n")
    (pred / "points" / "a.csv").write_text(
        "x,y,label\n11,10,positive\n30,31,negative\n50,50,non_tumour\n"
    )
    out = tmp_path / "r.json"
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--json", str(out), "--quiet"]
    assert main(argv) == 0
    s = json.loads(out.read_text())["summary"]
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 0)
    assert main([*argv, "--labels", "positive, negative"]) == 0
    s = json.loads(out.read_text())["summary"]
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)
    assert s["ki67"]["pooled_pred"] == s["ki67"]["pooled_truth"] == 0.5
    capsys.readouterr()


def _one_image_folders(tmp_path, truth_csv: str, pred_csv: str):
    from PIL import Image

    truth, pred = tmp_path / "t", tmp_path / "p"
    for root in (truth, pred):
        (root / "points").mkdir(parents=True)
    (truth / "images").mkdir()
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(truth / "images" / "a.png")
    (truth / "points" / "a.csv").write_text(truth_csv)
    (pred / "points" / "a.csv").write_text(pred_csv)
    return truth, pred


@pytest.mark.parametrize("labels", ["foo", "pos,itive", "positive,foo"])
def test_a_label_on_neither_side_is_refused_naming_the_labels_present(tmp_path, capsys, labels):
    """A typo in --labels used to score nothing against nothing: TP = FP = FN = 0 and
    P = R = F1 = 1.0, exit 0."""
    truth, pred = _one_image_folders(
        tmp_path, "x,y,label\n10,10,positive\n30,30,negative\n", "x,y,label\n11,10,positive\n"
    )
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--quiet"]
    assert main([*argv, "--labels", labels]) == 2
    err = capsys.readouterr().err
    assert "neither the truth nor the predictions" in err
    assert "['negative', 'positive']" in err


def test_scores_with_a_zero_denominator_are_undefined_not_one(tmp_path, capsys):
    """Truth and prediction both empty: TP = FP = FN = 0, so P, R and F1 are 0/0: null in the
    JSON with a note, '–' in the table; no detections against one object: recall 0 and
    precision undefined."""
    truth, pred = _one_image_folders(tmp_path, "x,y,label\n", "x,y,label\n")
    out = tmp_path / "r.json"
    argv = ["evaluate", "--truth", str(truth), "--pred", str(pred), "--json", str(out), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    s = json.loads(out.read_text())["summary"]
    assert s["precision"] is None and s["recall"] is None and s["f1"] is None
    assert any("f1 is undefined" in n for n in s["notes"]) and "f1 is undefined" in table
    (truth / "points" / "a.csv").write_text("x,y,label\n10,10,nucleus\n")
    assert main(argv) == 0
    s = json.loads(out.read_text())["summary"]
    assert s["recall"] == 0.0 and s["f1"] == 0.0 and s["precision"] is None
    assert s["notes"] == ["precision is undefined: nothing was detected (TP + FP = 0)"]


def test_duplicated_truth_points_are_counted_and_warned(tmp_path):
    truth, pred = _one_image_folders(
        tmp_path,
        "x,y,label\n10,10,n\n10,10,n\n10,10,n\n30,30,n\n",
        "x,y,label\n10,11,n\n30,30,n\n",
    )
    with pytest.warns(UserWarning, match=r"2 truth point\(s\) in 1 image\(s\) repeat"):
        s = evaluate(truth, pred)["summary"]
    assert s["truth_duplicates"] == 2 and s["fn"] == 2  # the copies are still scored


def test_json_or_plot_into_a_folder_is_refused_naming_the_option(tmp_path, capsys):
    truth, pred = _one_image_folders(tmp_path, "x,y,label\n10,10,n\n", "x,y,label\n10,10,n\n")
    (tmp_path / "dir").mkdir()
    for option in ("--json", "--plot"):
        argv = [
            "evaluate",
            "--truth",
            str(truth),
            "--pred",
            str(pred),
            option,
            str(tmp_path / "dir"),
        ]
        assert main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{option} takes a file name, but a folder is there" in err and ".tmp" not in err


def test_cli_shows_a_warning_as_one_plain_line(tmp_path, capsys):
    truth, pred = _one_image_folders(
        tmp_path, "x,y,label\n10,10,n\n10,10,n\n", "x,y,label\n10,10,n\n"
    )
    assert main(["evaluate", "--truth", str(truth), "--pred", str(pred), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("cellmaps evaluate: warning: 1 truth point(s) in 1 image(s) repeat")
    assert "UserWarning" not in err and len(err.strip().splitlines()) == 1


def test_json_ready_writes_a_models_decode_settings_as_the_file_stores_them():
    from cellmaps.metrics.evaluate import json_ready
    from cellmaps.model import Model, bundled_model_path

    model = Model.load(bundled_model_path("ki67"))
    out = json.loads(json.dumps(json_ready({"decode": model.decode, "x": np.float32(0.5)})))
    assert out["decode"] == model.decode.as_dict()
    assert out["decode"]["xi"] == model.decode["xi"] and out["x"] == 0.5
