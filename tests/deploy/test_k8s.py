"""The Kubernetes manifests validate against the API schemas offline and hold what runs need."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from kubernetes_validate.utils import all_versions, latest_version
from packaging.version import Version
from starlette.routing import Mount

from app.api import apidocs, models, ops, page, predict, stream
from app.cpus import usable_cpus
from app.main import create_app
from app.settings import Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The CPU set (`kubectl apply -f deploy/k8s/`) and the GPU one in its own folder.
MANIFESTS = sorted(K8S.glob("*.yaml")) + sorted((K8S / "gpu").glob("*.yaml"))
# kubernetes-validate ships the JSON schemas of every release it supports inside the package
# (1.25 to 1.37 in 1.37.0): no network. The manifests use only APIs that all of them serve
# (apps/v1, v1, autoscaling/v2, policy/v1, networking.k8s.io/v1), so each release is checked.
KUBERNETES_VERSIONS = sorted(set(all_versions()), key=Version)
# Resource quantities as the manifests write them: CPUs ("500m", "2") and bytes ("384Mi").
QUANTITY_SCALES = {"m": 1e-3, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def documents() -> list[dict[str, Any]]:
    return [d for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in by_kind("Deployment") if d["metadata"]["name"] == name)


def the_container(name: str) -> dict[str, Any]:
    (container,) = deployment(name)["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"]}


def quantity(value: str | int) -> float:
    """A resource quantity as a number: ``"500m"`` -> 0.5 (CPUs), ``"1Gi"`` -> 2**30 (bytes)."""
    text = str(value)
    for suffix, scale in QUANTITY_SCALES.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * scale
    return float(text)


def pod_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The settings the server builds in a pod whose environment is ``env``."""
    for key in [k for k in os.environ if k.startswith("SER_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_strictly(path: Path) -> None:
    failures: dict[str, str] = {}
    for version in KUBERNETES_VERSIONS:
        for document in yaml.safe_load_all(path.read_text()):
            # strict: an unknown or misspelt field fails too.
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures[version] = str(e).split("\n", 1)[0]
    assert not failures


def test_validator_rejects_a_broken_manifest() -> None:
    broken = deployment("ser")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, latest_version(), strict=True)


def test_kinds_present() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for d in documents()}
    assert {
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("networking.k8s.io/v1", "Ingress"),
    } <= kinds


@pytest.mark.parametrize("name", ["ser", "ser-gpu"])
def test_deployment_security(name: str) -> None:
    pod = deployment(name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # A read-only root needs a writable /tmp for spooled multipart uploads.
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


@pytest.mark.parametrize("name", ["ser", "ser-gpu"])
def test_probes_reach_the_apps_own_endpoints(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = the_container(name)
    env = container_env(container)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["http"] == int(env["SER_PORT"])
    probes = {
        kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")
    }
    assert {probe["port"] for probe in probes.values()} == {"http"}
    # The app built from the pod's settings, its lifespan not run: the registry is not ready, as
    # while the models load or after one was refused. Liveness must still pass (a restart would
    # not help), readiness must not (the pod gets no traffic).
    client = TestClient(create_app(pod_settings(monkeypatch, env)))
    assert client.get(probes["startup"]["path"]).status_code == 200
    assert client.get(probes["liveness"]["path"]).status_code == 200
    readiness = client.get(probes["readiness"]["path"])
    assert readiness.status_code == 503
    assert readiness.json()["error"]["code"] == "not_ready"
    # Prometheus scrapes the pods through their annotations.
    notes = deployment(name)["spec"]["template"]["metadata"]["annotations"]
    assert int(notes["prometheus.io/port"]) == ports["http"]
    scraped = client.get(notes["prometheus.io/path"])
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("name", ["ser", "ser-gpu"])
def test_threads_are_what_the_server_derives_from_the_cpu_limit(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = the_container(name)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert quantity(requests[resource]) <= quantity(limits[resource]), resource
    limit_cpus = quantity(limits["cpu"])
    # The server counts the quota rounded up (app/cpus.py): a fractional limit would give the
    # pod more threads than CPUs.
    assert limit_cpus == int(limit_cpus)
    # The pod on a 64-core node, as the server sees it: cgroup v2's cpu.max from limits.cpu.
    (tmp_path / "cpu.max").write_text(f"{int(limit_cpus * 100_000)} 100000\n")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr("app.settings.usable_cpus", lambda: usable_cpus(tmp_path))
    env = container_env(container)
    derived = pod_settings(
        monkeypatch, {k: v for k, v in env.items() if k != "SER_INTRA_OP_THREADS"}
    )
    # The manifest spells out the value the server would pick itself: half the limit.
    assert int(env["SER_INTRA_OP_THREADS"]) == derived.intra_op_threads
    assert derived.intra_op_threads < limit_cpus
    # Decode and stream pools follow the limit, not the node's 64 cores.
    assert derived.work_threads == derived.stream_threads == limit_cpus


def test_gpu_deployment_requests_one_gpu_and_only_cuda() -> None:
    container = the_container("ser-gpu")
    # Extended resources cannot be overcommitted: the request must equal the limit.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container_env(container)["SER_PROVIDERS"] == "cuda"
    assert container["image"] == "ser-service:gpu"  # the tag docs/deployment.md builds


def test_the_cpu_set_leaves_the_gpu_deployment_out() -> None:
    """`kubectl apply -f deploy/k8s/` (not recursive) on a CPU-only cluster: nothing Pending."""
    top = [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text())]
    names = {d["metadata"]["name"] for d in top if d and d["kind"] == "Deployment"}
    assert names == {"ser"}
    assert the_container("ser")["image"] == "ser-service:cpu"


def test_a_gpu_rollout_needs_no_second_gpu() -> None:
    rolling = deployment("ser-gpu")["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == 0 and rolling["maxUnavailable"] == 1


def test_gpu_pods_go_only_to_nodes_that_can_run_cuda_13() -> None:
    """Driver R580+ and compute capability 7.5+, on GPU Feature Discovery's labels."""
    spec = deployment("ser-gpu")["spec"]["template"]["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]

    def schedulable(labels: dict[str, str]) -> bool:
        def holds(rule: dict[str, Any]) -> bool:
            value = labels.get(rule["key"])
            if value is None:
                return False
            if rule["operator"] == "Gt":
                return int(value) > int(rule["values"][0])
            return rule["operator"] == "In" and value in rule["values"]

        return any(all(holds(r) for r in t["matchExpressions"]) for t in terms["nodeSelectorTerms"])

    def node(driver: int, major: int, minor: int) -> dict[str, str]:
        return {
            "nvidia.com/cuda.driver-version.major": str(driver),
            "nvidia.com/gpu.compute.major": str(major),
            "nvidia.com/gpu.compute.minor": str(minor),
        }

    assert schedulable(node(580, 8, 0)) and schedulable(node(590, 7, 5))  # A100 / T4
    assert schedulable(node(580, 9, 0)) and schedulable(node(580, 12, 0))  # H100 / Blackwell
    assert not schedulable(node(580, 7, 0))  # V100: compute capability 7.0
    assert not schedulable(node(575, 8, 9))  # an R575 driver: no CUDA 13
    assert not schedulable({})  # a CPU node
    assert spec["runtimeClassName"] == "nvidia"
    container = the_container("ser-gpu")
    cache = container_env(container)["CUDA_CACHE_PATH"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[cache] in {v["name"] for v in spec["volumes"] if "emptyDir" in v}


def test_service_selects_both_variants() -> None:
    (service,) = by_kind("Service")
    for name in ("ser", "ser-gpu"):
        labels = deployment(name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {port["name"] for port in the_container(name)["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


def test_hpa_scales_the_cpu_deployment_on_its_cpu_requests() -> None:
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    scaled = [
        d
        for d in documents()
        if (d["apiVersion"], d["kind"], d["metadata"]["name"])
        == (target["apiVersion"], target["kind"], target["name"])
    ]
    assert len(scaled) == 1, f"scaleTargetRef {target} names no manifest here"
    assert target["name"] == "ser"  # the CPU replicas; the GPU ones are scaled by hand
    low, high = hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]
    assert 2 <= low < high
    # Applying both leaves the Deployment's count alone: it lies within the HPA's range.
    assert low <= scaled[0]["spec"]["replicas"] <= high
    # Utilization is measured against the requests: every container needs a CPU request.
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == (
        "Utilization"
    )
    for container in scaled[0]["spec"]["template"]["spec"]["containers"]:
        assert quantity(container["resources"]["requests"]["cpu"]) > 0


def test_pdb_lets_drains_and_rollouts_proceed() -> None:
    (pdb,) = by_kind("PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    cpu, gpu = deployment("ser"), deployment("ser-gpu")
    assert selector.items() <= cpu["spec"]["template"]["metadata"]["labels"].items()
    # Not the single GPU replica: a budget of one pod out of one would block every node drain.
    assert not selector.items() <= gpu["spec"]["template"]["metadata"]["labels"].items()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    fewest = min(cpu["spec"]["replicas"], hpa["spec"]["minReplicas"])
    min_available = pdb["spec"]["minAvailable"]
    assert isinstance(min_available, int) and "maxUnavailable" not in pdb["spec"]
    # At the smallest scale a drain may still evict one pod.
    assert fewest - min_available >= 1
    # A rollout never goes below the budget, and it can make progress.
    rolling = cpu["spec"]["strategy"]["rollingUpdate"]
    assert fewest - rolling["maxUnavailable"] >= min_available
    assert rolling["maxSurge"] + rolling["maxUnavailable"] >= 1


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


def ingress_routes(path: str, paths: set[tuple[str, str]]) -> bool:
    """Whether an Ingress with ``paths`` routes ``path`` (Kubernetes' matching: Exact is the
    whole path, Prefix matches whole path elements, so /docs does not match /docs-assets)."""
    for rule, kind in paths:
        if kind == "Exact" and path == rule:
            return True
        if kind == "Prefix" and (path == rule or path.startswith(rule.rstrip("/") + "/")):
            return True
    return False


def test_the_ingress_routes_every_public_route_of_the_app() -> None:
    """Each route the app serves, a file under each mount and the page's links: through the
    Ingress, all but /metrics (scraped from the pods)."""
    (ingress,) = by_kind("Ingress")
    paths = {
        (p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]
    }
    routers = (predict, models, ops, stream, page, apidocs)
    routes = [*create_app().routes, *(r for module in routers for r in module.router.routes)]
    served = []
    for route in routes:
        path = getattr(route, "path", "")
        served.append(f"{path}/some-file.js" if isinstance(route, Mount) else path)
    public = [p for p in served if p and p != "/metrics"]
    assert {"/docs-assets/some-file.js", "/redoc", "/ws/stream", "/v1/stream"} <= set(public)
    unrouted = [p for p in public if not ingress_routes(p, paths)]
    assert unrouted == []
    html = (REPO / "app" / "static" / "index.html").read_text()
    for link in re.findall(r'href="(/[^"]*)"', html):
        assert ingress_routes(link, paths), f"the page links {link}, which the Ingress drops"
