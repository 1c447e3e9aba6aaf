"""Temperature scaling: the fit, the calibration error, the metadata it writes, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.calibrate import (
    ece_spread,
    expected_calibration_error,
    fit_temperature,
    measures,
    merge_calibration,
    negative_log_likelihood,
    reliability_bins,
)
from training.report import calibration_table, write_report


def sampled(temperature: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels drawn from softmax(scores / temperature): calibrated at that T."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(scale=3.0, size=(n, 8))
    z = scores / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return scores, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_at(true_t: float) -> None:
    scores, labels = sampled(true_t)
    fitted = fit_temperature(scores, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    assert negative_log_likelihood(scores, labels, fitted) <= negative_log_likelihood(
        scores, labels, 1.0
    )


def test_calibration_error_is_small_when_calibrated_and_large_when_not() -> None:
    scores, labels = sampled(2.0)
    calibrated = measures(scores, labels, 2.0)
    overconfident = measures(scores, labels, 1.0)
    assert calibrated["ece"] < 0.02
    assert overconfident["ece"] > 0.1
    assert overconfident["mean_confidence"] > calibrated["mean_confidence"]
    assert sum(b["n"] for b in calibrated["bins"]) == len(labels)


def test_calibration_error_by_hand() -> None:
    # Two clips at confidence 0.9 (bin 13: (13/15, 14/15]), one right: |0.5 - 0.9| x 2/4;
    # two at 0.55 (bin 8), both right: |1 - 0.55| x 2/4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.45, 0.55]], dtype=np.float64)
    labels = np.array([0, 1, 0, 1])
    bins = reliability_bins(probs, labels)
    assert [b["n"] for b in bins if b["n"]] == [2, 2]
    assert bins[13]["accuracy"] == 0.5 and bins[8]["accuracy"] == 1.0
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)


def test_the_bootstrap_spread_matches_the_spread_over_fresh_draws() -> None:
    # The ECE of 300 independent draws of 500 calibrated clips scatters by some sd; the
    # bootstrap of a single draw has to estimate it without seeing the others.
    def draw(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
        scores, labels = sampled(2.0, n=n, seed=seed)
        z = scores / 2.0
        p = np.exp(z - z.max(axis=1, keepdims=True))
        return p / p.sum(axis=1, keepdims=True), labels

    fresh = np.std([expected_calibration_error(*draw(seed)) for seed in range(300)])
    spread = ece_spread(*draw(1000))
    assert 0.6 * fresh < spread < 1.6 * fresh
    assert ece_spread(*draw(1000)) == spread  # seeded: a rerun reports the same figure
    assert ece_spread(*draw(1001, n=2000)) < 0.7 * spread  # four times the clips


def record(model: str, temperature: float) -> dict:
    scores, labels = sampled(1.5, n=2_000, seed=len(model))
    return {
        "model": model,
        "loss": "ce",
        "split_file": "random.csv",
        "temperature": temperature,
        "val": {"n": 10, "nll_before": 1.0, "nll_after": 0.9, "ece_before": 0.2, "ece_after": 0.05},
        "test": {
            "n": len(labels),
            "before": measures(scores, labels, 1.0),
            "after": measures(scores, labels, temperature),
        },
    }


def test_calibration_records_merge_by_model_and_reach_the_report(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    merge_calibration(path, [record("ser-ce", 1.2), record("ser-bce", 0.9)])
    merged = merge_calibration(path, [record("ser-ce", 1.5)])
    assert [(r["model"], r["temperature"]) for r in merged] == [("ser-bce", 0.9), ("ser-ce", 1.5)]
    assert json.loads(path.read_text())["calibration"] == merged
    table = calibration_table(merged)
    assert "| ser-ce | `random.csv` | 1.500 | 0.2000 / 0.0500 |" in table
    after = merged[1]["test"]["after"]
    assert f"| {after['ece']:.4f} ± {after['ece_sd']:.4f} |" in table
    # A record from before the spread was measured still renders, with the ECE alone.
    old = json.loads(json.dumps(merged[1]))
    del old["test"]["after"]["ece_sd"]
    assert f"| {after['ece']:.4f} |" in calibration_table([old])
    text = write_report([], tmp_path / "report", calibration=merged).read_text()
    assert "## Calibration (temperature scaling)" in text
    for name in ("ser-ce", "ser-bce"):
        assert (tmp_path / "report" / f"calibration-{name}.png").read_bytes()[:4] == b"\x89PNG"
