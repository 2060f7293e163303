"""Batch runs (``predict_paths`` / ``cellmaps predict``): an output folder belongs to one run,
a stopped run resumes where it stopped, bad images can be skipped and are reported, and
nothing already written is lost or mixed with another run's outputs."""

from __future__ import annotations

import csv
import os
import signal

import numpy as np
import pytest
from PIL import Image

from cellmaps import predict as predict_module
from cellmaps.batch import RUN_FILE, BatchInterrupted
from cellmaps.cli import main
from cellmaps.errors import CellmapsInputError
from cellmaps.predict import predict_paths
from tests.test_evidence_floor import peak_model


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"{name}.png"
        )
    return folder


def read_counts(out) -> dict[str, int]:
    with open(out / "counts.csv", newline="") as fh:
        return {r["id"]: int(r["count"]) for r in csv.DictReader(fh)}


def seeded_model():
    import torch

    torch.manual_seed(0)  # the same weights each call, so runs can be told apart by options
    return peak_model()


def run(images, out, **kw):
    return predict_paths(seeded_model(), [images], out, progress=False, **kw)


def test_same_run_resumes_and_skips_finished_images(images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run(images, out)
    assert [r["id"] for r in first] == ["a", "b", "c"] and (out / RUN_FILE).is_file()
    assert sum(r["count"] for r in first) > 0
    before = read_counts(out)
    with pytest.raises(CellmapsInputError, match="pass --resume"):
        run(images, out)
    calls = []
    real = predict_module._predict_one
    monkeypatch.setattr(
        predict_module, "_predict_one", lambda m, f, *a: calls.append(f.stem) or real(m, f, *a)
    )
    (out / "overlays" / "b.png").unlink()  # b's outputs are incomplete
    again = run(images, out, resume=True)
    assert calls == ["b"]
    assert again == first and read_counts(out) == before


def test_another_run_is_refused_and_overwrite_removes_only_its_outputs(images, tmp_path):
    out = tmp_path / "out"
    run(images, out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CellmapsInputError, match=r"another run \(different settings\)"):
        run(images, out, xi=0.5)
    with pytest.raises(CellmapsInputError, match="another run"):
        run(images, out, xi=0.5, resume=True)
    assert read_counts(out).keys() == {"a", "b", "c"}  # refused: nothing touched
    (images / "c.png").unlink()
    run(images, out, xi=0.5, overwrite=True)
    assert read_counts(out).keys() == {"a", "b"}
    assert not (out / "points" / "c.csv").exists()  # the old run's outputs are gone
    assert (out / "notes.txt").read_text() == "mine"  # other files are kept


def test_folder_not_written_by_cellmaps_or_a_file_is_refused(images, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.xlsx").write_text("x")
    with pytest.raises(CellmapsInputError, match="not written by a cellmaps run"):
        run(images, foreign)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CellmapsInputError, match="a file is there"):
        run(images, a_file)
    assert (foreign / "results.xlsx").read_text() == "x" and a_file.read_text() == "x"


def test_bad_image_stops_with_counts_of_finished_images_or_is_skipped(images, tmp_path):
    (images / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    with pytest.raises(CellmapsInputError, match="b.png"):
        run(images, out)
    assert read_counts(out).keys() == {"a"}  # the finished image is in the table
    assert (out / RUN_FILE).is_file()  # and the record that lets --resume continue
    rows = run(images, out, resume=True, skip_bad=True)
    assert [r["id"] for r in rows] == ["a", "c"]
    assert read_counts(out).keys() == {"a", "c"}
    with open(out / "skipped.csv", newline="") as fh:
        skipped = list(csv.DictReader(fh))
    assert [s["id"] for s in skipped] == ["b"] and "cannot read image" in skipped[0]["problem"]


@pytest.mark.parametrize("folder_existed", [False, True])
def test_a_run_that_fails_before_any_image_leaves_the_folder_as_it_found_it(
    images, tmp_path, folder_existed
):
    """`--masks` with a model that cannot outline fails at the first image: no run record is
    left to block the next run into the folder (a new folder is not left behind either)."""
    out = tmp_path / "out"
    if folder_existed:
        out.mkdir()
    with pytest.raises(CellmapsInputError, match="outer_distance"):
        run(images, out, masks=True)  # a points-only model
    assert out.is_dir() == folder_existed
    if folder_existed:
        assert list(out.iterdir()) == []
    rows = run(images, out)  # the next run starts as in a fresh folder
    assert [r["id"] for r in rows] == ["a", "b", "c"]


def test_ctrl_c_stops_after_the_current_image_and_resume_finishes(images, tmp_path, monkeypatch):
    """Also when a, b and c are detected together (small images, tiles stacked): b and c
    are not written."""
    out = tmp_path / "out"
    real = predict_module._write_detections

    def interrupted_during_a(m, f, *a):
        if f.stem == "a":
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C only asks to stop
        return real(m, f, *a)

    monkeypatch.setattr(predict_module, "_write_detections", interrupted_during_a)
    with pytest.raises(BatchInterrupted) as exc:
        run(images, out)
    assert (exc.value.done, exc.value.total) == (1, 3)
    assert read_counts(out).keys() == {"a"} and (out / "overlays" / "a.png").is_file()
    assert not (out / "points" / "b.csv").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(predict_module, "_write_detections", real)
    run(images, out, resume=True)
    assert read_counts(out).keys() == {"a", "b", "c"}


def test_stale_temporary_files_are_removed_at_the_next_run(images, tmp_path):
    out = tmp_path / "out"
    run(images, out)
    stale = out / "points" / ".a.csv.x1y2.tmp.csv"  # what a killed atomic write leaves
    stale.write_text("half")
    run(images, out, resume=True)
    assert not stale.exists()
    assert (out / "points" / "a.csv").is_file()


def test_cli_interrupt_and_resume_messages(images, tmp_path, capsys, monkeypatch):
    model = tmp_path / "m.safetensors"
    peak_model().save(model)
    out = tmp_path / "out"
    argv = ["predict", str(model), str(images), "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0

    def stop(*_a, **_k):
        raise BatchInterrupted(1, 3, out)

    monkeypatch.setattr(predict_module, "predict_paths", stop)
    assert main([*argv, "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert "stopped after 1 of 3" in err and "--resume" in err


def test_unexpected_error_is_one_line_unless_debug(tmp_path, capsys, monkeypatch):
    class Unforeseen(Exception):
        pass

    def broken(*_a, **_k):
        raise Unforeseen("a bug")

    monkeypatch.setattr(predict_module, "predict_paths", broken)
    argv = ["predict", "--sample", "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Unforeseen: a bug" in err and "--debug" in err
    assert "Traceback" not in err
    with pytest.raises(Unforeseen):
        main([*argv, "--debug"])


def test_full_disk_is_one_line_naming_the_file_and_leaves_no_partial_file(
    images, tmp_path, capsys, monkeypatch
):
    """A disk that fills up while points are written (simulated: writing text raises ENOSPC):
    exit 2 with the file and the system's message; the images finished before stay whole."""
    import errno
    from pathlib import Path

    model = tmp_path / "m.safetensors"
    seeded_model().save(model)
    out = tmp_path / "out"
    import builtins

    real = builtins.open

    def full_after_a(file, *a, **k):
        if Path(str(file)).name.startswith(".b.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real(file, *a, **k)

    monkeypatch.setattr(builtins, "open", full_after_a)
    assert main(["predict", str(model), str(images), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and ".b.csv" in err and len(err.splitlines()) == 1
    assert (out / "points" / "a.csv").is_file() and not (out / "points" / "b.csv").exists()
    assert not list(out.rglob(".*tmp*"))
    assert read_counts(out).keys() == {"a"}


def _annotated_dataset(root, images):
    """A dataset folder as users keep them: images/, points/ and masks/ of ground truth."""
    import shutil

    import tifffile

    shutil.copytree(images, root / "images")
    (root / "points").mkdir()
    (root / "masks").mkdir()
    for name in ("a", "b", "c"):
        (root / "points" / f"{name}.csv").write_text("x,y,label\n10,12,nucleus\n")
        tifffile.imwrite(root / "masks" / f"{name}.tif", np.ones((40, 40), np.uint16))
    return root


def _snapshot(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_ground_truth_in_the_output_folder_is_never_touched(images, tmp_path, flags):
    """`predict DS --out DS --overwrite` on an annotated dataset is refused whatever the flags,
    and nothing of the dataset changes (it deleted masks/ and replaced points/)."""
    ds = _annotated_dataset(tmp_path / "ds", images)
    before = _snapshot(ds)
    with pytest.raises(CellmapsInputError, match="no cellmaps run wrote.*points/a.csv"):
        predict_paths(seeded_model(), [ds], ds, progress=False, **flags)
    assert _snapshot(ds) == before


def test_overwrite_removes_only_files_a_run_recorded(images, tmp_path):
    out = tmp_path / "out"
    run(images, out)
    (out / "points" / "mine.csv").write_text("x,y\n1,1\n")  # added by the user later
    with pytest.raises(CellmapsInputError, match="points/mine.csv"):
        run(images, out, xi=0.5, overwrite=True)
    assert (out / "points" / "mine.csv").is_file() and read_counts(out).keys() == {"a", "b", "c"}
    (out / "points" / "mine.csv").unlink()
    (out / "counts.csv").unlink()
    (out / "counts.csv").write_text("id,count\nmy,1\n")  # recorded name, but the run wrote it
    run(images, out, xi=0.5, overwrite=True)
    assert read_counts(out).keys() == {"a", "b", "c"}


def test_ki67_refuses_an_annotated_dataset_as_output(images, tmp_path):
    from cellmaps.ki67 import score_ki67

    ds = _annotated_dataset(tmp_path / "ds", images)
    before = _snapshot(ds)
    with pytest.raises(CellmapsInputError, match="no cellmaps run wrote"):
        score_ki67(None, [ds], ds, progress=False, overwrite=True)
    assert _snapshot(ds) == before


def test_resume_predicts_again_an_image_that_changed(images, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    run(images, out)
    old_a = (out / "points" / "a.csv").read_bytes()
    Image.fromarray(np.full((40, 40, 3), 30, np.uint8)).save(images / "a.png")  # flat: 0 found
    calls = []
    real = predict_module._predict_one
    monkeypatch.setattr(
        predict_module, "_predict_one", lambda m, f, *a: calls.append(f.stem) or real(m, f, *a)
    )
    rows = run(images, out, resume=True)
    assert calls == ["a"]
    assert "a.png changed" in capsys.readouterr().out
    assert (out / "points" / "a.csv").read_bytes() != old_a
    assert {r["id"]: r["count"] for r in rows}["a"] == read_counts(out)["a"] == 0
    calls.clear()
    run(images, out, resume=True)  # now recorded: nothing to redo
    assert calls == []


def test_a_second_run_into_a_locked_folder_is_refused_and_a_stale_lock_is_taken(images, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    from cellmaps.batch import LOCK_FILE, run_lock

    out = tmp_path / "out"
    with run_lock(out):
        with pytest.raises(CellmapsInputError, match="another cellmaps run .*pid"):
            run(images, out, overwrite=True)
    assert not (out / LOCK_FILE).exists()  # released
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    stale = {"host": socket.gethostname(), "pid": int(ended.stdout), "started": "x"}
    (out / LOCK_FILE).write_text(json.dumps(stale))
    run(images, out, overwrite=True)  # a killed run's lock does not block the folder
    assert read_counts(out).keys() == {"a", "b", "c"} and not (out / LOCK_FILE).exists()
