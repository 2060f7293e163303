"""Do two versions of cellmaps give bit-identical outputs? (the one-way-house refactor, #32)

Runs the command line of the cellmaps found on ``PYTHONPATH`` (or installed) on the shared
test splits and records a SHA-256 of every output file (points CSV, GeoJSON, overlays,
instance masks, counts and Ki67 tables; the run record and the inputs log, which hold
times and paths, are left out):

- the bundled default model on crchisto, monuseg (scale estimated: ``--object-size auto``)
  and mbm (an evidence-floor override, ``--min-score``, and streamed decoding) test splits;
- the bundled Ki67 model (``cellmaps ki67``) on the bcdata test split;
- instance masks (``--masks``) of three small models trained once by ``fixtures`` (the
  bundled models cannot outline): deepdistance-extended (region growing) and weakly-points
  (argmax) on monuseg test images, deepsplit (split) on dsb2018 test images, the
  deepdistance one also on a tiled pyramidal TIFF slide (streamed, tissue detection).

Usage::

    git worktree add /tmp/base BASE_COMMIT
    PYTHONPATH=/tmp/base/src python -m benchmarks.same_outputs fixtures FIXDIR   # once
    PYTHONPATH=/tmp/base/src python -m benchmarks.same_outputs record FIXDIR base.json
    python -m benchmarks.same_outputs record FIXDIR new.json
    python -m benchmarks.same_outputs compare base.json new.json

``record`` stores the commit of the cellmaps it ran (``_code``); ``compare`` exits 1 on any
difference and names the files, and writes ``results/same_outputs.json`` and the
"Same outputs before and after" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks._common import (
    SHARED_DATA,
    machine,
    machine_line,
    update_benchmarks_md,
    write_results,
)

DATA = SHARED_DATA
SKIPPED = {"cellmaps-run.json", "cellmaps-inputs.jsonl", ".cellmaps-run.lock"}
MASK_MODELS = {  # recipe → (dataset it is trained on, dataset its masks are checked on)
    "deepdistance-extended": ("monuseg", "monuseg"),
    "weakly-points": ("monuseg", "monuseg"),
    "deepsplit": ("dsb2018_fluo", "dsb2018_fluo"),
}
MASK_IMAGES = 4  # test images per mask model


def cellmaps(*args: str, check: bool = True) -> str | None:
    """Run ``python -m cellmaps ARGS`` with this process's environment. A failure stops the
    script (``check``) or is returned as its last error line, temporary names masked."""
    cmd = [sys.executable, "-m", "cellmaps", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode == 0:
        return None
    if check:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    last = done.stderr.strip().splitlines()[-1]
    return re.sub(r"/tmp/\S*?/(?=[\w-]+/)|\.masks-\w+", "…", last)


def test_images(name: str, n: int | None = None) -> list[str]:
    """The first ``n`` test-split image files of a shared dataset, in splits.csv order."""
    rows = (DATA / name / "splits.csv").read_text().splitlines()[1:]
    ids = [r.split(",")[0] for r in rows if r.split(",")[1] == "test"][:n]
    images = DATA / name / "images"
    return [str(next(images.glob(f"{i}.*"))) for i in ids]


def make_fixtures(fixdir: Path) -> None:
    """Train the three mask-capable models (seeded, a few minutes in all) and write the
    slide; with the baseline code, once."""
    import tifffile
    from PIL import Image

    fixdir.mkdir(parents=True, exist_ok=True)
    for recipe, (data, _) in MASK_MODELS.items():
        cellmaps("train", "--recipe", recipe, "--data", str(DATA / data), "--iterations", "60",
                 "--crop", "96", "--batch", "2", "--seed", "0", "--val-split", "",
                 "--precision", "fp32", "--quiet", "--out", str(fixdir / f"{recipe}.safetensors"))  # fmt: skip
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in test_images("monuseg", 4)]
    side = min(min(t.shape[:2]) for t in tiles)
    tiles = [t[:side, :side] for t in tiles]
    mosaic = np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)
    with tifffile.TiffWriter(fixdir / "slide.tif", bigtiff=True) as tw:
        tw.write(mosaic, tile=(256, 256), subifds=1, compression="zlib", photometric="rgb")
        tw.write(mosaic[::2, ::2], tile=(256, 256), subfiletype=1, compression="zlib",
                 photometric="rgb")  # fmt: skip


def digest_folder(folder: Path) -> dict[str, str]:
    """SHA-256 of every output file under ``folder`` (relative path → hex)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in SKIPPED:
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def runs(fixdir: Path) -> dict[str, list[str]]:
    """Case name → cellmaps arguments (without --out)."""
    cases = {
        "default-crchisto": ["predict", str(DATA / "crchisto"), "--split", "test"],
        "default-monuseg-auto": [
            "predict",
            str(DATA / "monuseg"),
            "--split",
            "test",
            "--object-size",
            "auto",
        ],  # fmt: skip
        "default-mbm-floor-streamed": [
            "predict",
            str(DATA / "mbm_bonemarrow"),
            "--split",
            "test",
            "--min-score",
            "0.2",
            "--stream-above",
            "1",
        ],  # fmt: skip
        "ki67-bcdata": ["ki67", str(DATA / "bcdata_ki67"), "--split", "test"],
        "default-slide": ["predict", str(fixdir / "slide.tif")],
        "deepdistance-slide-masks": [
            "predict",
            str(fixdir / "deepdistance-extended.safetensors"),
            str(fixdir / "slide.tif"),
            "--masks",
        ],  # fmt: skip
    }
    for recipe, (_, data) in MASK_MODELS.items():
        cases[f"{recipe}-masks"] = ["predict", str(fixdir / f"{recipe}.safetensors"),
                                    *test_images(data, MASK_IMAGES), "--masks"]  # fmt: skip
    return cases


def code_under_test() -> dict:
    """Commit (and dirty flag) of the cellmaps that ``python -m cellmaps`` runs in this
    environment (``PYTHONPATH`` included)."""
    find = "import cellmaps, pathlib; print(pathlib.Path(cellmaps.__file__).parent)"
    pkg = subprocess.run([sys.executable, "-c", find], capture_output=True, text=True,
                         env=os.environ.copy(), check=True).stdout.strip()  # fmt: skip
    git = ["git", "-C", pkg]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True,
                           text=True)  # fmt: skip
    return {"package": pkg, "commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def record(fixdir: Path, out_json: Path, cases: list[str] | None = None) -> None:
    """Run every case (or ``cases``, added to an existing ``out_json``) and write the
    digests; a failing case is recorded by its error line (both versions must fail alike)."""
    result = json.loads(out_json.read_text()) if cases and out_json.exists() else {}
    result["_code"] = code_under_test()
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in runs(fixdir).items():
            if cases and name not in cases:
                continue
            out = Path(tmp) / name
            error = cellmaps(*args, "--out", str(out), "--quiet", check=False)
            result[name] = {"error": error} if error else digest_folder(out)
            print(f"{name}: {error or f'{len(result[name])} files'}", flush=True)
    out_json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def compare(base_json: Path, new_json: Path) -> int:
    """Files that differ between two records (by case); writes the results and the
    BENCHMARKS.md section. Returns 1 on any difference."""
    base, new = json.loads(base_json.read_text()), json.loads(new_json.read_text())
    codes = {"baseline": base.pop("_code", {}), "new": new.pop("_code", {})}
    rows, bad = [], []
    for case in sorted(set(base) | set(new)):
        a, b = base.get(case, {}), new.get(case, {})
        differ = [f for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        bad += [f"{case}/{f}: {str(a.get(f, 'missing'))[:12]} vs {str(b.get(f, 'missing'))[:12]}"
                for f in differ]  # fmt: skip
        rows.append({"case": case, "files": len(b) if "error" not in b else 0,
                     "differ": len(differ), "error": b.get("error")})  # fmt: skip
    n = sum(r["files"] for r in rows)
    write_results("same_outputs", {"machine": machine(), "code": codes, "cases": rows,
                                   "files": n, "differing": len(bad)})  # fmt: skip
    update_benchmarks_md("same_outputs", report(rows, codes, len(bad)))
    if bad:
        print(f"{len(bad)} file(s) differ:\n" + "\n".join(bad))
        return 1
    print(f"all {n} files of {len(rows)} cases bit-identical")
    return 0


def report(rows: list[dict], codes: dict, n_bad: int) -> str:
    """The BENCHMARKS.md section, its verdict computed from the comparison."""
    short = {k: (v.get("commit") or "?")[:7] + (" + uncommitted changes" if v.get("dirty") else "")
             for k, v in codes.items()}  # fmt: skip
    files = sum(r["files"] for r in rows)
    verdict = f"all {files} output files bit-identical" if n_bad == 0 else f"{n_bad} file(s) differ"
    lines = [
        "## Same outputs before and after",
        "",
        f"`python -m benchmarks.same_outputs compare` (see its docstring): baseline "
        f"{short['baseline']}, new {short['new']}: **{verdict}**. A case that fails is compared "
        "by its error line (both versions must fail alike).",
        "",
        "| case | files | differ | error (both versions) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['case']} | {r['files']} | {r['differ']} | {r['error'] or ''} |" for r in rows]
    lines += ["", machine_line(machine())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures", help="train the mask models and write the slide (baseline)")
    f.add_argument("fixdir", type=Path)
    r = sub.add_parser("record", help="run every case and record output digests")
    r.add_argument("fixdir", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--cases", nargs="+", help="only these cases, added to OUT")
    st = sub.add_parser("stamp", help="add the code under test (_code) to a record")
    st.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="compare two records")
    c.add_argument("base", type=Path)
    c.add_argument("new", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "fixtures":
        make_fixtures(a.fixdir)
    elif a.cmd == "record":
        record(a.fixdir, a.out, a.cases)
    elif a.cmd == "stamp":
        data = json.loads(a.out.read_text())
        a.out.write_text(json.dumps({**data, "_code": code_under_test()}, indent=1,
                                    sort_keys=True) + "\n")  # fmt: skip
    else:
        return compare(a.base, a.new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
