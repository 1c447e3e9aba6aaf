"""The Kubernetes manifests validate against the API schemas offline and hold what runs need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
# kubernetes-validate ships the JSON schemas of each release inside the package: no network.
KUBERNETES_VERSION = "1.33"


def documents() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in by_kind("Deployment") if d["metadata"]["name"] == name)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        # strict: an unknown or misspelt field fails too; raises ValidationError with the path.
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_validator_rejects_a_broken_manifest() -> None:
    broken = deployment("ser")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kinds_present() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in documents()}
    assert {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("networking.k8s.io/v1", "Ingress"),
    } <= kinds


@pytest.mark.parametrize("name", ["ser", "ser-gpu"])
def test_deployment_probes_and_security(name: str) -> None:
    pod = deployment(name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # A read-only root needs a writable /tmp for spooled multipart uploads.
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])


def test_gpu_deployment_requests_one_gpu_and_only_cuda() -> None:
    (container,) = deployment("ser-gpu")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SER_PROVIDERS"] == "cuda"
    assert container["image"].endswith("-gpu")


def test_service_selects_both_variants_and_hpa_targets_cpu() -> None:
    (service,) = by_kind("Service")
    for name in ("ser", "ser-gpu"):
        labels = deployment(name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ser",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_ingress_carries_streams_and_hides_metrics() -> None:
    (ingress,) = by_kind("Ingress")
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-body-size"] == "21m"
    paths = {
        (p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]
    }
    assert ("/ws", "Prefix") in paths and ("/predict", "Exact") in paths
    # /metrics must match no rule: no Prefix "/" and no path that is a prefix of it.
    assert not any(kind == "Prefix" and "/metrics".startswith(p) for p, kind in paths)
    assert ("/metrics", "Exact") not in paths
