"""Fuzzing the readers, the target encoders and the metrics with random input: each either
works or raises CellmapsInputError — never another exception, a hang or NaN scores."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellmaps.errors import CellmapsInputError
from cellmaps.io import read_image, read_mask, read_points
from cellmaps.io.dataset import Dataset
from cellmaps.recipes import read_recipe_yaml

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# valid starts of each format, so the fuzzed bytes reach the decoders, not only the sniffers
HEADERS = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".tif": b"II*\x00\x08\x00\x00\x00",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
}


def _png_ihdr(width: int, height: int, depth: int, colour: int) -> bytes:
    body = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        HEADERS[".png"]
        + struct.pack(">I", 13)
        + b"IHDR"
        + body
        + struct.pack(">I", zlib.crc32(b"IHDR" + body) & 0xFFFFFFFF)
    )


def _read_or_refuse(path) -> None:
    try:
        img = read_image(path)
    except CellmapsInputError as exc:
        assert str(path.name) in str(exc)
        return
    assert img.ndim in (2, 3) and img.size > 0


@FUZZ
@given(suffix=st.sampled_from(sorted(HEADERS)), tail=st.binary(max_size=600))
def test_random_bytes_behind_a_valid_header_are_read_or_refused(tmp_path, suffix, tail):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(HEADERS[suffix] + tail)
    _read_or_refuse(path)


@FUZZ
@given(
    size=st.tuples(st.integers(0, 3000), st.integers(0, 3000)),
    depth_colour=st.sampled_from([(1, 0), (8, 0), (16, 0), (8, 2), (8, 6), (16, 2), (7, 0)]),
    tail=st.binary(max_size=300),
)
def test_png_with_a_real_header_and_random_data_is_read_or_refused(
    tmp_path, size, depth_colour, tail
):
    path = tmp_path / "f.png"
    path.write_bytes(_png_ihdr(*size, *depth_colour) + tail)
    _read_or_refuse(path)


@FUZZ
@given(
    shape=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    values=st.data(),
    kind=st.sampled_from(["uint8", "uint16", "int32", "float32", "float64", "bool"]),
)
def test_random_masks_are_read_or_refused(tmp_path, shape, values, kind):
    import tifffile

    array = values.draw(
        st.lists(
            st.one_of(st.floats(-5, 300), st.sampled_from([np.nan, np.inf, 0.5])),
            min_size=shape[0] * shape[1],
            max_size=shape[0] * shape[1],
        )
    )
    data = np.asarray(array).reshape(shape)
    if kind not in ("float32", "float64"):
        data = np.nan_to_num(data, nan=0, posinf=0, neginf=0)
        data = np.clip(data, 0 if kind in ("uint8", "uint16", "bool") else -5, 255)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, data.astype(kind))
    try:
        mask = read_mask(path)
    except CellmapsInputError:
        return
    assert mask.shape == shape and mask.min() >= 0 and np.issubdtype(mask.dtype, np.integer)


CSV_CELL = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-10, 200).map(str),
    st.text(max_size=6),
)


@FUZZ
@given(
    rows=st.lists(st.lists(CSV_CELL, min_size=0, max_size=5), max_size=6),
    header=st.sampled_from(["x,y,label", "x,y", "x,y,label,score", "y,x,label", "", "a,b,c"]),
    junk=st.binary(max_size=20),
)
def test_random_points_files_are_read_or_refused(tmp_path, rows, header, junk):
    path = tmp_path / "p.csv"
    text = header + "\n" + "\n".join(",".join(r) for r in rows)
    path.write_bytes(text.encode("utf-8", "surrogatepass") + junk)
    try:
        pts = read_points(path, shape=(100, 100))
    except CellmapsInputError as exc:
        assert "p.csv" in str(exc)
        return
    assert np.isfinite(pts.coords).all() and ((pts.coords >= 0) & (pts.coords < 100)).all()


@FUZZ
@given(text=st.text(max_size=200))
def test_random_splits_files_are_read_or_refused(tmp_path, text):
    root = tmp_path / "d"
    (root / "points").mkdir(parents=True, exist_ok=True)
    (root / "points" / "a.csv").write_text("x,y,label\n1,1,n\n")
    (root / "splits.csv").write_text("id,split\n" + text, encoding="utf-8", errors="replace")
    try:
        splits = Dataset(root).splits
    except CellmapsInputError:
        return
    assert all(isinstance(v, tuple) and len(v) == 2 for v in splits.values())


YAML_TEXT = st.recursive(
    st.one_of(st.text(max_size=8), st.sampled_from(["&a", "*a", "!!python/object:os.system", ":"])),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: "\n  ".join(xs)),
    max_leaves=12,
)


@FUZZ
@given(text=YAML_TEXT)
def test_random_recipe_yaml_is_parsed_or_refused(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="replace")
    try:
        data = read_recipe_yaml(path)
    except CellmapsInputError:
        return
    assert isinstance(data, dict)


@FUZZ
@given(
    shape=st.tuples(st.integers(8, 40), st.integers(8, 40)),
    points=st.lists(st.tuples(st.floats(-3, 45), st.floats(-3, 45)), max_size=12),
    labels=st.lists(st.sampled_from(["a", "b", "nucleus"]), min_size=12, max_size=12),
)
def test_target_maps_of_random_points_are_finite_or_refused(shape, points, labels):
    from cellmaps.targets.build import Annotations, available_targets, make_targets

    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    a = Annotations(
        np.zeros((*shape, 3), np.uint8), points=pts, labels=np.array(labels[: len(pts)])
    )
    try:
        maps = make_targets(available_targets(a), a)
    except CellmapsInputError:
        return
    for name, m in maps.items():
        assert m.shape[-2:] == shape or m.shape[:2] == shape, name
        if np.issubdtype(m.dtype, np.floating):
            assert np.isfinite(m).all(), name


@FUZZ
@given(
    truth=st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50)), max_size=15),
    pred=st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50)), max_size=15),
    radius=st.floats(0.1, 20),
)
def test_detection_metrics_of_random_points_are_in_range(truth, pred, radius):
    from cellmaps.metrics import match_points, pool_detection

    t = np.asarray(truth, float).reshape(-1, 2)
    p = np.asarray(pred, float).reshape(-1, 2)
    m = match_points(t, p, radius)
    assert m.tp + m.fn == len(t) and m.tp + m.fp == len(p)
    s = pool_detection([m])
    for k in ("precision", "recall", "f1"):
        assert 0.0 <= s[k] <= 1.0 or (np.isnan(s[k]) and not (len(t) and len(p))), k


@FUZZ
@given(
    a=st.lists(st.integers(0, 4), min_size=36, max_size=36),
    b=st.lists(st.integers(0, 4), min_size=36, max_size=36),
)
def test_segmentation_metrics_of_random_masks_are_in_range(a, b):
    from cellmaps.metrics.segmentation import aji, dice, instance_scores, object_dice

    t, p = np.reshape(a, (6, 6)), np.reshape(b, (6, 6))
    for fn in (aji, dice, object_dice):
        v = fn(t, p)
        assert np.isnan(v) or 0.0 <= v <= 1.0, fn.__name__
    s = instance_scores(t, p)
    assert all(np.isnan(v) or 0 <= v <= max(1.0, 36) for v in s.values() if np.isscalar(v))


@pytest.mark.parametrize("suffix", sorted(HEADERS))
def test_each_header_alone_is_refused_by_name(tmp_path, suffix):
    path = tmp_path / f"only{suffix}"
    path.write_bytes(HEADERS[suffix])
    with pytest.raises(CellmapsInputError, match=f"only{suffix}"):
        read_image(path)
