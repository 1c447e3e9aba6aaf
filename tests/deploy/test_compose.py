"""docker-compose.yml: gateway in front of healthy replicas, GPU profile, one config source."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import MULTIPART_OVERHEAD_BYTES, Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_gateway_mounts_the_repo_template_and_waits_for_healthy_replicas(
    services: dict[str, Any],
) -> None:
    gateway = services["gateway"]
    assert gateway["image"].startswith("nginx:")
    assert gateway["depends_on"]["ser"]["condition"] == "service_healthy"
    source, target, *mode = gateway["volumes"][0].split(":")
    assert (REPO / source).resolve() == (REPO / "deploy" / "nginx" / "templates").resolve()
    assert target == "/etc/nginx/templates" and mode == ["ro"]
    assert gateway["ports"], "the gateway is the published entry point"
    public = gateway["environment"]["GATEWAY_LISTEN"]
    assert any(p.endswith(f":{public}") for p in gateway["ports"])
    internal = gateway["environment"]["GATEWAY_INTERNAL_LISTEN"]
    assert not any(internal in p for p in gateway["ports"]), "metrics port must stay internal"


def test_compose_sets_every_template_placeholder(
    services: dict[str, Any], gateway_placeholders: set[str], render_gateway: Any
) -> None:
    env = services["gateway"]["environment"]
    assert env["NGINX_ENVSUBST_FILTER"] == "GATEWAY_"
    assert gateway_placeholders == {k for k in env if k.startswith("GATEWAY_")}
    rendered = render_gateway(env)
    assert "server ser:8000 resolve" in rendered and "${" not in rendered


def test_replicas_healthcheck_limits_and_settings(services: dict[str, Any]) -> None:
    ser = services["ser"]
    assert ser["deploy"]["replicas"] >= 2
    assert "ports" not in ser, "replicas are reached through the gateway only"
    assert {"cpus", "memory"} <= set(ser["deploy"]["resources"]["limits"])
    assert "/healthz" in " ".join(ser["healthcheck"]["test"])
    env = ser["environment"]
    assert env["SER_PROVIDERS"] == "cpu" and env["SER_HOST"] == "0.0.0.0"
    assert {"SER_WORKERS", "SER_INTRA_OP_THREADS", "SER_MODELS_DIR"} <= set(env)
    # A replica per core: one process, one decode thread, one ONNX Runtime thread each.
    assert env["SER_WORKERS"] == env["SER_WORK_THREADS"] == env["SER_INTRA_OP_THREADS"] == "1"
    assert ser["read_only"] is True and "/tmp" in ser["tmpfs"]


def test_gpu_profile_reserves_an_nvidia_device(services: dict[str, Any]) -> None:
    gpu = services["ser-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "runtime-gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["SER_PROVIDERS"] == "cuda"
    assert "ser" in gpu["networks"]["default"]["aliases"]
    assert all("profiles" not in services[name] for name in ("gateway", "ser"))


def test_gateway_body_limit_fits_the_service_upload_limit(
    services: dict[str, Any], gateway_template: str
) -> None:
    (size,) = re.findall(r"client_max_body_size\s+(\d+)m;", gateway_template)
    gateway_bytes = int(size) * 1024 * 1024
    upload_bytes = int(services["ser"]["environment"]["SER_MAX_UPLOAD_BYTES"])
    assert upload_bytes == Settings().max_upload_bytes  # compose keeps the service's default
    # Every upload the service accepts gets through; at most 15 % more is buffered for nothing.
    assert upload_bytes + MULTIPART_OVERHEAD_BYTES <= gateway_bytes <= upload_bytes * 1.15
