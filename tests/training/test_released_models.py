"""The bundled release agrees with itself: each ONNX file, metrics.json, calibration.json and
the split file describe the same models. A retrained model copied in without the rest (or the
rest regenerated without the model) fails here, not in front of a user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.contract import LOSSES
from app.labels import LABELS
from training.export import read_metadata
from training.splits import split_sha256

MODELS = Path(__file__).resolve().parents[2] / "models"
RELEASED = sorted(MODELS.glob("ser-*.onnx"))


def _random_runs() -> dict[str, dict]:
    runs = json.loads((MODELS / "metrics.json").read_text())["runs"]
    return {
        r["loss"]: r
        for r in runs
        if r["protocol"] == "random" and r["architecture"] == "sequential"
    }


def test_every_loss_is_released_once() -> None:
    assert sorted(p.stem for p in RELEASED) == sorted(f"ser-{loss}" for loss in LOSSES)


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_a_released_model_matches_its_records(path: Path) -> None:
    metadata = read_metadata(path)
    record = _random_runs()[metadata.loss]
    assert metadata.name == path.stem and metadata.labels == LABELS
    assert record["onnx"] == path.name
    # Trained on the committed split, and scored on it as metrics.json says.
    assert metadata.split_sha256 == split_sha256(MODELS / "splits" / "random.csv")
    assert metadata.split_sha256 == record["split_sha256"]
    for part in ("val", "test"):
        assert metadata.metrics[part]["accuracy"] == pytest.approx(record[part]["accuracy"])
        assert metadata.metrics[part]["macro_f1"] == pytest.approx(record[part]["macro_f1"])
    # The temperature the server applies is the one calibration.json reports.
    (calibration,) = [
        c
        for c in json.loads((MODELS / "calibration.json").read_text())["calibration"]
        if c["model"] == metadata.name
    ]
    assert metadata.temperature == pytest.approx(calibration["temperature"], abs=1e-6)
    assert calibration["test"]["after"]["accuracy"] == pytest.approx(record["test"]["accuracy"])
