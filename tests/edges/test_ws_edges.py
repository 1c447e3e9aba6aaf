"""WebSocket edges of a real ``python -m app``: upgrades the websockets library refuses are
answered and closed, every connection is closed by the header deadline until the app has
accepted it, and a ping flood is closed (1008) without the server's memory growing."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.live import LiveServer, closed_within, live_server, status_kb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEADER_S = 1.0  # SER_HTTP_HEADER_TIMEOUT_S in these tests
MARGIN_S = 1.5  # scheduling slack on a busy 2-core machine
PING, CLOSE = 0x9, 0x8


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("ws-edges") / "server.log"
    with live_server(models_dir, log, http_header_timeout_s=HEADER_S) as running:
        yield running


def upgrade(
    path: str = "/ws/stream",
    extra: bytes = b"",
    key: bytes | None = None,
    version: bytes = b"13",
    method: str = "GET",
) -> bytes:
    key = base64.b64encode(os.urandom(16)) if key is None else key
    return (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n".encode()
        + b"Connection: Upgrade\r\nSec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: "
        + version
        + b"\r\n"
        + extra
        + b"\r\n"
    )


OVERSIZED = {
    "header line over 8 KiB": (upgrade(extra=b"X-Big: " + b"a" * 9000 + b"\r\n"), 431),
    "129 headers": (upgrade(extra=b"".join(b"X-%d: 1\r\n" % i for i in range(129))), 431),
    "request line over 8 KiB": (upgrade(path="/ws/stream?" + "a" * 9000), 414),
}


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_a_refused_upgrade_gets_a_json_answer_and_a_close(server: LiveServer, name: str) -> None:
    request, status = OVERSIZED[name]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(request)
        closed, data = closed_within(sock, HEADER_S + MARGIN_S)
    assert closed and time.monotonic() - started < HEADER_S + MARGIN_S
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), data[:200]
    assert json.loads(body)["error"]["message"]


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_two_hundred_oversized_upgrades_are_all_closed_within_the_deadline(
    server: LiveServer,
) -> None:
    before = open_fds(server.process.pid)
    request = OVERSIZED["header line over 8 KiB"][0]
    sockets = []
    started = time.monotonic()
    try:
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request)
            sockets.append(sock)
        for sock in sockets:
            left_s = max(started + HEADER_S + 2 * MARGIN_S - time.monotonic(), 0.1)
            assert closed_within(sock, left_s)[0]
    finally:
        for sock in sockets:
            sock.close()
    assert open_fds(server.process.pid) <= before + 5


def test_a_half_sent_upgrade_is_closed_at_the_header_deadline(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(upgrade()[:-10])
        started = time.monotonic()
        closed, _ = closed_within(sock, HEADER_S + MARGIN_S)
    assert closed and time.monotonic() - started < HEADER_S + MARGIN_S


def open_websocket(server: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(upgrade())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def masked(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + data


def flood(sock: socket.socket, seconds: float) -> int:
    """Send 125-byte pings as fast as the socket takes them, never reading; bytes sent."""
    chunk = masked(PING, b"p" * 125) * 512
    sent = 0
    deadline = time.monotonic() + seconds
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            sent += sock.send(chunk)
        except TimeoutError:
            continue
        except OSError:
            break
    return sent


def test_a_ping_flood_is_closed_with_1008_and_memory_stays_flat(server: LiveServer) -> None:
    pid = server.process.pid
    sockets = [open_websocket(server) for _ in range(4)]
    baseline_kb = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here
    threads = [threading.Thread(target=flood, args=(sock, 5.0)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    growth_mb = (status_kb(pid, "VmHWM") - baseline_kb) / 1024
    for sock in sockets:
        closed, data = closed_within(sock, 5.0)
        assert closed
        close_at = data.find(bytes([0x80 | CLOSE]))
        assert close_at >= 0, "no close frame"
        assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1008
        sock.close()
    assert growth_mb <= 20, f"the server grew {growth_mb:.0f} MB"
    assert server.metric("ser_stream_errors_total", code="ping_flood") >= 4


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame of up to 125 bytes (``fin=False``: a fragment to continue)."""
    mask = os.urandom(4)
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | len(payload)) + mask + data


CONTINUATION, BINARY, PONG = 0x0, 0x2, 0xA
EMPTY_FLOODS = {
    # A binary message that never ends, then empty continuation frames: no payload byte to count.
    "empty continuations": (frame(BINARY, b"ab", fin=False), frame(CONTINUATION, fin=False)),
    "unsolicited pongs": (b"", frame(PONG)),
}


def _healthz_ms(server: LiveServer) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return (time.monotonic() - started) * 1000


@pytest.mark.parametrize("name", list(EMPTY_FLOODS))
def test_an_empty_frame_flood_is_closed_and_never_holds_the_server(
    server: LiveServer, name: str
) -> None:
    """Frames that carry nothing cost the parser as much as any: each spends the connection's
    frame budget, and the flooder is closed (1008) while /healthz keeps answering at once."""
    first, repeated = EMPTY_FLOODS[name]
    sock = open_websocket(server)
    sock.sendall(first)
    burst = repeated * 20_000
    stop = threading.Event()
    sent = [0]

    def flood_until_closed() -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                sent[0] += sock.send(burst)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=flood_until_closed)
    started = time.monotonic()
    thread.start()
    latencies = [_healthz_ms(server) for _ in range(20)]
    closed, data = closed_within(sock, 5.0)
    stop.set()
    thread.join()
    sock.close()
    assert closed, "the flooder's connection is still open"
    close_at = data.find(bytes([0x80 | CLOSE]))
    assert close_at >= 0, "no close frame"
    assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1008
    assert time.monotonic() - started < 1.0 + MARGIN_S + 20 * 0.1
    assert max(latencies) < 100 + 1000 * MARGIN_S / 10, latencies
    assert server.metric("ser_stream_errors_total", code="frame_flood") >= 1


def test_a_message_of_too_many_fragments_is_closed(server: LiveServer) -> None:
    sock = open_websocket(server)
    fragments = [frame(BINARY, b"a", fin=False)]
    fragments += [frame(CONTINUATION, b"b", fin=False) for _ in range(100)]
    sock.sendall(b"".join(fragments))
    closed, data = closed_within(sock, 5.0)
    sock.close()
    assert closed
    close_at = data.find(bytes([0x80 | CLOSE]))
    assert struct.unpack("!H", data[close_at + 2 : close_at + 4])[0] == 1008
    assert b"fragments" in data


def test_a_client_pinging_at_a_sane_rate_keeps_its_connection(server: LiveServer) -> None:
    with connect(server.ws_url, open_timeout=10) as websocket:
        for _ in range(10):  # a burst under PING_BURST (16)
            websocket.ping().wait(5)
        start = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
        websocket.send(json.dumps(start))
        assert json.loads(websocket.recv(10))["type"] == "ready"


REFUSED_HANDSHAKES = {
    "an invalid key": (upgrade(key=b"abc"), 400, "bad_handshake", "Sec-WebSocket-Key", {}),
    "version 8": (
        upgrade(version=b"8"),
        400,
        "bad_handshake",
        "version 13",
        {"sec-websocket-version": "13"},
    ),
    "POST": (upgrade(method="POST"), 405, "bad_handshake", "GET", {"allow": "GET"}),
    "an upgrade to /predict": (upgrade("/predict"), 404, "no_websocket_route", "/ws/stream", {}),
    "an upgrade to nowhere": (upgrade("/nowhere"), 404, "no_websocket_route", "/ws/stream", {}),
    "a plain GET of the stream": (
        b"GET /ws/stream HTTP/1.1\r\nHost: x\r\n\r\n",
        426,
        "upgrade_required",
        "WebSocket client",
        {},
    ),
}


@pytest.mark.parametrize("name", list(REFUSED_HANDSHAKES))
def test_refused_handshakes_say_why_in_json(server: LiveServer, name: str) -> None:
    request, status, code, advice, headers = REFUSED_HANDSHAKES[name]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        closed, data = closed_within(sock, 5)
    assert closed
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), data[:300]
    got = {name.lower(): value for name, value in (ln.split(": ", 1) for ln in lines[1:])}
    assert got["content-type"] == "application/json"
    assert headers.items() <= got.items()
    error = json.loads(body)["error"]
    assert error["code"] == code and advice in error["message"]
    assert "Failed to open" not in error["message"]  # not the library's words
