"""The serving image, built from the Dockerfile and run as docker-compose.yml runs a replica.

The image is built with podman on the stand-in base (``tests/deploy/containers.py``), then one
container runs with compose's environment, read-only root, tmpfs and limits, its port published
on 127.0.0.1 only. What the stand-in does not prove: docs/deployment.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

from app.contract import LOSSES
from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes
from tests.deploy.conftest import REPO
from tests.deploy.containers import (
    COMPOSE_GRACE_PERIOD_S,
    SERVICE_IMAGE,
    Build,
    compose_service,
    inspect,
    logs,
    podman,
    published_port,
    run_args_like_compose,
    wait_until,
)

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1500)]

NAME = "ser-test-replica"
START_TIMEOUT_S = 120.0
# The clip the README's examples use; CI has ../shared beside its clone, a bare clone may not.
CORPUS_CLIP = REPO.parent / "shared/data/ser-corpus/ravdess/Actor_01/03-01-05-01-01-01-01.opus"
# What a process in the container may write besides /tmp: nothing.
READ_ONLY_PATHS = ("/", "/srv/ser", "/srv/ser/models", "/opt/venv", "/var/tmp", "/run", "/home")


@dataclass(frozen=True)
class Replica:
    name: str
    url: str
    ready_s: float  # from `podman run` to the first /readyz 200


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=10, trust_env=False)


@pytest.fixture(scope="module")
def replica(service_image: Build) -> Iterator[Replica]:
    podman("rm", "--force", "--ignore", NAME)  # left over from an interrupted run
    options = run_args_like_compose(compose_service("ser"))
    started = time.monotonic()
    podman("run", "--detach", "--name", NAME, *options, "-p", "127.0.0.1::8000", SERVICE_IMAGE)
    try:
        url = f"http://127.0.0.1:{published_port(NAME, 8000)}"
        wait_until(lambda: get(f"{url}/readyz").status_code == 200, START_TIMEOUT_S, NAME)
        yield Replica(NAME, url, time.monotonic() - started)
    finally:
        print(logs(NAME)[-4000:])  # shown by pytest when a test of this module failed
        podman("rm", "--force", "--ignore", NAME)


def in_container(replica: Replica, code: str) -> dict:
    """Run Python ``code`` in the running container (as its user); what it prints, as JSON."""
    done = podman("exec", replica.name, "python", "-c", code)
    return json.loads(done.stdout)


def test_the_image_and_its_figures(
    service_image: Build, replica: Replica, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\ncontainer: {service_image.summary()}; start to ready {replica.ready_s:.1f} s")
    # The stand-in base is larger than python:3.11-slim (docs/deployment.md); the bulk is the
    # serving environment, which this bound would catch doubling (e.g. torch sneaking in).
    assert service_image.size_bytes < 1_000_000_000
    assert service_image.cached_s < service_image.cold_s


def test_no_torch_or_training_code_inside(service_image: Build) -> None:
    code = (
        "import importlib.metadata as m, importlib.util as u, json; print(json.dumps({"
        "'dists': sorted(d.metadata['Name'].lower() for d in m.distributions()),"
        "'modules': {n: u.find_spec(n) is not None for n in ('torch', 'librosa', 'training', "
        "'app', 'onnxruntime')}}))"
    )
    done = podman("run", "--rm", "--entrypoint", "python", SERVICE_IMAGE, "-c", code)
    found = json.loads(done.stdout)
    assert found["modules"] == {
        "torch": False,
        "librosa": False,
        "training": False,
        "app": True,
        "onnxruntime": True,
    }
    assert not {"torch", "librosa", "onnxruntime-gpu", "ser-client"} & set(found["dists"])
    assert "ser-service" in found["dists"]


def test_the_server_runs_as_user_10001(replica: Replica) -> None:
    assert inspect(SERVICE_IMAGE, "{{.Config.User}}", "image") == "10001:10001"
    status = podman("exec", replica.name, "cat", "/proc/1/status").stdout  # the server itself
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert ids["Uid"] == ["10001"] * 4 and ids["Gid"] == ["10001"] * 4
    assert ids["Name"] == ["python"]


def test_only_tmp_is_writable_and_uploads_spool_there(replica: Replica) -> None:
    code = (
        "import json, os\n"
        "result = {}\n"
        f"for path in {(*READ_ONLY_PATHS, '/tmp')!r}:\n"
        "    try:\n"
        "        with open(os.path.join(path, 'probe'), 'w') as f: f.write('x')\n"
        "        result[path] = 'written'\n"
        "    except OSError as e:\n"
        "        result[path] = e.errno\n"
        "print(json.dumps(result))\n"
    )
    result = in_container(replica, code)
    erofs = 30
    assert result == {**dict.fromkeys(READ_ONLY_PATHS, erofs), "/tmp": "written"}
    # Multipart uploads over 1 MB are spooled to /tmp (docker-compose.yml's tmpfs).
    clip = wav_bytes(synth_speechlike(12.0, 48_000, seed=11), 48_000)
    assert len(clip) > 1_000_000
    response = httpx.post(
        f"{replica.url}/predict", files={"file": ("long.wav", clip)}, timeout=60, trust_env=False
    )
    assert response.status_code == 200, response.text
    assert response.json()["duration_s"] == pytest.approx(12.0, abs=0.01)


def test_the_dockerfile_healthcheck_passes_inside(replica: Replica) -> None:
    check = json.loads(podman("image", "inspect", SERVICE_IMAGE).stdout)[0]["Healthcheck"]
    assert check["Test"][:2] == ["CMD", "python"]
    podman("healthcheck", "run", replica.name)  # exit 0: healthy
    assert inspect(replica.name, "{{.State.Health.Status}}") == "healthy"
    # The same command fails when nothing answers where it looks: it does probe the server.
    wrong_port = podman("exec", "-e", "SER_PORT=1", replica.name, *check["Test"][1:], check=False)
    assert wrong_port.returncode != 0


def test_ready_with_every_released_model(replica: Replica) -> None:
    ready = get(f"{replica.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert sorted(ready.json()["models"]) == sorted(LOSSES)
    released = sorted(p.name for p in (REPO / "models").glob("ser-*.onnx"))
    assert len(released) == len(LOSSES)


def _clip() -> tuple[str, bytes]:
    if CORPUS_CLIP.is_file():
        return CORPUS_CLIP.name, CORPUS_CLIP.read_bytes()
    return "speechlike.wav", wav_bytes(synth_speechlike(4.0, 16_000, seed=7), 16_000)


def test_predict_matches_the_service_in_process(replica: Replica) -> None:
    name, clip = _clip()
    from_container = httpx.post(
        f"{replica.url}/predict", files={"file": (name, clip)}, timeout=60, trust_env=False
    )
    assert from_container.status_code == 200, from_container.text
    settings = Settings(models_dir=REPO / "models", providers="cpu", intra_op_threads=1)
    with TestClient(create_app(settings)) as client:
        in_process = client.post("/predict", files={"file": (name, clip)})
    assert in_process.status_code == 200, in_process.text
    got, want = from_container.json(), in_process.json()
    assert (got["label"], got["model"]) == (want["label"], want["model"])
    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)
    assert len(got["segments"]) == len(want["segments"])
    for a, b in zip(got["segments"], want["segments"], strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_sigterm_stops_it_within_the_grace_period(replica: Replica) -> None:
    """Last: it stops the container."""
    started = time.monotonic()
    podman("kill", "--signal", "TERM", replica.name)
    podman("wait", replica.name, timeout=COMPOSE_GRACE_PERIOD_S + 20)
    stopped_s = time.monotonic() - started
    assert stopped_s < COMPOSE_GRACE_PERIOD_S
    assert inspect(replica.name, "{{.State.ExitCode}}") == "0"  # not 137: not killed
    assert "Application shutdown complete" in logs(replica.name)
