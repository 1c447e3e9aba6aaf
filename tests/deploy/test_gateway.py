"""The repository's gateway config, run for real: Debian's nginx in front of two service processes.

The config is ``deploy/nginx/templates/default.conf.template`` (the file docker-compose.yml
mounts), rendered with loopback ports; only the nginx main file around it (pid, logs, temp paths)
is written here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from app.labels import LABELS
from tests.conftest import synth_speechlike, wav_bytes

pytestmark = [pytest.mark.gateway, pytest.mark.slow, pytest.mark.timeout(240)]

START_TIMEOUT_S = 120.0
MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
{user}
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/conf.d/*.conf;
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is missing: .ci/run installs Debian's nginx")
        pytest.skip("Debian's nginx is not installed (apt-get install nginx)")
    return found


def get(url: str) -> httpx.Response:
    """GET on loopback, never through a proxy from the environment."""
    return httpx.get(url, timeout=10, trust_env=False)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Replica:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Gateway:
    port: int
    internal_port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def access_log(self) -> list[dict[str, object]]:
        lines = (self.prefix / "stdout.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.contextmanager
def run_gateway(
    render: Callable[[Mapping[str, str]], str],
    prefix: Path,
    upstream_ports: list[int],
    read_timeout: str = "10s",
) -> Iterator[Gateway]:
    """Debian's nginx with the repository's gateway config, in the foreground, as this user."""
    nginx = nginx_binary()
    gateway = Gateway(free_port(), free_port(), prefix)
    servers = " ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstream_ports)
    values = {
        "GATEWAY_LISTEN": f"127.0.0.1:{gateway.port}",
        "GATEWAY_INTERNAL_LISTEN": f"127.0.0.1:{gateway.internal_port}",
        "GATEWAY_UPSTREAM_SERVERS": servers,
        "GATEWAY_RESOLVER": "127.0.0.1",  # never asked: the upstreams are addresses
        "GATEWAY_READ_TIMEOUT": read_timeout,
    }
    (prefix / "conf.d").mkdir(parents=True)
    (prefix / "conf.d" / "default.conf").write_text(render(values))
    # As root, nginx would hand its workers to www-data, which cannot use this folder.
    user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
    (prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=prefix, user=user))
    command = [
        nginx,
        "-p",
        str(prefix),
        "-c",
        str(prefix / "nginx.conf"),
        "-e",
        str(prefix / "error.log"),
    ]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    with open(prefix / "stdout.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: get(f"{gateway.internal_url}/gateway/healthz").status_code == 200,
            20,
            "nginx",
        )
        yield gateway
    finally:
        stop(process, signal.SIGQUIT)  # graceful: finish open requests, then exit


def start_replica(models_dir: Path, log: Path) -> Replica:
    port = free_port()
    env = {
        **os.environ,
        "SER_MODELS_DIR": str(models_dir),
        "SER_PROVIDERS": "cpu",
        "SER_INTRA_OP_THREADS": "1",
        "SER_LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
        "FORWARDED_ALLOW_IPS": "127.0.0.1",  # the gateway's address (here: loopback)
    }
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(port, process, log)


def is_ready(replica: Replica) -> bool:
    if replica.process.poll() is not None:
        raise RuntimeError(f"replica exited with {replica.process.returncode}: see {replica.log}")
    return get(f"{replica.url}/readyz").status_code == 200


@pytest.fixture(scope="module")
def replicas(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    logs = tmp_path_factory.mktemp("replicas")
    started = [start_replica(models_dir, logs / f"replica{i}.log") for i in range(2)]
    try:
        for replica in started:
            wait_until(
                functools.partial(is_ready, replica),
                START_TIMEOUT_S,
                f"replica on port {replica.port} (log: {logs})",
            )
            assert replica.process.poll() is None
        yield started
    finally:
        for replica in started:
            stop(replica.process)


@pytest.fixture(scope="module")
def gateway(
    replicas: list[Replica],
    render_gateway: Callable[[Mapping[str, str]], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    prefix = tmp_path_factory.mktemp("gateway")
    with run_gateway(render_gateway, prefix, [r.port for r in replicas]) as running:
        yield running


@pytest.fixture
def client(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30, trust_env=False) as c:
        yield c


def request_count(replica: Replica, route: str, method: str = "GET") -> float:
    """``ser_http_requests_total`` of one route on one replica, read from it directly."""
    text = get(f"{replica.url}/metrics").text
    pattern = re.compile(r"^ser_http_requests_total\{(.*)\} (\S+)$", re.MULTILINE)
    total = 0.0
    for labels, value in pattern.findall(text):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if pairs.get("route") == route and pairs.get("method") == method:
            total += float(value)
    return total


def logged_client(replicas: list[Replica], path: str, client_prefix: str) -> bool:
    """Whether a replica's JSON request log has ``path`` requested by ``client_prefix``."""
    for replica in replicas:
        for line in replica.log.read_text().splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("path") == path and str(entry.get("client")).startswith(client_prefix):
                return True
    return False


def assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


# ---------------------------------------------------------------------------- through the gateway


def test_predict_through_gateway(client: httpx.Client) -> None:
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=3), 16_000)
    response = client.post("/predict", files={"file": ("clip.wav", audio, "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in LABELS
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    raw = client.post("/v1/predict", content=audio, headers={"content-type": "audio/wav"})
    assert raw.status_code == 200 and raw.json()["probabilities"] == body["probabilities"]


def test_websocket_stream_through_gateway(gateway: Gateway) -> None:
    audio = synth_speechlike(5.0, 16_000, seed=4)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    start = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
    messages: list[dict[str, object]] = []
    with connect(f"ws://127.0.0.1:{gateway.port}/ws/stream", open_timeout=10) as ws:
        ws.send(json.dumps(start))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        for offset in range(0, len(pcm), 3200):  # 100 ms chunks
            ws.send(pcm[offset : offset + 3200])
        ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(Exception):
            while True:
                messages.append(json.loads(ws.recv(timeout=20)))
        close_code = ws.close_code
    kinds = [m["type"] for m in messages]
    # 5 s with a 3.5 s window and a 0.5 s hop: windows at 0.0 .. 1.5 s.
    assert kinds == ["prediction"] * 4 + ["summary"]
    assert messages[-1]["windows"] == 4
    assert close_code == 1000


def test_requests_spread_over_both_replicas(client: httpx.Client, replicas: list[Replica]) -> None:
    before = [request_count(r, "/v1/models") for r in replicas]
    for _ in range(20):
        assert client.get("/v1/models").status_code == 200
    served = [request_count(r, "/v1/models") - b for r, b in zip(replicas, before, strict=True)]
    assert sum(served) == 20
    assert min(served) >= 5, f"unbalanced: {served}"


def test_forwarded_headers_reach_the_service(gateway: Gateway, replicas: list[Replica]) -> None:
    # A client on 127.0.0.2 (the gateway and the replicas talk over 127.0.0.1) that forges its
    # own X-Forwarded-For.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gateway.url, transport=transport, trust_env=False) as client:
        forged = {"X-Forwarded-For": "203.0.113.7"}
        assert client.get("/healthz", headers=forged).status_code == 200
    entry = gateway.access_log()[-1]
    assert entry["uri"] == "/healthz" and entry["request_id"]
    assert entry["remote_addr"] == "127.0.0.2"
    assert str(entry["upstream_addr"]).startswith("127.0.0.1:")
    # The service trusts X-Forwarded-For from the gateway (uvicorn proxy headers): it logs the
    # client that connected to the gateway, neither the gateway's address nor what the client
    # claimed (its per-client stream limits count against the same address).
    # The log line is written just after the response: poll for it.
    wait_until(lambda: logged_client(replicas, "/healthz", "127.0.0.2:"), 5, "request log")
    assert not logged_client(replicas, "/healthz", "203.0.113.7")


def test_metrics_only_on_the_internal_port(client: httpx.Client, gateway: Gateway) -> None:
    assert_json_error(client.get("/metrics"), 404, "not_found")
    internal = get(f"{gateway.internal_url}/metrics")
    assert internal.status_code == 200 and "ser_http_requests_total" in internal.text
    status = get(f"{gateway.internal_url}/gateway/status")
    assert "Active connections" in status.text


def test_oversized_upload_is_a_json_413(gateway: Gateway) -> None:
    # Announce 30 MB and send none of it: nginx answers from the headers alone.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: gateway\r\nContent-Type: audio/wav\r\n"
            b"Content-Length: 30000000\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/json" in head
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_killing_a_replica_loses_no_idempotent_request(
    client: httpx.Client, replicas: list[Replica], gateway: Gateway
) -> None:
    """Last in this module: it leaves one replica running.

    nginx resends a request to the other replica only while it has sent the client nothing; a
    response the killed replica had begun cannot be resent (benchmarks/soak_gateway.py says the
    same). So the one request in flight at the very instant of the kill may end in a transport
    error; any other failure, or any non-200, fails the test."""
    statuses: list[int] = []
    cut: list[tuple[float, float, Exception]] = []  # (sent, failed, error)
    victim = replicas[1]
    killed_at: list[float] = []

    def kill() -> None:  # SIGKILL: no graceful goodbye
        killed_at.append(time.monotonic())
        victim.process.kill()

    killer = threading.Timer(0.5, kill)
    killer.start()
    try:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            for path in ("/v1/models", "/healthz"):
                sent = time.monotonic()
                try:
                    statuses.append(client.get(path).status_code)
                except httpx.TransportError as e:
                    cut.append((sent, time.monotonic(), e))
    finally:
        killer.cancel()
        victim.process.wait(timeout=10)
    assert victim.process.returncode == -signal.SIGKILL
    assert len(statuses) >= 20 and set(statuses) == {200}, statuses
    assert len(cut) <= 1, cut
    assert all(sent <= killed_at[0] <= failed for sent, failed, _ in cut), (killed_at, cut)
    # A POST after the kill is retried on the live replica too (connection refused: not sent).
    audio = wav_bytes(synth_speechlike(1.0, 16_000, seed=5), 16_000)
    for _ in range(4):
        response = client.post("/predict", files={"file": ("a.wav", audio, "audio/wav")})
        assert response.status_code == 200
    # nginx did meet the dead replica, and moved on to the live one.
    retried = [e for e in gateway.access_log() if "," in str(e["upstream_addr"])]
    assert retried, "no request was retried: the kill happened outside the loop?"


# ---------------------------------------------------------------------------- gateway errors


class Blackhole:
    """A TCP listener that takes connections and never answers (a hung replica)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self.socket.getsockname()[1])


def test_unreachable_replicas_give_a_json_502(
    render_gateway: Callable[[Mapping[str, str]], str], tmp_path: Path
) -> None:
    closed_port = free_port()  # nothing listens there
    with (
        run_gateway(render_gateway, tmp_path, [closed_port]) as gateway,
        httpx.Client(base_url=gateway.url, timeout=10, trust_env=False) as c,
    ):
        assert_json_error(c.get("/v1/models"), 502, "bad_gateway")
        audio = wav_bytes(synth_speechlike(1.0, 16_000), 16_000)
        response = c.post("/predict", content=audio, headers={"content-type": "audio/wav"})
        assert_json_error(response, 502, "bad_gateway")


def test_hung_replica_gives_a_json_504(
    render_gateway: Callable[[Mapping[str, str]], str], tmp_path: Path
) -> None:
    hung = Blackhole()
    try:
        with run_gateway(render_gateway, tmp_path, [hung.port], read_timeout="1s") as gateway:
            started = time.monotonic()
            response = get(f"{gateway.url}/healthz")
            assert_json_error(response, 504, "gateway_timeout")
            assert time.monotonic() - started < 5
    finally:
        hung.socket.close()
