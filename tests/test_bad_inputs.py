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
        (
            PREDICT + ["--object-size", "big"],
            "--object-size",
            "positive number of px, 'auto' or 'shared'",
        ),
        (
            PREDICT + ["--object-size", "0"],
            "--object-size",
            "positive number of px, 'auto' or 'shared'",
        ),
        (TRAIN + ["--object-size", "auto"], "--object-size", "not a number"),
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


# -- a table of bad files through every command ------------------------------------------------
# Each case builds its inputs in a fresh folder, runs one command and checks: the exit code,
# a one-line message naming the file and the problem, no traceback, nothing left half-written.


def _W(path, data):
    """Write ``data`` (bytes or text) to ``path``; True, so cases can chain with ``and``."""
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return True


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _dataset(root, points="x,y,label\n10,10,nucleus\n20,25,nucleus\n", splits=None):
    import numpy as np

    rng = np.random.default_rng(0)
    _png(root / "images" / "a.png", rng.integers(0, 255, (40, 40, 3)).astype(np.uint8))
    if points is not None:
        (root / "points").mkdir(parents=True, exist_ok=True)
        data = points.encode() if isinstance(points, str) else points
        (root / "points" / "a.csv").write_bytes(data)
    if splits is not None:
        data = splits.encode() if isinstance(splits, str) else splits
        (root / "splits.csv").write_bytes(data)
    return root


def _model(path, **change):
    """A tiny (untrained) 3-channel detector saved at ``path``; ``change`` edits its tensors."""
    import torch

    from tests.test_evidence_floor import peak_model

    m = peak_model()
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path)
    if change:
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        state = load_file(str(path))
        for key, fn in change.items():
            fn(state, key)
        save_file(state, str(path), metadata=meta)
    return path


def _tiff(path, array, **kw):
    import tifffile

    tifffile.imwrite(path, array, **kw)
    return path


def _good_png(t):
    import numpy as np

    return _png(t / "img.png", np.full((40, 40, 3), 120, np.uint8))


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _pickle_with_payload(t):
    """A torch pickle that would create a file when unpickled, named like a model."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(t / "PWNED"), "w"))

    path = t / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload(), protocol=2))
    return path


def _recipe(t, text):
    path = t / "r.yaml"
    path.write_text(text)
    return str(path)


def _bomb():
    lines = ['l0: &a0 ["x"]']
    lines += [f"l{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\ndescription: *a9\n"


def _recipe_with(change):
    import yaml

    from cellmaps.recipes import load_recipe

    r = load_recipe("micronet")
    change(r)
    return yaml.safe_dump(r)


def _nan_weights(state, key):
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name][...] = float("nan")


def _drop_tensor(state, key):
    state.pop(next(k for k in state if k.endswith(".weight")))


def _predict(t, *inputs):
    return ["predict", *map(str, inputs), "--out", str(t / "out"), "--quiet"]


def _train(t, recipe="micronet", data=None):
    data = data if data is not None else _dataset(t / "d")
    return [
        "train",
        "--recipe",
        recipe,
        "--data",
        str(data),
        "--out",
        str(t / "m.safetensors"),
        "--iterations",
        "1",
        "--quiet",
    ]


def _foreign_safetensors(t):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(t / "f.safetensors"))
    return t / "f.safetensors"


def _out_folder_of_other_files(t):
    (t / "out").mkdir()
    (t / "out" / "thesis.docx").write_text("x")
    return _predict(t, _model(t / "m.safetensors"), _good_png(t))


def _evaluate_truth(**truth):
    """`cellmaps evaluate` of a truth folder built by :func:`_dataset` with ``truth`` (bad
    points or splits.csv) against a good prediction folder."""
    return lambda t: [
        "evaluate",
        "--truth",
        str(_dataset(t / "d", **truth)),
        "--pred",
        str(_dataset(t / "p")),
        "--quiet",
    ]


def _targets_mask(array):
    def build(t):
        img = _good_png(t)
        _tiff(t / "mask.tif", array)
        return ["targets", str(img), "--mask", str(t / "mask.tif"), "--out", str(t / "t.png")]

    return build


def _noise(shape):
    """Incompressible pixels: cutting such a TIFF in half cuts its pixel data (the header
    stays), so the zlib decoder, not the TIFF parser, meets the damage."""
    import numpy as np

    return np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)


def _np():
    import numpy as np

    return np


BAD_FILES = {
    # images
    "tiff cut short": (
        lambda t: _predict(t, _cut(_tiff(t / "c.tif", _noise((64, 64, 3)), compression="zlib"))),
        "is the file complete",
    ),
    "png of random bytes": (
        lambda t: _W(t / "r.png", b"\x89PNG\r\n\x1a\nrandom") and _predict(t, t / "r.png"),
        "cannot read image",
    ),
    "empty image file": (
        lambda t: _W(t / "e.png", b"") and _predict(t, t / "e.png"),
        "cannot read image",
    ),
    "jpeg cut short": (
        lambda t: _predict(t, _cut(_png(t / "x.jpg", _np().full((64, 64, 3), 90, "uint8")))),
        "cannot read image",
    ),
    "text file named .tif": (
        lambda t: _W(t / "n.tif", "hello") and _predict(t, t / "n.tif"),
        "cannot read image",
    ),
    "float image with NaN": (
        lambda t: _predict(t, _tiff(t / "n.tif", _np().full((40, 40), _np().nan, "float32"))),
        "NaN",
    ),
    "float image with inf": (
        lambda t: _predict(t, _tiff(t / "i.tif", _np().full((40, 40), _np().inf, "float32"))),
        "infinite",
    ),
    "complex image": (
        lambda t: _predict(t, _tiff(t / "c.tif", _np().ones((40, 40), "complex64"))),
        "unsupported image dtype",
    ),
    "negative int32 image": (
        lambda t: _predict(t, _tiff(t / "n.tif", -_np().ones((40, 40), "int32"))),
        "negative pixel values",
    ),
    "time series tiff": (
        lambda t: _predict(
            t,
            _tiff(
                t / "ts.tif",
                _np().zeros((3, 1, 1, 40, 40), "uint8"),
                imagej=True,
                metadata={"axes": "TZCYX"},
            ),
        ),
        "3 time points",
    ),
    "five channels for a 3-channel model": (
        lambda t: _predict(
            t, _model(t / "m.safetensors"), _tiff(t / "f.tif", _np().zeros((40, 40, 5), "uint8"))
        ),
        "--channels",
    ),
    "png header of 10 Gpx": (
        lambda t: (
            _W(
                t / "big.png",
                __import__("tests.test_channels", fromlist=["x"]).png_claiming(100_000, 100_000),
            )
            and _predict(t, t / "big.png")
        ),
        "--max-pixels",
    ),
    "missing image": (lambda t: _predict(t, t / "nope.png"), "no such image file or folder"),
    "folder without images": (
        lambda t: (t / "empty").mkdir() or _predict(t, t / "empty"),
        "no images",
    ),
    "two inputs with one id": (
        lambda t: _predict(
            t, _good_png(t), _png(t / "s" / "img.png", _np().zeros((8, 8), "uint8"))
        ),
        "share the id",
    ),
    # model files
    "torch .pt as model": (
        lambda t: _W(t / "m.pt", b"PK\x03\x04") and _predict(t, t / "m.pt", _good_png(t)),
        "PyTorch files are not read",
    ),
    "pickle named .safetensors": (
        lambda t: _predict(t, _pickle_with_payload(t), _good_png(t)),
        "refusing a pickled",
    ),
    "model cut short": (
        lambda t: _predict(t, _cut(_model(t / "m.safetensors")), _good_png(t)),
        "model",
    ),
    "model of 3 bytes": (
        lambda t: (
            _W(t / "m.safetensors", b"abc") and _predict(t, t / "m.safetensors", _good_png(t))
        ),
        "only 3 bytes",
    ),
    "foreign safetensors": (
        lambda t: _predict(t, _foreign_safetensors(t), _good_png(t)),
        "not a cellmaps model",
    ),
    "model with NaN weights": (
        lambda t: _predict(t, _model(t / "m.safetensors", nan=_nan_weights), _good_png(t)),
        "NaN or infinite",
    ),
    "model missing a tensor": (
        lambda t: _predict(t, _model(t / "m.safetensors", drop=_drop_tensor), _good_png(t)),
        "does not match its recipe",
    ),
    "upper-case .SAFETENSORS junk": (
        lambda t: (
            _W(t / "M.SAFETENSORS", b"junk" * 4) and _predict(t, t / "M.SAFETENSORS", _good_png(t))
        ),
        "not a cellmaps model file",
    ),
    "detector given to ki67": (
        lambda t: [
            "ki67",
            str(_model(t / "m.safetensors")),
            str(_good_png(t)),
            "--out",
            str(t / "out"),
        ],
        "not a Ki67 model",
    ),
    # output folders
    "--out is a file": (
        lambda t: _W(t / "out", "x") and _predict(t, _model(t / "m.safetensors"), _good_png(t)),
        "a file is there",
    ),
    "--out holds other files": (_out_folder_of_other_files, "not written by a cellmaps run"),
    # tables
    "points not UTF-8": (
        _evaluate_truth(points=b"x,y,label\n1,2,caf\xe9\n"),
        "not UTF-8 text (byte 0xe9 on line 2)",
    ),
    "points with NaN": (_evaluate_truth(points="x,y,label\nnan,2,n\n"), "line 2"),
    "points outside the image": (_evaluate_truth(points="x,y,label\n500,2,n\n"), "outside"),
    "points negative": (_evaluate_truth(points="x,y,label\n-3,2,n\n"), "outside"),
    "points wrong header": (_evaluate_truth(points="col,row\n1,2\n"), "header"),
    "points empty file": (_evaluate_truth(points=""), "empty file"),
    "points not a number": (_evaluate_truth(points="x,y,label\none,2,n\n"), "line 2"),
    "splits not UTF-8": (
        _evaluate_truth(splits=b"id,split\na,tr\xe9in\n"),
        "splits.csv is not UTF-8",
    ),
    "splits duplicate id": (
        _evaluate_truth(splits="id,split\na,train\na,test\n"),
        "listed twice (lines 2 and 3)",
    ),
    "splits wrong header": (_evaluate_truth(splits="name,set\na,train\n"), "bad header"),
    "splits short row": (_evaluate_truth(splits="id,split\na\n"), "line 2: expected id,split"),
    "prediction folder missing": (
        lambda t: ["evaluate", "--truth", str(_dataset(t / "d")), "--pred", str(t / "none")],
        "none",
    ),
    "unknown split": (
        lambda t: [
            "evaluate",
            "--truth",
            str(_dataset(t / "d", splits="id,split\na,train\n")),
            "--pred",
            str(_dataset(t / "p")),
            "--split",
            "tset",
            "--quiet",
        ],
        "unknown split 'tset'",
    ),
    # masks
    "mask float fractions": (
        _targets_mask(_np().full((40, 40), 0.5, "float32")),
        "integer labels",
    ),
    "mask negative": (_targets_mask(-_np().ones((40, 40), "int16")), "negative labels"),
    "mask wrong shape": (
        _targets_mask(_np().ones((30, 40), "uint8")),
        "does not match image shape",
    ),
    "mask with channels": (_targets_mask(_np().ones((40, 40, 3), "uint8")), "must be 2-D"),
    "targets without annotations": (
        lambda t: ["targets", str(_good_png(t)), "--out", str(t / "t.png")],
        "give --points",
    ),
    # recipes
    "recipe alias bomb": (lambda t: _train(t, _recipe(t, _bomb())), "through YAML aliases"),
    "recipe recursive alias": (
        lambda t: _train(t, _recipe(t, "a: &x [1, *x]\n")),
        "refers to itself",
    ),
    "recipe python tag": (
        lambda t: _train(
            t, _recipe(t, f"description: !!python/object/apply:os.system ['touch {t}/PWNED']\n")
        ),
        "not valid YAML",
    ),
    "recipe not a mapping": (lambda t: _train(t, _recipe(t, "- a\n- b\n")), "YAML mapping"),
    "recipe not UTF-8": (
        lambda t: _train(t, _W(t / "r.yaml", b"description: \xff\n") and str(t / "r.yaml")),
        "not UTF-8",
    ),
    "recipe unknown key": (
        lambda t: _train(t, _recipe(t, _recipe_with(lambda r: r.update(optimiser={})))),
        "optimiser",
    ),
    "recipe wrong type": (
        lambda t: _train(
            t, _recipe(t, _recipe_with(lambda r: r["training"].update(iterations="many")))
        ),
        "iterations",
    ),
    "recipe unknown name": (lambda t: _train(t, "micronett"), "no recipe named 'micronett'"),
    "recipe negative lr": (
        lambda t: _train(t, _recipe(t, _recipe_with(lambda r: r["optimizer"].update(lr=-0.1)))),
        "lr",
    ),
    "train without recipe or init": (
        lambda t: ["train", "--data", str(_dataset(t / "d")), "--out", str(t / "m.safetensors")],
        "give --recipe",
    ),
    # training data
    "train data folder missing": (lambda t: _train(t, data=t / "none"), "none"),
    "train data without annotations": (
        lambda t: _train(t, data=_dataset(t / "d", points=None, splits="id,split\na,train\n")),
        "annotation",
    ),
    "tune without annotations": (
        lambda t: [
            "tune",
            str(_model(t / "m.safetensors")),
            "--data",
            str(_dataset(t / "d", points=None, splits="id,split\na,val\n")),
            "--quiet",
        ],
        "annotation",
    ),
    "weak-roi unknown tumour label": (
        lambda t: [
            "weak-roi",
            str(_dataset(t / "d")),
            "--out",
            str(t / "w"),
            "--tumour",
            "tumor",
            "--quiet",
        ],
        "tumour label(s) ['tumor']",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_gets_one_line_naming_the_problem(tmp_path, capsys, case):
    build, message = BAD_FILES[case]
    argv = build(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert main(argv) == 2, case
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "PWNED").exists()  # nothing in a file ran
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert {p: after.get(p) for p in before} == before  # no input or earlier output changed
    leftovers = [p for p in after if p not in before]
    assert not leftovers, leftovers  # no partial files, no run record of a run that wrote none
    assert not [p for p in tmp_path.rglob(".*tmp*")]


def test_every_option_of_every_command_has_help_text():
    import argparse

    from cellmaps.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in sub.choices.items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not action.help
    ]
    assert missing == []
