"""Hostile WebSocket clients against a real ``python -m app``: what TestClient cannot show
(bytes that are not valid frames or UTF-8, half-open TCP, per-client limits by peer address and
by a trusted proxy's ``X-Forwarded-For``)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import synth_speechlike
from tests.live import LiveServer, live_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

START_S = 1.0  # the server's start deadline in these tests
IDLE_S = 1.5
START = {"type": "start", "sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1}
TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("live") / "server.log"
    with live_server(
        models_dir,
        log,
        stream_start_timeout_s=START_S,
        stream_idle_timeout_s=IDLE_S,
        stream_max_sessions=6,
        stream_max_sessions_per_client=2,
    ) as running:
        yield running


# ------------------------------------------------------------------ a WebSocket client by hand


def open_raw(server: LiveServer, source: str = "127.0.0.1") -> socket.socket:
    """A TCP socket from ``source`` that has done the WebSocket opening handshake."""
    sock = socket.create_connection(
        ("127.0.0.1", server.port), timeout=10, source_address=(source, 0)
    )
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The complete unmasked server frames at the start of ``data``, and the rest."""
    frames = []
    while len(data) >= 2:
        opcode, size, offset = data[0] & 0x0F, data[1] & 0x7F, 2
        if size == 126:
            size, offset = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, offset = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < offset + size:
            break
        frames.append((opcode, data[offset : offset + size]))
        data = data[offset + size :]
    return frames, data


def read_frames(sock: socket.socket, timeout_s: float) -> list[tuple[int, bytes]]:
    """The server's frames up to its close frame; fails if none comes within ``timeout_s``."""
    sock.settimeout(0.05)
    frames: list[tuple[int, bytes]] = []
    pending = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        new, pending = parse_frames(pending + chunk)
        frames += new
        if not chunk or any(op == CLOSE for op, _ in new):
            return frames
    raise AssertionError(f"no close frame within {timeout_s:.1f} s: {frames}")


def close_code(frames: list[tuple[int, bytes]]) -> int:
    payload = next(p for op, p in frames if op == CLOSE)
    return int(struct.unpack("!H", payload[:2])[0])


def error_codes(frames: list[tuple[int, bytes]]) -> list[str]:
    messages = [json.loads(p) for op, p in frames if op == TEXT]
    return [m["code"] for m in messages if m["type"] == "error"]


# ------------------------------------------------------------------------------- the behaviour


def stream_ok(server: LiveServer, **connect_args: Any) -> None:
    """A well-behaved client: start, 4 s of audio, stop; predictions then a summary."""
    audio = (synth_speechlike(4.0, 16_000, seed=2) * 32767).astype("<i2").tobytes()
    with connect(server.ws_url, open_timeout=10, **connect_args) as ws:
        ws.send(json.dumps(START))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        ws.send(audio)
        ws.send(json.dumps({"type": "stop"}))
        kinds = [json.loads(ws.recv(timeout=10))["type"] for _ in range(3)]
    assert kinds == ["prediction", "prediction", "summary"]


def test_invalid_utf8_is_1007_and_one_warning_line(server: LiveServer) -> None:
    before = server.metric("ser_stream_errors_total", code="invalid_frame")
    with contextlib.closing(open_raw(server)) as sock:
        sock.sendall(frame(TEXT, b'{"type": "\xff\xfe"}'))
        frames = read_frames(sock, 5)
    assert close_code(frames) == 1007
    time.sleep(0.2)  # the log line is written as the connection closes
    lines = [e for e in server.log_entries() if "UTF-8" in e["message"]]
    assert lines and all(e["level"] == "warning" and "exception" not in e for e in lines)
    assert not [e for e in server.log_entries() if e["level"] == "error"]
    assert server.metric("ser_stream_errors_total", code="invalid_frame") == before + 1
    stream_ok(server)


def test_sockets_that_never_start_are_closed_at_the_start_deadline(server: LiveServer) -> None:
    """16 squatters from 16 addresses: a real client streams meanwhile, and after the start
    deadline none of them is open."""
    squatters = [open_raw(server, f"127.0.0.{10 + i}") for i in range(16)]
    opened = time.monotonic()
    stream_ok(server)
    for sock in squatters:
        with contextlib.closing(sock):
            frames = read_frames(sock, START_S + 3 - (time.monotonic() - opened))
        assert error_codes(frames) == ["start_timeout"] and close_code(frames) == 1008
    assert server.metric("ser_active_streams") == 0


def test_a_half_open_session_is_closed_when_idle(server: LiveServer) -> None:
    """Started, then silence without FIN (a client whose network vanished)."""
    with contextlib.closing(open_raw(server, "127.0.0.40")) as sock:
        sock.sendall(frame(TEXT, json.dumps(START).encode()))
        sock.sendall(frame(BINARY, np.zeros(800, "<i2").tobytes()))
        started = time.monotonic()
        frames = read_frames(sock, IDLE_S + 3)
    assert time.monotonic() - started < IDLE_S + 2
    assert error_codes(frames)[-1] == "idle_timeout" and close_code(frames) == 1008


def per_client_refusal(server: LiveServer, **connect_args: Any) -> None:
    """The third connection of one client is refused; the first two stay usable."""
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(server.ws_url, **connect_args)) for _ in range(2)]
        with connect(server.ws_url, **connect_args) as third:
            message = json.loads(third.recv(timeout=5))
            assert message["code"] == "too_many_client_streams"
            with contextlib.suppress(ConnectionClosed):
                third.recv(timeout=5)
            assert third.close_code == 1008
        held[0].send(json.dumps(START))
        assert json.loads(held[0].recv(timeout=5))["type"] == "ready"


def test_one_peer_address_cannot_take_more_than_its_share(server: LiveServer) -> None:
    per_client_refusal(server, source_address=("127.0.0.50", 0))
    stream_ok(server, source_address=("127.0.0.51", 0))  # another address is unaffected


def test_clients_behind_a_trusted_proxy_are_told_apart_by_x_forwarded_for(
    server: LiveServer,
) -> None:
    """The peer is loopback (uvicorn's default FORWARDED_ALLOW_IPS), as the gateway is."""
    per_client_refusal(server, additional_headers={"X-Forwarded-For": "198.51.100.7"})
    stream_ok(server, additional_headers={"X-Forwarded-For": "198.51.100.8"})
