"""Operations: health, readiness, metrics, /v1/models, OpenAPI, logs, settings, CLI."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import ValidationError

from app.cli import build_parser
from app.logs import JsonFormatter
from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes


def test_not_ready_before_the_lifespan_has_run(models_dir: Path) -> None:
    client = TestClient(create_app(Settings(models_dir=models_dir)))  # no `with`: no lifespan
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["message"] == "the models are loading"
    assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_and_predictions(client: TestClient) -> None:
    labels = {"route": "/v1/predict", "method": "POST", "status": "200"}

    def sample(name: str, extra: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, extra) or 0.0

    before = sample("ser_http_requests_total", labels)
    audio_before = sample("ser_audio_seconds_total", {"source": "upload"})
    data = wav_bytes(synth_speechlike(1.5, 16_000), 16_000)
    for _ in range(3):
        client.post("/v1/predict?model=ce", content=data, headers={"content-type": "audio/wav"})
    text = client.get("/metrics").text
    assert sample("ser_http_requests_total", labels) - before == 3
    assert sample("ser_http_request_duration_seconds_count", labels) >= 3
    assert sample("ser_audio_seconds_total", {"source": "upload"}) - audio_before == (
        pytest.approx(4.5)
    )
    for name in (
        "ser_inference_duration_seconds_bucket",
        "ser_inference_batch_size_bucket",
        "ser_active_streams",
        'ser_predictions_total{label="',
        'ser_model_info{default="false",model="ce"',
        "ser_models_ready 1.0",
    ):
        assert name in text
    # Unknown paths are counted under one label, not one series per path.
    client.get("/some/random/path")
    assert (
        sample("ser_http_requests_total", {"route": "unmatched", "method": "GET", "status": "404"})
        >= 1
    )


def test_models_listing(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["default"] == "bce" and body["ready"] is True and body["skipped"] == {}
    by_key = {m["key"]: m for m in body["models"]}
    assert set(by_key) == {"ce", "bce"}
    assert by_key["bce"]["default"] is True and by_key["ce"]["default"] is False
    ce = by_key["ce"]
    assert ce["provider"] == "cpu" and ce["name"] == "ser-ce" and ce["version"] == "0.0.0-test"
    assert ce["metrics"] == {"validation": {"macro_f1": 0.5, "accuracy": 0.5}}
    assert ce["validation_score"] == 0.5 and ce["file"] == "ce.onnx"
    assert ce["feature_config"]["n_mels"] == 128 and "mean" not in ce["feature_config"]
    assert ce["feature_config"]["normalised"] is True


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    assert "multipart/form-data" in predict["requestBody"]["content"]
    assert "audio/wav" in predict["requestBody"]["content"]
    assert {"200", "413", "415", "422", "404"} <= set(predict["responses"])
    for name in ("PredictResponse", "ErrorResponse", "ModelList"):
        assert name in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    assert "/predict" in schema["paths"] and "/healthz" in schema["paths"]


def test_one_json_log_line_per_request(client: TestClient, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        client.get("/healthz")
    (record,) = [r for r in caplog.records if r.name == "app.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "GET" and line["path"] == "/healthz" and line["status"] == 200
    assert line["duration_ms"] >= 0 and line["client"].startswith("testclient")
    assert line["level"] == "info" and line["ts"].endswith("+00:00")


def test_importing_the_app_does_not_import_torch() -> None:
    code = "import app.main, app.cli, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_settings_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SER_PROVIDERS", " CUDA, cpu ")
    monkeypatch.setenv("SER_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("SER_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SER_DEFAULT_MODEL", "l1")
    settings = Settings()
    assert settings.provider_preference == ("cuda", "cpu")
    assert settings.max_batch_size == 4 and settings.log_level == "debug"
    assert settings.default_model == "l1"
    assert Settings().stream_max_frame_bytes == 256 * 1024


@pytest.mark.parametrize(
    "bad",
    [
        {"providers": "tpu"},
        {"providers": "cpu,cpu"},
        {"default_model": "mse"},
        {"max_batch_size": 0},
        {"log_level": "loud"},
        {"min_audio_s": 700.0},
    ],
)
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_cli_flags_and_environment(monkeypatch) -> None:
    defaults = build_parser().parse_args([])
    assert (defaults.host, defaults.port, defaults.workers) == ("127.0.0.1", 8000, 1)
    monkeypatch.setenv("SER_HOST", "0.0.0.0")
    monkeypatch.setenv("SER_PORT", "9001")
    from_env = build_parser().parse_args([])
    assert (from_env.host, from_env.port) == ("0.0.0.0", 9001)
    flags = build_parser().parse_args(["--port", "9100", "--workers", "2"])
    assert (flags.port, flags.workers) == (9100, 2)


@pytest.mark.parametrize(
    ("argv0", "usage"),
    [("/venv/bin/ser-serve", "usage: ser-serve"), ("/src/app/__main__.py", "usage: python -m app")],
)
def test_the_help_names_the_command_that_ran_and_where_settings_are(
    monkeypatch: pytest.MonkeyPatch, argv0: str, usage: str
) -> None:
    monkeypatch.setattr("sys.argv", [argv0])
    shown = build_parser().format_help()
    assert shown.startswith(usage) and "docs/api.md" in shown and "(README)" not in shown


def test_api_docs_use_only_the_services_own_assets(client) -> None:
    for path in ("/docs", "/redoc"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "https://" not in page.text and "http://" not in page.text
        for asset in re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', page.text):
            assert client.get(asset).status_code == 200, asset
    assert (
        client.get("/docs-assets/swagger-ui-bundle.js")
        .headers["content-type"]
        .startswith("text/javascript")
    )


def test_static_files_are_counted_under_their_mount(client) -> None:
    assert client.get("/static/app.js").status_code == 200
    text = client.get("/metrics").text
    assert 'route="/static/{path}"' in text


def test_a_port_in_use_fails_before_any_model_loads() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "app", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 10  # the models take longer than this to load
