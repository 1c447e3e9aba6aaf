"""Temperature scaling of the released models, and how well calibrated they are.

A model's served probabilities are ``softmax(scores / T)`` (:func:`app.contract.probabilities`).
:func:`fit_temperature` picks the ``T`` that minimises the negative log-likelihood of the
validation clips (Guo et al., "On Calibration of Modern Neural Networks", 2017): one scalar, so
the decision (the top label) never changes, only how confident the model says it is.

Measures, on the test clips, before (``T = 1``) and after:

- expected calibration error (:func:`expected_calibration_error`): the confidences (top
  probabilities) in 15 equal-width bins over [0, 1]; the clip-weighted mean over bins of
  |accuracy - mean confidence|;
- how far that ECE would move on another draw of as many clips (:func:`ece_spread`: its
  bootstrap standard deviation), so a miss of a target by less than that is read as noise;
- the negative log-likelihood of the true label.

:func:`calibrate_model` fits ``T`` for one exported model from its split file's validation rows,
measures the validation and test rows (ECE and NLL before and after) and writes ``T`` into the
model's metadata;
``python -m training calibrate`` does it for every released model and keeps the figures in
``calibration.json`` beside ``metrics.json`` (the report's calibration section and reliability
diagrams come from there).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from app.contract import log_scores

N_BINS = 15
N_RESAMPLES = 1000  # bootstrap draws behind ece_spread
T_RANGE = (0.05, 20.0)  # the search interval for the temperature


def negative_log_likelihood(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean ``-log softmax(scores / temperature)[label]`` over the rows (float64)."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(scores: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in :data:`T_RANGE` that minimises the NLL of ``labels`` (n,) under
    ``softmax(scores / T)`` (scores (n, n_labels)); searched over log T, where it is smooth."""
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(scores, labels, float(np.exp(log_t))),
        bounds=tuple(np.log(T_RANGE)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    # Bin b holds confidences in (b/n, (b+1)/n]; a confidence of exactly 0 cannot occur.
    return np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> list[dict[str, Any]]:
    """Per confidence bin (equal width over [0, 1]; the top probability of each clip): its
    bounds, clips, accuracy and mean confidence. Empty bins have 0 clips and None means."""
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    index = _bin_index(confidence, n_bins)
    bins = []
    for b in range(n_bins):
        members = index == b
        n = int(members.sum())
        bins.append(
            {
                "low": b / n_bins,
                "high": (b + 1) / n_bins,
                "n": n,
                "accuracy": float(correct[members].mean()) if n else None,
                "confidence": float(confidence[members].mean()) if n else None,
            }
        )
    return bins


def _calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    # Per bin, (n_b / n) |accuracy_b - mean confidence_b| = |right_b - stated_b| / n, where
    # right_b counts the bin's right labels and stated_b sums its confidences; both come from
    # bincount, without a loop over bins, because ece_spread calls this a thousand times.
    index = _bin_index(confidence, n_bins)
    right = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    stated = np.bincount(index, weights=confidence, minlength=n_bins)
    return float(np.abs(right - stated).sum() / len(confidence))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS
) -> float:
    """Sum over confidence bins of (clips in bin / clips) x |accuracy - mean confidence|."""
    # Written out rather than taken from a library: scikit-learn has the reliability curve
    # (calibration_curve) for binary problems only, and no ECE.
    correct = probabilities.argmax(axis=-1) == labels
    return _calibration_error(probabilities.max(axis=-1), correct, n_bins)


def ece_spread(
    probabilities: np.ndarray,
    labels: np.ndarray,
    n_bins: int = N_BINS,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> float:
    """The bootstrap standard deviation of :func:`expected_calibration_error`: the clips drawn
    with replacement ``n_resamples`` times (fixed ``seed``, so a rerun gives the same figure)."""
    # Resampled by hand: scipy.stats.bootstrap wants one scalar observation per row, and a
    # clip here is a confidence together with whether its label was right.
    confidence = probabilities.max(axis=-1)
    correct = probabilities.argmax(axis=-1) == labels
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = [
        _calibration_error(confidence[rows], correct[rows], n_bins)
        for rows in (rng.integers(0, n, n) for _ in range(n_resamples))
    ]
    return float(np.std(draws, ddof=1))


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(scores, dtype=np.float64) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def measures(scores: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, Any]:
    """ECE (and its bootstrap spread), NLL, accuracy and the reliability bins of
    ``softmax(scores / temperature)``."""
    probs = softmax(scores, temperature)
    return {
        "ece": expected_calibration_error(probs, labels),
        "ece_sd": ece_spread(probs, labels),
        "nll": negative_log_likelihood(scores, labels, temperature),
        "accuracy": float((probs.argmax(axis=-1) == labels).mean()),
        "mean_confidence": float(probs.max(axis=-1).mean()),
        "bins": reliability_bins(probs, labels),
    }


def calibrate_model(
    model_path: str | os.PathLike[str],
    split_path: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] = ".cache/segments",
    write: bool = True,
    also_test: Sequence[str | os.PathLike[str]] = (),
) -> dict[str, Any]:
    """Fit the temperature of the model at ``model_path`` on its split file's validation rows,
    measure the test rows before and after, and (``write``) store it in the model's metadata.
    ``also_test``: other split files whose test rows are measured with the same temperature
    (the paper's clips for a model trained on more corpora), under ``also`` by split name.

    The fit starts from the raw logits whatever temperature the file already carries, so
    running it again gives the same temperature.
    """
    from training.evaluate import evaluate_onnx
    from training.export import read_metadata, write_metadata

    val = evaluate_onnx(model_path, split_path, data_root, split="val", cache_dir=cache_dir)
    loss = val.metadata.loss
    val_scores = log_scores(val.logits, loss)
    temperature = fit_temperature(val_scores, val.truth)

    def test_rows(split: str | os.PathLike[str]) -> dict[str, Any]:
        """A split's test rows at T = 1 and at the fitted temperature."""
        test = evaluate_onnx(model_path, split, data_root, split="test", cache_dir=cache_dir)
        scores = log_scores(test.logits, loss)
        return {
            "n": len(test.truth),
            "before": measures(scores, test.truth, 1.0),
            "after": measures(scores, test.truth, temperature),
        }

    if write:
        metadata = read_metadata(model_path)
        write_metadata(model_path, dataclasses.replace(metadata, temperature=temperature))
    record: dict[str, Any] = {
        "model": val.metadata.name,
        "loss": loss,
        "split_file": split_name(split_path),
        "temperature": round(temperature, 6),
        # The validation figures are the ones a recipe may be chosen on; test is for reporting.
        "val": {
            "n": len(val.truth),
            "nll_before": negative_log_likelihood(val_scores, val.truth, 1.0),
            "nll_after": negative_log_likelihood(val_scores, val.truth, temperature),
            "ece_before": expected_calibration_error(softmax(val_scores, 1.0), val.truth),
            "ece_after": expected_calibration_error(softmax(val_scores, temperature), val.truth),
        },
        "test": test_rows(split_path),
    }
    if also_test:
        record["also"] = {split_name(other): test_rows(other) for other in also_test}
    return record


def split_name(path: str | os.PathLike[str]) -> str:
    """A split file's path under its ``splits/`` folder: ``random.csv``, or
    ``<selection>/random.csv`` for a selection of other corpora."""
    parts = Path(path).parts
    return "/".join(parts[parts.index("splits") + 1 :]) if "splits" in parts else Path(path).name


def merge_calibration(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records in ``path`` with ``new`` replacing those of the same model; written back."""
    old = json.loads(path.read_text())["calibration"] if path.exists() else []
    names = {r["model"] for r in new}
    records = sorted([r for r in old if r["model"] not in names] + new, key=lambda r: r["model"])
    path.write_text(json.dumps({"calibration": records}, indent=1))
    return records
