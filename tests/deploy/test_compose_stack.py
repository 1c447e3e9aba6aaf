"""docker-compose.yml for real: the gateway container in front of two replica containers.

podman-compose (PyPI, requirements/dev.txt) runs docker-compose.yml with the stand-in override
``deploy/standin/compose.yml`` on the images that ``tests/deploy/containers.py`` builds. The
tests reach the stack only through the gateway's port, published on 127.0.0.1; they look inside
it with ``podman exec`` and ``podman logs``. One replica's process is SIGKILLed in the middle of
a load of uploads and streams (as a crash or the OOM killer would end it): nothing but the
requests in flight on it may fail, and compose's restart policy brings it back into the pool.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.labels import LABELS
from benchmarks.soak_gateway import Tally, one_stream, predict_loop
from tests.conftest import synth_speechlike, wav_bytes
from tests.deploy.conftest import REPO
from tests.deploy.containers import (
    COMPOSE_FILES,
    environment,
    inspect,
    logs,
    podman,
    wait_until,
)
from tests.deploy.test_gateway import free_port

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(1500)]

PROJECT = "sertest"  # container names sertest_ser_1, sertest_ser_2, sertest_gateway_1
REPLICAS = (f"{PROJECT}_ser_1", f"{PROJECT}_ser_2")
GATEWAY = f"{PROJECT}_gateway_1"
# podman's --read-only also mounts a writable /run, /tmp and /var/tmp; Docker's read_only does
# not, so the replicas get only compose's tmpfs, as under Docker.
RUN_ARGS = "--podman-run-args=--read-only-tmpfs=false"
START_TIMEOUT_S = 180.0
LOAD_S = 40.0
KILL_AT_S = 10.0
CLIENTS = 2  # threads per kind of request, as tests/deploy/test_soak.py runs the soak
REJOIN_TIMEOUT_S = 60.0
READY_CHECK = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"


def compose(*args: str, env: dict[str, str], timeout: float = 300.0) -> str:
    """``podman-compose`` with docker-compose.yml and the stand-in override."""
    files = [a for path in COMPOSE_FILES for a in ("-f", str(path))]
    command = [sys.executable, "-m", "podman_compose", RUN_ARGS, *files, "-p", PROJECT, *args]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@dataclass(frozen=True)
class Stack:
    url: str
    port: int
    addresses: dict[str, str]  # container name -> its address on the compose network
    up_to_ready_s: float  # from `podman-compose up` to both replicas ready

    def gateway_log(self) -> list[dict[str, object]]:
        lines = logs(GATEWAY).splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"time"')]


def replica_ready(name: str) -> bool:
    return podman("exec", name, "python", "-c", READY_CHECK, check=False).returncode == 0


def network_address(name: str) -> str:
    return inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    if importlib.util.find_spec("podman_compose") is None:
        if os.environ.get("CI"):
            pytest.fail("podman-compose is missing: requirements/dev.txt installs it")
        pytest.skip("podman-compose is not installed (pip install -r requirements/dev.txt)")
    request.getfixturevalue("service_image")  # built once per run, after the check above
    port = free_port()
    env = {**environment(), "SER_GATEWAY_PORT": f"127.0.0.1:{port}"}
    compose("down", env=env)  # containers left by an interrupted run
    started = time.monotonic()
    try:
        compose("up", "-d", env=env)
        for name in REPLICAS:
            wait_until(lambda n=name: replica_ready(n), START_TIMEOUT_S, name)
        ready_s = time.monotonic() - started
        url = f"http://127.0.0.1:{port}"
        gateway_ready = lambda: httpx.get(f"{url}/readyz", trust_env=False).is_success  # noqa: E731
        wait_until(gateway_ready, 30, "the gateway")
        addresses = {name: network_address(name) for name in (*REPLICAS, GATEWAY)}
        yield Stack(url, port, addresses, ready_s)
    finally:
        for name in (*REPLICAS, GATEWAY):
            print(f"---- {name}\n{logs(name)[-3000:]}")  # shown when a test failed
        compose("down", env=env)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30, trust_env=False) as c:
        yield c


def test_only_the_gateway_is_published(stack: Stack, client: httpx.Client) -> None:
    published = podman("port", GATEWAY).stdout.split()
    assert published == ["8080/tcp", "->", f"127.0.0.1:{stack.port}"]
    for name in REPLICAS:
        assert podman("port", name).stdout.strip() == ""
    public = client.get("/metrics")
    assert public.status_code == 404 and public.json()["error"]["code"] == "not_found"
    # The internal listener answers inside the compose network, with a replica's metrics.
    inside = podman("exec", GATEWAY, "wget", "-q", "-O", "-", "http://127.0.0.1:9145/metrics")
    assert "ser_http_requests_total" in inside.stdout


def test_compose_healthchecks_pass(stack: Stack) -> None:
    # podman 4.3 runs no healthcheck on a timer without systemd: run compose's commands now.
    for name in (*REPLICAS, GATEWAY):
        podman("healthcheck", "run", name)
        assert inspect(name, "{{.State.Health.Status}}") == "healthy"


def test_replicas_run_as_compose_says(stack: Stack) -> None:
    for name in REPLICAS:
        assert inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        assert inspect(name, "{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped"
        assert "/tmp:" in inspect(name, "{{.HostConfig.Tmpfs}}")
    assert stack.addresses[GATEWAY] == "172.28.0.10"  # the address the replicas trust


def test_predict_and_a_stream_through_the_gateway(stack: Stack, client: httpx.Client) -> None:
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=3), 16_000)
    response = client.post("/predict", files={"file": ("clip.wav", audio, "audio/wav")})
    assert response.status_code == 200, response.text
    assert response.json()["label"] in LABELS
    pcm = (np.clip(synth_speechlike(5.0, 16_000, seed=4), -1, 1) * 32767).astype("<i2").tobytes()
    start = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
    messages: list[dict[str, object]] = []
    with connect(f"ws://127.0.0.1:{stack.port}/ws/stream", open_timeout=10) as ws:
        ws.send(json.dumps(start))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for offset in range(0, len(pcm), 3200):  # 100 ms chunks
            ws.send(pcm[offset : offset + 3200])
        ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while True:
                messages.append(json.loads(ws.recv(timeout=20)))
        close_code = ws.close_code
    assert [m["type"] for m in messages] == ["prediction"] * 4 + ["summary"]
    assert close_code == 1000


def served_by(stack: Stack, since: int = 0) -> list[str]:
    """The replica (container name) that answered each request the gateway logged, from the
    ``since``-th on; "" where it was retried or no replica answered."""
    by_address = {f"{stack.addresses[n]}:8000": n for n in REPLICAS}
    return [by_address.get(str(e["upstream_addr"]), "") for e in stack.gateway_log()[since:]]


def test_requests_reach_both_replicas(stack: Stack, client: httpx.Client) -> None:
    before = len(stack.gateway_log())
    for _ in range(20):
        assert client.get("/v1/models").status_code == 200
    served = served_by(stack, before)
    assert len(served) == 20
    assert min(served.count(n) for n in REPLICAS) >= 5, served


def stream_loop(ws_url: str, pcm: bytes, tally: Tally, until: float, source: str) -> None:
    """Streams one after another (``benchmarks.soak_gateway.one_stream``); a stream that did not
    end well counts as ``cut_`` only if it was open when the replica was killed."""
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            outcome = one_stream(ws_url, pcm, source)
        except ConnectionClosed as e:  # closed while sending: its replica went away
            outcome = f"closed_{e.rcvd.code if e.rcvd else 'abnormal'}"
        except (OSError, TimeoutError) as e:
            outcome = f"connect_{type(e).__name__}"
        if outcome != "ok" and tally.in_flight_at_kill(started, time.monotonic()):
            outcome = f"cut_{outcome}"
        tally.add("stream", outcome, time.monotonic() - started)


def load_with_a_kill(stack: Stack, victim: str) -> tuple[Tally, float]:
    """``CLIENTS`` threads of uploads + model lists and as many of streams for ``LOAD_S``; at
    ``KILL_AT_S`` the victim's server process (PID 1 of its container) gets SIGKILL. Returns
    the outcomes and the seconds from the kill until the victim, restarted, was ready again."""
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=1), 16_000)
    pcm = (synth_speechlike(5.0, 16_000, seed=2) * 32767).astype("<i2").tobytes()
    tally = Tally()
    until = time.monotonic() + LOAD_S
    ws_url = f"ws://127.0.0.1:{stack.port}/ws/stream"
    threads = [
        threading.Thread(target=predict_loop, args=(stack.url, audio, tally, until))
        for _ in range(CLIENTS)
    ]
    # From 127.0.0.1 (podman forwards the published port for that source address; the
    # replicas see every client as the network's gateway address either way).
    threads += [
        threading.Thread(target=stream_loop, args=(ws_url, pcm, tally, until, "127.0.0.1"))
        for _ in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(KILL_AT_S)
    pid = int(inspect(victim, "{{.State.Pid}}"))
    tally.killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    back_s = wait_until(lambda: replica_ready(victim), REJOIN_TIMEOUT_S, f"{victim} restarted")
    for thread in threads:
        thread.join(timeout=LOAD_S + 60)
    return tally, back_s


def test_a_killed_replica_loses_only_its_requests_in_flight_and_rejoins(
    stack: Stack, client: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    """Last in this module: it kills a replica."""
    victim = REPLICAS[0]
    tally, back_s = load_with_a_kill(stack, victim)
    outcomes = {kind: dict(counts) for kind, counts in tally.outcomes.items()}
    # compose's restart policy: the same container again, at the same address.
    assert int(inspect(victim, "{{.RestartCount}}")) == 1
    assert network_address(victim) == stack.addresses[victim]
    with capsys.disabled():
        print(
            f"\ncompose stack: both replicas ready {stack.up_to_ready_s:.1f} s after `up`; "
            f"a replica killed at {KILL_AT_S:.0f} s of a {LOAD_S:.0f} s load, ready again "
            f"{back_s:.1f} s later: {outcomes}"
        )
    for kind in ("predict", "models", "stream"):
        counts = outcomes[kind]
        assert counts.get("ok", 0) > (5 if kind == "stream" else 20), counts
        # Only requests open on the killed replica at the kill may fail: one per client thread.
        assert {o for o in counts if not o.startswith("cut_")} == {"ok"}, counts
        assert sum(n for o, n in counts.items() if o.startswith("cut_")) <= CLIENTS, counts
    # Back in the pool: the gateway sends it requests again (max_fails=1 fail_timeout=5s).
    logged = len(stack.gateway_log())

    def rejoined() -> bool:
        assert client.get("/v1/models").status_code == 200
        return victim in served_by(stack, logged)

    wait_until(rejoined, REJOIN_TIMEOUT_S, f"{victim} behind the gateway again")
