"""The bundled release agrees with itself: each ONNX file, metrics.json, calibration.json and
the split file describe the same models. A retrained model copied in without the rest (or the
rest regenerated without the model) fails here, not in front of a user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.contract import LOSSES, ModelMetadata
from app.labels import LABELS
from training.export import read_metadata
from training.splits import split_sha256

MODELS = Path(__file__).resolve().parents[2] / "models"
RELEASED = sorted(MODELS.glob("ser-*.onnx"))


def _record_of(metadata: ModelMetadata) -> dict:
    """The metrics.json record a released model came from: its loss, on its split file."""
    runs = json.loads((MODELS / "metrics.json").read_text())["runs"]
    (record,) = [
        r
        for r in runs
        if r["protocol"] == "random"
        and r["architecture"] == "sequential"
        and r["loss"] == metadata.loss
        and r["split_sha256"] == metadata.split_sha256
    ]
    return record


def test_every_loss_is_released_once() -> None:
    assert sorted(p.stem for p in RELEASED) == sorted(f"ser-{loss}" for loss in LOSSES)


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_a_released_model_matches_its_records(path: Path) -> None:
    metadata = read_metadata(path)
    record = _record_of(metadata)
    assert metadata.name == path.stem and metadata.labels == LABELS
    assert record["onnx"] == path.name
    # Trained on the committed split it names, and scored on it as metrics.json says.
    assert metadata.split_sha256 == split_sha256(MODELS / metadata.metrics["split_file"])
    # The corpora /v1/models reports are those the record trained on.
    assert metadata.metrics["training_corpora"] == record.get(
        "corpora", {"ravdess": 1154, "savee": 384, "tess": 2238}
    )
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


@pytest.mark.parametrize("path", RELEASED, ids=lambda p: p.stem)
def test_no_paper_test_clip_was_trained_on(path: Path) -> None:
    """Whatever corpora a released model learnt from, the paper's test clips (random.csv) are
    test clips of its split, so the paper table scores every model on clips it never heard."""
    from training.splits import read_split

    own = dict(
        (c.path, part) for c, part in read_split(MODELS / read_metadata(path).metrics["split_file"])
    )
    paper = read_split(MODELS / "splits" / "random.csv")
    assert all(own[c.path] == part for c, part in paper)
