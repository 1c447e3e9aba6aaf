"""The model contract: metadata round-trips, compatibility checks, probability heads."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from app.contract import LOSSES, MetadataError, ModelMetadata, by_label, probabilities, top_label
from app.features import FeatureConfig
from app.labels import LABELS

STATS = FeatureConfig().with_stats(np.zeros(128), np.ones(128))


def metadata(**overrides) -> ModelMetadata:
    values = dict(
        name="ser-ce",
        loss="ce",
        architecture="sequential",
        version="1",
        labels=LABELS,
        feature_config=STATS,
        metrics={"test": {"accuracy": 0.9}},
    )
    values.update(overrides)
    return ModelMetadata(**values)


def test_round_trips_through_onnx_props() -> None:
    meta = metadata()
    assert ModelMetadata.from_onnx_props(meta.to_onnx_props()) == meta


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({}, "no 'ser_metadata'"),
        ({"ser_metadata": "{not json"}, "malformed"),
        ({"ser_metadata": '{"schema_version": 1}'}, "malformed"),
        ({"ser_metadata": '{"schema_version": 99}'}, "schema"),
    ],
)
def test_bad_metadata_is_a_clear_error(props: dict, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_onnx_props(props)


def test_unknown_loss_is_rejected() -> None:
    props = metadata().to_onnx_props()
    props["ser_metadata"] = props["ser_metadata"].replace('"loss": "ce"', '"loss": "mse"')
    with pytest.raises(MetadataError, match="unknown loss"):
        ModelMetadata.from_onnx_props(props)


def test_compatibility_checks() -> None:
    metadata().check_compatible(FeatureConfig())
    with pytest.raises(MetadataError, match="labels"):
        metadata(labels=tuple(reversed(LABELS))).check_compatible(FeatureConfig())
    other = FeatureConfig(hop_length=128).with_stats(np.zeros(128), np.ones(128))
    with pytest.raises(MetadataError, match="hop_length"):
        metadata(feature_config=other).check_compatible(FeatureConfig())
    with pytest.raises(MetadataError, match="normalisation"):
        metadata(feature_config=FeatureConfig()).check_compatible(FeatureConfig())


@pytest.mark.parametrize("loss", LOSSES)
def test_probabilities_sum_to_one_and_keep_the_argmax(loss: str) -> None:
    logits = np.random.default_rng(0).normal(scale=5.0, size=(16, 8))
    p = probabilities(logits, loss)  # type: ignore[arg-type]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (p.argmax(axis=1) == logits.argmax(axis=1)).all()


@pytest.mark.parametrize("loss", LOSSES)
def test_probabilities_survive_extreme_logits(loss: str) -> None:
    logits = np.array([[-1e4] * 8, [1e4] + [-1e4] * 7, [800.0] * 8])
    p = probabilities(logits, loss)  # type: ignore[arg-type]
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


def test_bce_head_renormalises_sigmoids() -> None:
    logits = np.array([[0.0, 2.0, -1.0, -3.0, -3.0, -3.0, -3.0, -3.0]])
    sig = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(probabilities(logits, "bce"), sig / sig.sum(), rtol=1e-5)


def test_front_end_imports_no_torch() -> None:
    code = (
        "import sys, app, app.audio, app.features, app.contract, app.labels; "
        "assert 'torch' not in sys.modules and 'librosa' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("loss", LOSSES)
def test_temperature_softens_or_sharpens_without_changing_the_label(loss: str) -> None:
    logits = np.random.default_rng(1).normal(scale=3.0, size=(32, 8))
    plain = probabilities(logits, loss)  # type: ignore[arg-type]
    soft = probabilities(logits, loss, temperature=2.0)  # type: ignore[arg-type]
    sharp = probabilities(logits, loss, temperature=0.5)  # type: ignore[arg-type]
    for p in (soft, sharp):
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert (p.argmax(axis=1) == plain.argmax(axis=1)).all()
    assert (soft.max(axis=1) < plain.max(axis=1)).all()
    assert (sharp.max(axis=1) > plain.max(axis=1)).all()
    # softmax(scores / T): for CE the scores are the logits themselves.
    if loss == "ce":
        z = logits / 2.0
        expected = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(soft, expected, rtol=1e-5)


def test_temperature_travels_in_the_metadata_and_must_be_positive() -> None:
    meta = metadata(temperature=0.8)
    again = ModelMetadata.from_json(meta.to_json())
    assert again.temperature == 0.8
    logits = np.random.default_rng(2).normal(size=(4, 8))
    np.testing.assert_allclose(again.probabilities(logits), probabilities(logits, "ce", 0.8))
    # Models exported before calibration existed carry no temperature: 1.0.
    data = json.loads(meta.to_json())
    del data["temperature"]
    assert ModelMetadata.from_json(json.dumps(data)).temperature == 1.0
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(MetadataError, match="temperature"):
            metadata(temperature=bad)
    data["temperature"] = "warm"
    with pytest.raises(MetadataError):
        ModelMetadata.from_json(json.dumps(data))


def test_responses_round_probabilities_in_one_place() -> None:
    p = np.array([0.123456789, 0.2, 0.3, 0.1, 0.05, 0.100000049, 0.076543211, 0.05])
    rounded = by_label(p)
    assert list(rounded) == list(LABELS)
    assert rounded["neutral"] == 0.123457 and rounded["fearful"] == 0.1
    label, confidence = top_label(p)
    assert label == "happy" and confidence == rounded["happy"] == 0.3
