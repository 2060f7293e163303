"""Bad command-line values are refused up front with one line naming the option (exit 2),
before any model is loaded or anything is written."""

from __future__ import annotations

import pytest

from cellmaps.cli import main

PREDICT = ["predict", "img.png", "--out", "o"]
TRAIN = ["train", "--recipe", "micronet", "--data", "d", "--out", "m.safetensors"]
EVALUATE = ["evaluate", "--truth", "t", "--pred", "p"]


@pytest.mark.parametrize(
    ("argv", "option", "message"),
    [
        (PREDICT + ["--tile", "0"], "--tile", "must be at least 1"),
        (PREDICT + ["--stride", "-3"], "--stride", "must be at least 1"),
        (PREDICT + ["--batch", "0"], "--batch", "must be at least 1"),
        (PREDICT + ["--batch", "two"], "--batch", "not a whole number"),
        (PREDICT + ["--xi", "nan"], "--xi", "must be a number in [0, 1]"),
        (PREDICT + ["--xi", "-1"], "--xi", "must be a number in [0, 1]"),
        (PREDICT + ["--min-score", "-0.5"], "--min-score", "must be a number >= 0"),
        (["ki67", "img.png", "--out", "o", "--xi", "1.5"], "--xi", "in [0, 1]"),
        (TRAIN + ["--iterations", "0"], "--iterations", "must be at least 1"),
        (TRAIN + ["--iterations", "-5"], "--iterations", "must be at least 1"),
        (TRAIN + ["--batch", "0"], "--batch", "must be at least 1"),
        (TRAIN + ["--crop", "0"], "--crop", "must be at least 1"),
        (EVALUATE + ["--radius", "-1"], "--radius", "must be a positive number"),
        (EVALUATE + ["--radius", "nan"], "--radius", "must be a positive number"),
        (EVALUATE + ["--iou", "2"], "--iou", "in [0, 1]"),
    ],
)
def test_bad_option_values_get_one_line_naming_the_option(tmp_path, capsys, argv, option, message):
    argv = [str(tmp_path / "o") if a == "o" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_train_checks_its_output_before_training(tmp_path, capsys):
    """--out an existing model, a folder, or inside a missing folder: refused at once (exit
    2), the existing model left untouched; no dataset is even read (the --data is missing)."""
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"an earlier model")
    cases = [
        (str(model), "a model is already there; pass --overwrite"),
        (str(tmp_path), "is a folder"),
        (str(tmp_path / "nope" / "m.safetensors"), "does not exist"),
    ]
    for out, message in cases:
        argv = ["train", "--recipe", "micronet", "--data", str(tmp_path / "none"), "--out", out]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, out
    assert model.read_bytes() == b"an earlier model"
    # with --overwrite the output is accepted and the next problem (the data) is reported
    argv = ["train", "--recipe", "micronet", "--data", str(tmp_path / "none"), "--out"]
    assert main([*argv, str(model), "--overwrite"]) == 2
    assert "already there" not in capsys.readouterr().err
