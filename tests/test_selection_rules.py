"""Selection rules of the bundled models' benchmarks (benchmarks/ki67_tumour_only.py,
benchmarks/train_fluo_model.py), on figures written by hand: a rule that picks wrongly would
bundle the wrong model."""

from __future__ import annotations

import numpy as np
from benchmarks.ki67_tumour_only import chosen_gate, learned_decision
from benchmarks.train_fluo_model import candidate_wins


def summary(**gates: tuple[float, float]) -> dict:
    """A val summary: per gate (worst count ratio, worst bcdata index MAE)."""
    return {
        g: {"worst_abs_log_ratio": abs(float(np.log(r))), "worst_bcdata_index_mae": m}
        for g, (r, m) in gates.items()
    }


DETECTION = {
    "val_f1": 0.84,
    "previous_val_f1": 0.843,
    "val_f1_error": 0.02,
    "noise_detections": 0,
    "previous_noise_detections": 0,
}


def test_chosen_gate_takes_the_ratio_closest_to_one_within_the_mae_limit():
    s = summary(none=(2.9, 0.02), a=(1.05, 0.05), b=(1.2, 0.03))
    # a's ratio is best but it raises the worst bcdata MAE by 0.03 > 0.02 over none
    assert chosen_gate(s) == "b"
    # a ratio below one counts by its log: 0.9 is nearer than 1.2
    assert chosen_gate(summary(none=(2.9, 0.02), c=(0.9, 0.02), b=(1.2, 0.02))) == "c"


def test_learned_candidate_replaces_only_with_a_better_worst_ratio_and_equal_detection():
    bundled = summary(none=(2.9, 0.02), **{"morphology@0.45": (1.2, 0.03)})
    better = summary(none=(1.1, 0.03), **{"morphology@0.5": (0.7, 0.03)})
    replace, why = learned_decision(better, bundled, DETECTION)
    assert replace and "(none)" in why and "(morphology@0.45)" in why
    worse = summary(none=(1.3, 0.03))
    assert not learned_decision(worse, bundled, DETECTION)[0]
    # a better ratio bought with the index: beyond the bundled none's MAE + 0.02
    assert not learned_decision(summary(none=(1.0, 0.05)), bundled, DETECTION)[0]
    # detection lost beyond the sampling error, or more nuclei on noise
    assert not learned_decision(better, bundled, DETECTION | {"val_f1": 0.82})[0]
    assert not learned_decision(better, bundled, DETECTION | {"noise_detections": 1})[0]


def test_fluo_candidate_needs_higher_cds_and_aji_within_tolerance():
    bundled = {"cds": 0.838, "aji": 0.744}
    assert candidate_wins({"cds": 0.840, "aji": 0.735}, bundled)[0]  # AJI 0.009 lower: within
    assert not candidate_wins({"cds": 0.840, "aji": 0.733}, bundled)[0]  # 0.011 lower
    assert not candidate_wins({"cds": 0.838, "aji": 0.760}, bundled)[0]  # CDS only equal
