"""A real ``python -m app`` process on a free loopback port, for tests of what lies below the
ASGI app (uvicorn's protocols, timeouts, proxy headers), which TestClient bypasses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

START_TIMEOUT_S = 60.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/stream"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, trust_env=False)

    def log_entries(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
            if match is None:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(2))
        return total


def _ready(server: LiveServer) -> bool:
    if server.process.poll() is not None:
        raise RuntimeError(f"the server exited with {server.process.returncode}: {server.log}")
    with contextlib.suppress(OSError, httpx.HTTPError):
        return server.get("/readyz").status_code == 200
    return False


@contextlib.contextmanager
def live_server(models_dir: Path, log: Path, **settings: object) -> Iterator[LiveServer]:
    """Run the service on ``models_dir`` with ``SER_<NAME>`` set from ``settings``; stopped
    (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    env = {
        **os.environ,
        "SER_MODELS_DIR": str(models_dir),
        "SER_PROVIDERS": "cpu",
        "SER_INTRA_OP_THREADS": "1",
        "SER_LOG_JSON": "true",
        "PYTHONUNBUFFERED": "1",
        **{f"SER_{name.upper()}": str(value) for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "app", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(port, process, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(server):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready in {START_TIMEOUT_S:.0f} s: {log}")
            time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rss_growth_mb(pid: int, work: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Run ``work()`` and measure process ``pid``'s peak resident memory meanwhile (Linux):
    ``VmHWM`` is reset to the current ``VmRSS`` first (``/proc/<pid>/clear_refs``), so the
    peak is this work's, not the start-up's. Returns ``(work's result, {baseline_mb, peak_mb,
    growth_mb})``."""
    baseline_kb = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    result = work()
    peak_kb = status_kb(pid, "VmHWM")
    return result, {
        "baseline_mb": round(baseline_kb / 1024, 1),
        "peak_mb": round(peak_kb / 1024, 1),
        "growth_mb": round((peak_kb - baseline_kb) / 1024, 1),
    }


def closed_within(sock: socket.socket, timeout_s: float) -> tuple[bool, bytes]:
    """Read ``sock`` until the server closes it or ``timeout_s`` passes: (closed, bytes)."""
    sock.settimeout(0.1)
    received = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received
