"""Inference plan of the bundled models: the tiling chosen on validation, and the engines
tried for the forward pass.

    python -m benchmarks.inference_plan [--apply] [--compile] [--repeats 3]
    python -m benchmarks.inference_plan --test-check   # afterwards: test F1, before → after
    python -m benchmarks.inference_plan --report-only  # the section again from the JSON

Tilings (tile, stride, trim, batch) are scored on validation images — crchisto val (r 6)
and monuseg train (r 12; monuseg has no validation split, and its test split is never
used here) for the default model, bcdata_ki67 val for the Ki67 model — and timed end to
end (`Model.detect`, median of ``--repeats`` after a warm-up) on a 2048² mosaic of
monuseg train tiles. The chosen tiling is the fastest whose F1 stays within 0.005 of the
previous default (256 / 192) on every validation set; ``--apply`` writes it into the
bundled model files (weights unchanged, checked).

Engines, timed interleaved on one batch of the chosen tile size: eager PyTorch with
BatchNorm layers, the BatchNorm-folded copy cellmaps uses, ONNX Runtime (when importable;
not a dependency of cellmaps) and ``torch.compile`` (with ``--compile``; its compile time
is reported too).

``--test-check`` scores the previous and the chosen tiling on the test splits (crchisto
r 6, monuseg r 12, bcdata_ki67), to report that the choice made on validation costs no
test F1; it chooses nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from benchmarks._common import (
    REPO,
    SHARED_DATA,
    machine,
    machine_line,
    train_mosaic,
    update_benchmarks_md,
    write_results,
)
from cellmaps.model import Model, bundled_model_path
from cellmaps.tune import score_split

BASELINE = {"tile": 256, "stride": 192, "batch": 4, "trim": None}
CONFIGS = [
    BASELINE,
    {"tile": 256, "stride": 224, "batch": 4, "trim": 16},
    {"tile": 384, "stride": 352, "batch": 2, "trim": 16},
    {"tile": 512, "stride": 448, "batch": 1, "trim": None},
    {"tile": 512, "stride": 480, "batch": 1, "trim": 16},
]
TOLERANCE = 0.005
VALIDATION = {
    "default": [("crchisto", "val", 6.0), ("monuseg", "train", 12.0)],
    "ki67": [("bcdata_ki67", "val", None)],
}


def with_tiling(model: Model, cfg: dict) -> Model:
    model.recipe["inference"] = {**model.recipe["inference"], **cfg}
    return model


def detect_time(model: Model, image: np.ndarray, repeats: int) -> tuple[float, int]:
    model.detect(image[:512, :512])  # warm-up (compiled kernels, allocator)
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = len(model.detect(image))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), n


def score_tilings(image: np.ndarray, repeats: int) -> list[dict]:
    rows = []
    models = {name: Model.load(bundled_model_path(name)) for name in VALIDATION}
    for cfg in CONFIGS:
        row = {"config": cfg, "f1": {}}
        for name, sets in VALIDATION.items():
            model = with_tiling(models[name], cfg)
            for data, split, radius in sets:
                res = score_split(model, SHARED_DATA / data, split, radius)
                row["f1"][f"{name}:{data}:{split}"] = res["f1"]
        row["seconds"], row["detections"] = detect_time(
            with_tiling(models["default"], cfg), image, repeats
        )
        rows.append(row)
        print(row, flush=True)
    return rows


def choose(rows: list[dict]) -> dict:
    base = rows[0]["f1"]
    ok = [r for r in rows if all(r["f1"][k] >= base[k] - TOLERANCE for k in base)]
    return min(ok, key=lambda r: r["seconds"])


def engines(cfg: dict, compile_too: bool, reps: int = 12) -> list[dict]:
    """Forward-pass time of one batch of the chosen tile size, engines interleaved."""
    from cellmaps.nets.blocks import fold_batchnorm

    model = Model.load(bundled_model_path("default"))
    eager = model.net.eval().to(memory_format=torch.channels_last)
    x = torch.randn(cfg["batch"], model.in_channels, cfg["tile"], cfg["tile"])
    x = x.contiguous(memory_format=torch.channels_last)
    runners = {
        "eager (BatchNorm layers)": eager,
        "BatchNorm folded (cellmaps)": fold_batchnorm(copy.deepcopy(eager)),
    }
    setup = {}
    try:
        runners["ONNX Runtime"] = onnx_runner(eager, x)
    except ImportError as e:
        print(f"ONNX Runtime not tried: {e}")
    if compile_too:
        t = time.perf_counter()
        compiled = torch.compile(fold_batchnorm(copy.deepcopy(eager)), dynamic=False)
        with torch.no_grad():
            compiled(x)
        setup["torch.compile (folded)"] = time.perf_counter() - t
        runners["torch.compile (folded)"] = compiled
    times = {k: [] for k in runners}
    with torch.no_grad():
        for run in runners.values():
            run(x)
        for _ in range(reps):
            for k, run in runners.items():
                t = time.perf_counter()
                run(x)
                times[k].append(time.perf_counter() - t)
    px = x.shape[0] * x.shape[2] * x.shape[3]
    out = []
    for k, ts in times.items():
        med = float(np.median(ts[2:]))
        out.append({"engine": k, "seconds": med, "mpx_per_s": px / med / 1e6,
                    "setup_s": setup.get(k)})  # fmt: skip
        print(out[-1], flush=True)
    return out


def onnx_runner(net: torch.nn.Module, x: torch.Tensor):
    """The net exported to ONNX (TorchScript exporter) and run by ONNX Runtime, 2 threads."""
    import tempfile

    import onnxruntime as ort

    class Outputs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return tuple(self.inner(t).values())

    path = Path(tempfile.mkdtemp()) / "net.onnx"
    torch.onnx.export(Outputs(net), (x.contiguous(),), str(path), dynamo=False,
                      input_names=["x"], opset_version=17)  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda t: sess.run(None, {"x": t.contiguous().numpy()})


def apply(cfg: dict) -> list[str]:
    """Write the tiling into the bundled model files; the weights must not change."""
    done = []
    for name in VALIDATION:
        path = bundled_model_path(name)
        model = Model.load(path)
        before = {k: v.clone() for k, v in model.net.state_dict().items()}
        half = any(t.dtype == torch.float16 for t in load_file(str(path)).values())
        model.recipe["inference"] = {**model.recipe["inference"], **cfg}
        model.save(path, half=half)
        after = Model.load(path).net.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name}: weights changed"
        done.append(name)
    return done


TEST_SETS = {
    "default": [("crchisto", "test", 6.0), ("monuseg", "test", 12.0)],
    "ki67": [("bcdata_ki67", "test", None)],
}


def test_check() -> None:
    """Test F1 of the previous and the chosen tiling (reported, never used to choose)."""
    payload = json.loads((REPO / "results" / "inference_plan.json").read_text())
    chosen = payload["chosen"]["config"]
    rows = []
    for name, sets in TEST_SETS.items():
        model = Model.load(bundled_model_path(name))
        for data, split, radius in sets:
            f1 = {}
            for label, cfg in (("before", BASELINE), ("after", chosen)):
                f1[label] = score_split(with_tiling(model, cfg), SHARED_DATA / data, split, radius)[
                    "f1"
                ]
            rows.append({"model": name, "data": data, **f1})
            print(rows[-1], flush=True)
    payload["test_check"] = rows
    write_results("inference_plan", payload)
    update_benchmarks_md("inference_plan", section_text(payload))


def test_check_text(payload: dict) -> list[str]:
    """The --test-check sentence, when that step has run."""
    rows = payload.get("test_check")
    if not rows:
        return []
    worst = min(r["after"] - r["before"] for r in rows)
    return [
        "",
        f"Test F1 (`--test-check`, after the choice; {config_text(BASELINE)} → "
        f"{config_text(payload['chosen']['config'])}): "
        + "; ".join(
            f"{r['model']} on {r['data']} {r['before']:.4f} → {r['after']:.4f}" for r in rows
        )
        + f". Largest change {worst:+.4f}.",
    ]


def config_text(cfg: dict) -> str:
    trim = "auto" if cfg["trim"] is None else cfg["trim"]
    return f"{cfg['tile']} / {cfg['stride']} / {trim} / {cfg['batch']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--apply", action="store_true", help="write the chosen tiling into the bundled models"
    )
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--test-check", action="store_true", help="test F1 before → after only")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from the JSON")
    args = ap.parse_args()
    if args.report_only:
        payload = json.loads((REPO / "results" / "inference_plan.json").read_text())
        update_benchmarks_md("inference_plan", section_text(payload))
        return
    if args.test_check:
        test_check()
        return
    torch.manual_seed(0)
    image = train_mosaic("monuseg", 2048)
    rows = score_tilings(image, args.repeats)
    chosen = choose(rows)
    eng = engines(chosen["config"], args.compile)
    applied = apply(chosen["config"]) if args.apply else []
    mach = machine()
    payload = {"machine": mach, "rows": rows, "chosen": chosen, "engines": eng,
               "applied": applied, "tolerance": TOLERANCE, "repeats": args.repeats,
               "command_flags": {"apply": args.apply, "compile": args.compile}}  # fmt: skip
    write_results("inference_plan", payload)
    update_benchmarks_md("inference_plan", section_text(payload))


def section_text(payload: dict) -> str:
    """BENCHMARKS.md section from the results JSON."""
    rows, chosen, eng = payload["rows"], payload["chosen"], payload["engines"]
    applied, mach = payload["applied"], payload["machine"]
    flags = payload.get("command_flags") or {
        "apply": bool(applied),
        "compile": any(e["engine"].startswith("torch.compile") for e in eng),
    }
    repeats = payload.get("repeats", 3)
    keys = list(rows[0]["f1"])
    base = rows[0]
    lines = [
        "## Inference plan (`benchmarks/inference_plan.py`)",
        "",
        f"`python -m benchmarks.inference_plan --repeats {repeats}"
        f"{' --apply' if flags['apply'] else ''}{' --compile' if flags['compile'] else ''}`. "
        f"{machine_line(mach)} Tilings scored on validation images only (monuseg has no "
        "validation split: its train split stands in; no test split is used); time = "
        f"`Model.detect` end to end on a 2048² mosaic of monuseg train tiles, median of "
        f"{repeats} after a warm-up, bundled default model.",
        "",
        "| tile / stride / trim / batch | "
        + " | ".join(f"F1 {k.split(':', 1)[1].replace(':', ' ')} ({k.split(':')[0]})" for k in keys)
        + " | 2048² detect (s) | speed-up |",
        "|---|" + "---|" * len(keys) + "---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {config_text(r['config'])} | "
            + " | ".join(f"{r['f1'][k]:.4f}" for k in keys)
            + f" | {r['seconds']:.2f} | {base['seconds'] / r['seconds']:.2f}× |"
        )
    lines += [
        "",
        f"Chosen (fastest within {TOLERANCE} F1 of the 256 / 192 tiling on every validation "
        f"set): **{config_text(chosen['config'])}**, {base['seconds'] / chosen['seconds']:.2f}× "
        f"faster end to end"
        + (f"; written into the bundled models ({', '.join(applied)})." if applied else "."),
        "",
        f"Forward-pass engines on one batch of {chosen['config']['batch']} × "
        f"{chosen['config']['tile']}² (interleaved, median of 10):",
        "",
        "| engine | s per batch | Mpx/s | setup (s) |",
        "|---|---|---|---|",
    ]
    for e in eng:
        setup = "" if e["setup_s"] is None else f"{e['setup_s']:.0f}"
        lines.append(f"| {e['engine']} | {e['seconds']:.3f} | {e['mpx_per_s']:.2f} | {setup} |")
    fast = max(eng, key=lambda e: e["mpx_per_s"])
    folded = next(e for e in eng if e["engine"].startswith("BatchNorm folded"))
    verdict = (
        "the BatchNorm-folded eager net that cellmaps runs is the fastest engine here"
        if fast is folded
        else f"the fastest engine here is {fast['engine']}, "
        f"{fast['mpx_per_s'] / folded['mpx_per_s']:.2f}× the folded eager net cellmaps runs"
    )
    lines += [
        "",
        f"Per forward pass, {verdict}; folding BatchNorm makes the net "
        f"{folded['mpx_per_s'] / eng[0]['mpx_per_s']:.2f}× faster than with BatchNorm layers. "
        "(trim auto = (tile − stride) / 4.) cellmaps keeps eager PyTorch: nothing to install, "
        "no compile step, any tile size.",
    ]
    lines += test_check_text(payload)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
