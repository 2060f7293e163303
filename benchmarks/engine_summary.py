"""The training-engine issue's table: each benchmark's figure with the old engine (read from
the results JSON at a baseline commit, via git) beside the figure in results/ now, the
target and the paper's figure.

    python -m benchmarks.engine_summary [--baseline 67e2f97]

Writes the 'engine_summary' section of BENCHMARKS.md. A row whose results JSON has not been
rerun since the baseline says so instead of repeating the old figure as new.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from benchmarks._common import REPO, RESULTS, update_benchmarks_md


def results_at(commit: str | None, name: str) -> dict | None:
    """results/<name>.json at a commit (None = the working tree)."""
    if commit is None:
        path = RESULTS / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None
    out = subprocess.run(
        ["git", "show", f"{commit}:results/{name}.json"], cwd=REPO, capture_output=True, text=True
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def _get(d: dict | None, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


# (label, results file, path to the figure, target, paper's figure)
ROWS = [
    (
        "MicroNet, crchisto test, Hungarian r 6: F1",
        "micronet_crchisto",
        ("test", "r6", "f1"),
        0.86,
        None,
    ),
    (
        "KiNet, crchisto test r 6: detection F1",
        "kinet",
        ("crchisto", "detection", "f1"),
        0.85,
        None,
    ),
    (
        "KiNet, crchisto test r 6: class-weighted F1",
        "kinet",
        ("crchisto", "classification", "weighted", "f1"),
        0.72,
        "0.804 (own Ki67 data)",
    ),
    (
        "deepdistance-extended, usiigaci test (one-to-one, median radius): F",
        "deepdistance",
        ("data", "usiigaci", "recipes", "deepdistance-extended", "test", "test", "f1"),
        0.85,
        "0.92 (its live-cell data)",
    ),
    (
        "deepdistance-extended, dsb2018 test: F",
        "deepdistance",
        ("data", "dsb", "recipes", "deepdistance-extended", "test", "test", "f1"),
        0.92,
        None,
    ),
    (
        "deepdistance-extended, dsb2018 independent groups: F",
        "deepdistance",
        ("data", "dsb", "recipes", "deepdistance-extended", "test", "indep", "f1"),
        0.75,
        None,
    ),
    (
        "DeepDistance region growing, usiigaci test: AJI",
        "deepdistance",
        ("data", "usiigaci", "segmentation", "test", "aji"),
        0.55,
        None,
    ),
]


def trained_commit(name: str, d: dict | None) -> str | None:
    """The commit the results' models were trained from (recorded by the engine), else the
    commit in the results' machine line."""
    code = None
    if name == "deepdistance":
        code = _get(d, "data", "usiigaci", "recipes", "deepdistance-extended", "code")
    elif name in ("micronet_crchisto", "kinet"):
        code = _get(d, "training", "code")
    if code and code.get("commit"):
        return code["commit"][:7] + ("*" if code.get("dirty") else "")
    return _get(d, "machine", "commit")


def minutes(name: str, d: dict | None) -> str:
    """Training minutes recorded in a results file (sum over its trained models)."""
    if d is None:
        return "—"
    if name == "micronet_crchisto":
        return f"{d['train_seconds'] / 60:.0f}"
    if name == "kinet":
        return f"{d['training']['elapsed_seconds'] / 60:.0f}"
    if name == "deepdistance":
        total = sum(r["minutes"] for v in d["data"].values() for r in v["recipes"].values())
        return f"{total:.0f} (all recipes)"
    return "—"


def iterations(name: str, d: dict | None) -> str:
    """Training iterations of the run behind a results file."""
    if d is None:
        return "—"
    if name in ("micronet_crchisto", "kinet"):
        return f"{_get(d, 'training', 'iterations')}"
    if name == "deepdistance":
        its = _get(d, "data", "usiigaci", "recipes", "deepdistance-extended", "iterations")
        return f"{its} each" if its else "—"
    return "—"


def step_time_note(baseline: str) -> str:
    """Seconds per training step of deepdistance-extended on usiigaci in the old and new runs
    (the machines differ: the old one ran bf16 natively), computed from the results."""
    out = []
    for tag, commit in (("old", baseline), ("new", None)):
        d = results_at(commit, "deepdistance")
        r = _get(d, "data", "usiigaci", "recipes", "deepdistance-extended")
        if r:
            crop = _get(d, "command", "crop")
            out.append(
                f"{tag} run {r['minutes'] * 60 / max(r['iterations'], 1):.2f} s per step "
                f"({crop}² crops)"
            )
    if not out:
        return ""
    return "Training step of deepdistance-extended on usiigaci: " + ", ".join(out) + "."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", default="67e2f97", help="commit of the old engine's results")
    args = ap.parse_args()
    lines = [
        "## Training engine: old → new (`benchmarks/engine_summary.py`)",
        "",
        f"`python -m benchmarks.engine_summary --baseline {args.baseline}`. 'old' is the figure in "
        f"results/ at commit {args.baseline} (old engine); 'new' is the figure in results/ now, "
        "with the commit its run recorded. Each benchmark's section gives its command, budget and "
        "curves; the engine ablation sections say which change moved the figure. "
        + step_time_note(args.baseline),
        "",
        "| run | old | new | iterations old → new | trained from | training minutes (new) "
        "| target | paper | reached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, name, path, target, paper in ROWS:
        old_d, new_d = results_at(args.baseline, name), results_at(None, name)
        old, new = _get(old_d, *path), _get(new_d, *path)
        old_commit = trained_commit(name, old_d)
        new_commit = trained_commit(name, new_d)
        rerun = new_d is not None and new_commit != old_commit
        cells = [
            label,
            "—" if old is None else f"{old:.3f}",
            f"{new:.3f}" if rerun and new is not None else "not rerun yet",
            f"{iterations(name, old_d)} → {iterations(name, new_d) if rerun else '—'}",
            new_commit if rerun else "—",
            minutes(name, new_d) if rerun else "—",
            f"≥ {target}",
            paper or "—",
            ("yes" if new >= target else "no") if rerun and new is not None else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    update_benchmarks_md("engine_summary", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
