"""Start-up: which model files are served, which are skipped and why, and the provider."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from app import engine
from app.features import FeatureConfig
from app.logs import JsonFormatter
from tests.service.conftest import rewrite_metadata
from training.export import read_metadata


def skip_lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    """The JSON log lines of skipped models, as the server writes them."""
    formatter = JsonFormatter()
    return [
        json.loads(formatter.format(r))
        for r in caplog.records
        if getattr(r, "event", None) == "model_skipped"
    ]


def test_ready_with_both_models(make_client) -> None:
    client = make_client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": ["ce", "bce"], "default_model": "bce"}


def test_a_level_stage_model_is_the_default_over_a_better_scored_one(
    make_client, model_folder
) -> None:
    folder = model_folder("ce", "bce")  # bce has the better validation score
    client = make_client(models_dir=folder)
    assert client.get("/readyz").json()["default_model"] == "bce"
    ce = folder / "ce.onnx"
    config = read_metadata(ce).feature_config
    rewrite_metadata(ce, feature_config=dataclasses.replace(config, level="window"))
    client = make_client(models_dir=folder)
    assert client.get("/readyz").json()["default_model"] == "ce"


def test_a_model_of_more_corpora_is_the_default_over_a_better_scored_one(
    make_client, model_folder
) -> None:
    folder = model_folder("ce", "bce")  # bce has the better validation score
    ce = folder / "ce.onnx"
    metrics = read_metadata(ce).metrics
    grown = {"ravdess": 1154, "savee": 384, "tess": 2238, "nemo": 3547}
    rewrite_metadata(ce, metrics={**metrics, "training_corpora": grown})
    client = make_client(models_dir=folder)
    assert client.get("/readyz").json()["default_model"] == "ce"
    listed = {m["key"]: m for m in client.get("/v1/models").json()["models"]}
    assert listed["ce"]["training_corpora"] == grown
    assert listed["bce"]["training_corpora"] == {}  # its metadata does not say


def test_corrupt_model_only_is_not_ready(make_client, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "ce.onnx").write_bytes(b"this is not a protobuf")
    with caplog.at_level(logging.WARNING):
        client = make_client(models_dir=folder)
    response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert "ce.onnx" in error["message"] and "no usable model" in error["message"]
    assert "ce.onnx" in error["details"]["skipped"]
    (line,) = skip_lines(caplog)
    assert line["file"] == "ce.onnx" and "Protobuf" in line["reason"]
    # Not ready: /predict says so with 503, and health stays live.
    assert (
        client.post("/predict", content=b"x", headers={"content-type": "audio/wav"}).status_code
        == 503
    )
    assert client.get("/healthz").status_code == 200


def test_corrupt_file_beside_a_good_one_is_skipped(make_client, model_folder, caplog) -> None:
    folder = model_folder("ce")
    (folder / "bce.onnx").write_bytes(b"\x08\x07garbage")
    with caplog.at_level(logging.WARNING):
        client = make_client(models_dir=folder)
    assert client.get("/readyz").json()["models"] == ["ce"]
    listing = client.get("/v1/models").json()
    assert [m["key"] for m in listing["models"]] == ["ce"] and "bce.onnx" in listing["skipped"]
    assert [line["file"] for line in skip_lines(caplog)] == ["bce.onnx"]


def test_feature_config_mismatch_is_not_ready(
    make_client, model_folder, models_dir, caplog
) -> None:
    folder = model_folder("ce")
    stats = FeatureConfig().with_stats([0.0] * 128, [1.0] * 128)
    rewrite_metadata(
        folder / "ce.onnx",
        feature_config=FeatureConfig(preemphasis=0.5).with_stats(stats.mean, stats.std),
    )
    with caplog.at_level(logging.WARNING):
        client = make_client(models_dir=folder)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "preemphasis" in response.json()["error"]["message"]
    (line,) = skip_lines(caplog)
    assert line["level"] == "warning" and "preemphasis" in line["reason"]


def test_model_without_statistics_is_skipped(make_client, model_folder, caplog) -> None:
    folder = model_folder("ce")
    rewrite_metadata(folder / "ce.onnx", feature_config=FeatureConfig())
    with caplog.at_level(logging.WARNING):
        client = make_client(models_dir=folder)
    assert client.get("/readyz").status_code == 503
    assert "normalisation" in skip_lines(caplog)[0]["reason"]


def test_wrong_labels_are_skipped(make_client, model_folder) -> None:
    folder = model_folder("ce", "bce")
    rewrite_metadata(folder / "bce.onnx", labels=("a", "b", "c", "d", "e", "f", "g", "h"))
    client = make_client(models_dir=folder)
    assert client.get("/readyz").json()["models"] == ["ce"]
    assert "labels" in client.get("/v1/models").json()["skipped"]["bce.onnx"]


def test_missing_folder_and_missing_default(make_client, tmp_path: Path, model_folder) -> None:
    gone = make_client(models_dir=tmp_path / "nowhere")
    assert "SER_MODELS_DIR" in gone.get("/readyz").json()["error"]["message"]
    empty = make_client(models_dir=model_folder())
    assert "no *.onnx files" in empty.get("/readyz").json()["error"]["message"]
    no_default = make_client(models_dir=model_folder("ce"), default_model="l1")
    response = no_default.get("/readyz")
    assert response.status_code == 503 and "SER_DEFAULT_MODEL=l1" in response.text


def test_cuda_then_cpu_falls_back_to_cpu(make_client) -> None:
    client = make_client(providers="cuda,cpu")
    assert client.get("/readyz").status_code == 200
    models = client.get("/v1/models").json()["models"]
    assert {m["provider"] for m in models} == {"cpu"}
    metrics = client.get("/metrics").text
    assert 'ser_model_info{default="true",model="bce",name="ser-bce",provider="cpu"' in metrics


def test_cuda_only_without_cuda_is_not_ready(make_client, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        client = make_client(providers="cuda")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "SER_PROVIDERS=cuda" in response.json()["error"]["message"]
    assert all("cuda" in line["reason"].lower() for line in skip_lines(caplog))


def test_silent_cpu_fallback_is_detected(monkeypatch, models_dir: Path) -> None:
    """onnxruntime-gpu falls back to CPU silently when CUDA cannot start: caught."""
    monkeypatch.setattr(
        engine.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    # This CPU-only onnxruntime says so itself (a UserWarning) before falling back.
    missing = "CUDAExecutionProvider' is not in available"
    with (
        pytest.warns(UserWarning, match=missing),
        pytest.raises(engine.ProviderError, match="runs on CPUExecutionProvider"),
    ):
        engine.open_session(models_dir / "ce.onnx", ("cuda",), 1, 1)
    with pytest.warns(UserWarning, match=missing):
        session, provider = engine.open_session(models_dir / "ce.onnx", ("cuda", "cpu"), 1, 1)
    assert provider == "cpu" and session.get_providers() == ["CPUExecutionProvider"]


def test_requested_providers() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert engine.requested_providers(("auto",), both) == both
    assert engine.requested_providers(("auto",), both[1:]) == both[1:]
    assert engine.requested_providers(("cpu", "cuda"), both) == both[::-1]
    assert engine.requested_providers(("cuda",), both[1:]) == []


def test_a_provider_that_raises_falls_back_to_cpu_when_allowed(monkeypatch, models_dir) -> None:
    real = engine.ort.InferenceSession

    def picky(path, sess_options=None, providers=()):
        names = [p if isinstance(p, str) else p[0] for p in providers]  # (name, options) too
        if "CUDAExecutionProvider" in names:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected")
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(engine.ort, "InferenceSession", picky)
    monkeypatch.setattr(
        engine.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    for preference in (("auto",), ("cuda", "cpu")):
        _, provider = engine.open_session(models_dir / "ce.onnx", preference, 1, 1)
        assert provider == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA-capable device"):
        engine.open_session(models_dir / "ce.onnx", ("cuda",), 1, 1)


def test_a_second_model_with_the_same_loss_is_skipped(make_client, model_folder) -> None:
    folder = model_folder("ce")
    (folder / "ce_copy.onnx").write_bytes((folder / "ce.onnx").read_bytes())
    client = make_client(models_dir=folder)
    listing = client.get("/v1/models").json()
    assert [m["file"] for m in listing["models"]] == ["ce.onnx"]
    assert "second 'ce' model" in listing["skipped"]["ce_copy.onnx"]
