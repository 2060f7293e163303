"""``cellmaps crosseval``: one model per dataset, each scored on every test split; the matrix
agrees with scoring each model separately, and models are reused on a second run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from cellmaps.cli import main
from cellmaps.crosseval import summarise
from tests.test_engine import tiny_recipe


def disc_dataset(root, seed: int, dark: bool):
    """Four images of ten discs (dark on light, or light on dark): three train, one test."""
    (root / "images").mkdir(parents=True)
    (root / "points").mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for k in range(4):
        img = np.full((64, 64, 3), 210 if dark else 40, np.uint8)
        pts = rng.uniform(8, 56, size=(8, 2))
        for r, c in pts:
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 12] = (70, 40, 110) if dark else (230, 230, 120)
        Image.fromarray(img).save(root / "images" / f"{root.name}{k}.png")
        rows = ["x,y,label"] + [f"{c:.1f},{r:.1f},nucleus" for r, c in pts]
        (root / "points" / f"{root.name}{k}.csv").write_text("\n".join(rows) + "\n")
    split = ["train", "train", "train", "test"]
    (root / "splits.csv").write_text(
        "id,split\n" + "".join(f"{root.name}{k},{s}\n" for k, s in enumerate(split))
    )
    return root


def test_summary_means_by_hand():
    m = np.array([[0.9, 0.5, 0.3], [0.4, 0.8, 0.2], [0.1, 0.6, 0.7]])
    s = summarise(m)
    assert s["same_source_mean"] == pytest.approx(0.8)
    assert s["other_source_mean"] == pytest.approx((0.5 + 0.3 + 0.4 + 0.2 + 0.1 + 0.6) / 6)


def test_crosseval_matrix_matches_separate_scoring_and_reuses_models(tmp_path, capsys, monkeypatch):
    from cellmaps.model import Model
    from cellmaps.tune import score_split

    a = disc_dataset(tmp_path / "dark", 0, True)
    b = disc_dataset(tmp_path / "light", 1, False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(iterations=4)))
    out = tmp_path / "cx"
    argv = ["crosseval", "--recipe", str(recipe), "--data", str(a), "--data", str(b)]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert "same source" in capsys.readouterr().out
    r = json.loads((out / "crosseval.json").read_text())
    assert r["datasets"] == ["dark", "light"] and r["tuned_on"] == {
        "dark": "train",
        "light": "train",
    }
    for i, trained in enumerate(r["datasets"]):
        model = Model.load(out / "models" / f"{trained}.safetensors")
        for j, folder in enumerate((a, b)):
            assert r["f1"][i][j] == pytest.approx(score_split(model, folder, "test")["f1"])
    with open(out / "crosseval.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1:] == ["dark", "light"] and float(rows[2][2]) == pytest.approx(
        r["f1"][1][1], abs=1e-4
    )
    assert (out / "crosseval.png").stat().st_size > 1000
    # a second run trains nothing: the models in OUT/models are reused
    import cellmaps.training

    monkeypatch.setattr(cellmaps.training, "train", lambda *a, **k: pytest.fail("retrained"))
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "crosseval.json").read_text())["f1"] == r["f1"]
    # one radius per test set (datasets at different magnifications), in --data order
    assert main([*argv, "--out", str(out), "--quiet", "--radius", "1.5", "--radius", "6"]) == 0
    per = json.loads((out / "crosseval.json").read_text())
    assert per["radius"] == [1.5, 6.0]
    for i, trained in enumerate(per["datasets"]):
        model = Model.load(out / "models" / f"{trained}.safetensors")
        for j, (folder, rad) in enumerate(((a, 1.5), (b, 6.0))):
            assert per["f1"][i][j] == pytest.approx(score_split(model, folder, "test", rad)["f1"])
    assert main([*argv, "--out", str(out), "--quiet", *["--radius", "2"] * 3]) == 2
    assert "one per dataset (2), got 3" in capsys.readouterr().err


def test_crosseval_refuses_one_dataset_or_one_without_a_test_split(tmp_path, capsys):
    a = disc_dataset(tmp_path / "dark", 0, True)
    argv = ["crosseval", "--recipe", "micronet", "--data", str(a), "--out", str(tmp_path / "o")]
    assert main(argv) == 2 and "at least two" in capsys.readouterr().err
    b = disc_dataset(tmp_path / "light", 1, False)
    (b / "splits.csv").write_text("id,split\nlight0,train\n")
    assert main([*argv, "--data", str(b)]) == 2
    err = capsys.readouterr().err
    assert "light" in err and "missing ['test']" in err


def test_crosseval_by_group_trains_one_model_per_group_of_one_folder(tmp_path, capsys):
    """One folder holding two groups with train and test images and a third group with test
    images only: two models, the matrix over the two groups equals scoring each model on
    each group's test images, the third group is left out with the reason."""
    import shutil

    from cellmaps.model import Model
    from cellmaps.tune import score_split

    one = tmp_path / "organs"
    for sub in ("images", "points"):
        (one / sub).mkdir(parents=True)
    rows = ["id,split,group"]
    for name, seed, dark in (("dark", 0, True), ("light", 1, False)):
        src = disc_dataset(tmp_path / name, seed, dark)
        for sub in ("images", "points"):
            for f in (src / sub).iterdir():
                shutil.copy(f, one / sub / f.name)
        rows += [f"{i},{s},{name}" for i, s in (r.split(",") for r in
                 (src / "splits.csv").read_text().split()[1:])]  # fmt: skip
    rows[-1] = rows[-1].replace(",light", ",lonely")  # light3 (test) → a test-only group
    rows[-2] = rows[-2].replace(",train,", ",test,")  # light2 → test, so light keeps one
    (one / "splits.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(iterations=4)))
    out = tmp_path / "cx"
    argv = ["crosseval", "--recipe", str(recipe), "--data", str(one), "--by-group"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert "group lonely left out: no train images" in capsys.readouterr().out
    r = json.loads((out / "crosseval.json").read_text())
    assert r["datasets"] == ["dark", "light"] and r["left_out"] == {"lonely": "no train images"}
    for i, trained in enumerate(r["datasets"]):
        model = Model.load(out / "models" / f"{trained}.safetensors")
        for j, tested in enumerate(r["datasets"]):
            assert r["f1"][i][j] == pytest.approx(
                score_split(model, out / "groups" / tested, "test")["f1"]
            )
    from cellmaps.io import Dataset

    light = Dataset(out / "groups" / "light")
    assert light.ids("test") == ["light2"] and light.ids("train") == ["light0", "light1"]
    assert main(["crosseval", "--recipe", str(recipe), "--data", str(tmp_path / "dark"),
                 "--by-group", "--out", str(tmp_path / "o2")]) == 2  # fmt: skip
    assert "group column" in capsys.readouterr().err
