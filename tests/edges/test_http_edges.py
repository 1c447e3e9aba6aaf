"""HTTP edges of a real ``python -m app``: read deadlines for headers and bodies, header size,
keep-alive, and JSON errors from the protocol layer. Raw sockets, since the point is what a
client that does not follow HTTP gets."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import synth_speechlike, wav_bytes
from tests.live import LiveServer, closed_within, live_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HEADER_S = 1.0  # SER_HTTP_HEADER_TIMEOUT_S in these tests
KEEP_ALIVE_S = 1
UPLOAD_S = 3.0
GRACE_S = 1.0
MIN_RATE = 8192
MARGIN_S = 1.5  # scheduling slack on a busy 2-core machine


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("edges") / "server.log"
    with live_server(
        models_dir,
        log,
        http_header_timeout_s=HEADER_S,
        http_max_header_bytes=4096,
        http_keep_alive_s=KEEP_ALIVE_S,
        upload_timeout_s=UPLOAD_S,
        upload_rate_grace_s=GRACE_S,
        upload_min_rate_bytes_s=MIN_RATE,
    ) as running:
        yield running


@contextlib.contextmanager
def raw(server: LiveServer) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        yield sock


def response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the first response in ``data``."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_json_error(data: bytes, status: int, code: str) -> dict[str, str]:
    got_status, headers, body = response(data)
    assert got_status == status, data
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    return headers


def test_an_idle_connection_is_closed_quietly(server: LiveServer) -> None:
    with raw(server) as sock:
        started = time.monotonic()
        closed, data = closed_within(sock, HEADER_S + MARGIN_S)
    assert closed and data == b""
    assert HEADER_S - 0.2 < time.monotonic() - started < HEADER_S + MARGIN_S


@pytest.mark.parametrize(
    "sent",
    [b"GET /hea", b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"POST /predict HTTP/1.1\r\nHo"],
    ids=["half a request line", "headers without their end", "half a header"],
)
def test_partial_headers_get_a_json_408(server: LiveServer, sent: bytes) -> None:
    with raw(server) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        closed, data = closed_within(sock, HEADER_S + MARGIN_S)
    assert closed and time.monotonic() - started < HEADER_S + MARGIN_S
    headers = assert_json_error(data, 408, "header_timeout")
    assert headers["connection"] == "close"


def test_headers_trickled_byte_by_byte_still_meet_one_deadline(server: LiveServer) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with raw(server) as sock:
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        closed, data = closed_within(sock, HEADER_S + MARGIN_S)
    assert closed and time.monotonic() - started < HEADER_S + MARGIN_S + 0.5
    assert_json_error(data, 408, "header_timeout")


def test_oversized_headers_get_a_json_431(server: LiveServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n")
        closed, data = closed_within(sock, 5)
    assert closed
    assert_json_error(data, 431, "headers_too_large")


def test_bytes_that_are_not_http_get_a_json_400(server: LiveServer) -> None:
    before = server.metric("ser_http_edge_errors_total", code="bad_request")
    with raw(server) as sock:
        sock.sendall(b"HELLO THERE\r\n\r\n")
        closed, data = closed_within(sock, 5)
    assert closed
    assert_json_error(data, 400, "bad_request")
    assert server.metric("ser_http_edge_errors_total", code="bad_request") == before + 1


def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        closed, data = closed_within(sock, KEEP_ALIVE_S + MARGIN_S)
    assert closed and response(data)[0] == 200
    assert time.monotonic() - started < KEEP_ALIVE_S + MARGIN_S


def test_a_trickled_upload_is_cut_off_after_the_grace_period(server: LiveServer) -> None:
    """1 KB/s against a floor of 8 KiB/s: a 408 soon after the grace period, not after the
    total deadline, and the connection closes."""
    with raw(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        started = time.monotonic()
        data = b""
        with contextlib.suppress(OSError):
            while time.monotonic() - started < UPLOAD_S + MARGIN_S:
                sock.sendall(b"\0" * 100)
                time.sleep(0.1)
                sock.settimeout(0.001)
                with contextlib.suppress(TimeoutError):
                    data += sock.recv(65536)
                if data:
                    break
        closed, rest = closed_within(sock, MARGIN_S)
    elapsed_s = time.monotonic() - started
    assert closed and elapsed_s < GRACE_S + MARGIN_S + 0.5
    headers = assert_json_error(data + rest, 408, "upload_timeout")
    assert headers["connection"] == "close"


def test_a_steady_upload_still_has_a_total_deadline(server: LiveServer) -> None:
    """32 KiB/s (above the rate floor) for a body that would take 10 s: 408 at UPLOAD_S."""
    size = 320 * 1024
    with raw(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        started = time.monotonic()
        data = b""
        with contextlib.suppress(OSError):
            while not data and time.monotonic() - started < UPLOAD_S + 2 * MARGIN_S:
                sock.sendall(b"\0" * 3277)
                time.sleep(0.1)
                sock.settimeout(0.001)
                with contextlib.suppress(TimeoutError):
                    data += sock.recv(65536)
        _, rest = closed_within(sock, MARGIN_S)
    assert UPLOAD_S - 0.2 < time.monotonic() - started < UPLOAD_S + 2 * MARGIN_S
    assert_json_error(data + rest, 408, "upload_timeout")


def test_a_hundred_idle_sockets_are_all_closed(server: LiveServer) -> None:
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
    try:
        deadline = time.monotonic() + HEADER_S + 2 * MARGIN_S
        for sock in sockets:
            closed, _ = closed_within(sock, max(deadline - time.monotonic(), 0.1))
            assert closed
    finally:
        for sock in sockets:
            sock.close()


def test_well_behaved_requests_are_unaffected(server: LiveServer) -> None:
    audio = wav_bytes(synth_speechlike(2.0, 16_000, seed=1), 16_000)
    with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
        for _ in range(2):  # twice on one keep-alive connection
            reply = client.post("/predict", content=audio, headers={"content-type": "audio/wav"})
            assert reply.status_code == 200, reply.text
        multipart = client.post("/predict", files={"file": ("a.wav", audio, "audio/wav")})
        assert multipart.status_code == 200
        assert client.get("/healthz").status_code == 200


def test_a_request_line_over_the_cap_is_a_json_431(server: LiveServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        closed, data = closed_within(sock, 5)
    assert closed
    assert_json_error(data, 431, "headers_too_large")


def statuses(data: bytes) -> list[int]:
    """The status of every response in ``data`` (a body is followed by the next status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def test_a_pipelined_request_after_a_body_counts_only_its_own_headers(
    server: LiveServer,
) -> None:
    """A POST whose body is past the header cap (4 KiB here), then a GET in the same write
    whose headers end in a later one: both are answered, and nothing is logged as a bug."""
    body = wav_bytes(synth_speechlike(2.2, 16_000, seed=2), 16_000)  # 70 KB
    post = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    errors_before = sum(e.get("level") == "error" for e in server.log_entries())
    with raw(server) as sock:
        sock.sendall(post + b"GET /healthz HTTP/1.1\r\nHo")
        time.sleep(0.3)
        sock.sendall(b"st: x\r\nConnection: close\r\n\r\n")
        closed, data = closed_within(sock, 10)
    assert closed and statuses(data) == [200, 200], data[-300:]
    assert sum(e.get("level") == "error" for e in server.log_entries()) == errors_before


def test_an_oversized_pipelined_request_lets_the_answer_in_flight_finish(
    server: LiveServer,
) -> None:
    with raw(server) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n"
        )
        closed, data = closed_within(sock, 5)
    assert closed and statuses(data)[0] == 200


def test_unknown_methods_fold_into_one_metrics_label(server: LiveServer) -> None:
    methods = ["PROPFIND", "MKCOL", "LOCK", "SOURCE", "PURGE", "REPORT"]
    for method in methods:
        with raw(server) as sock:
            sock.sendall(
                f"{method} /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            closed_within(sock, 5)
    text = server.get("/metrics").text
    assert not any(f'method="{method}"' in text for method in methods)
    assert server.metric("ser_http_requests_total", method="other") >= len(methods)


LINGER_S = 2.0  # app.http_edge.LINGER_S


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n", 200),
        (b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", 404),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            b"Content-Length: 1000000000000\r\n\r\n",
            413,
        ),
        (
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 1000000\r\n\r\n",
            415,
        ),
    ],
    ids=["healthz", "404", "413 from the length", "415 from the type"],
)
def test_a_body_trickled_after_an_early_answer_cannot_hold_the_connection(
    server: LiveServer, head: bytes, status: int
) -> None:
    """The app answers from the headers alone; the client then sends a byte of the body every
    0.3 s, each of which used to restart uvicorn's keep-alive timer. The answer arrives, then
    the connection closes within the lingering deadline."""
    before = server.metric("ser_http_edge_errors_total", code="unread_body")
    with raw(server) as sock:
        sock.sendall(head + b"x")
        started = time.monotonic()
        received = b""
        closed = False
        while not closed and time.monotonic() - started < LINGER_S + 3 * MARGIN_S:
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
            closed, chunk = closed_within(sock, 0.3)
            received += chunk
    assert closed, "the connection outlived the lingering deadline"
    assert time.monotonic() - started < LINGER_S + 2 * MARGIN_S
    assert response(received)[0] == status
    assert server.metric("ser_http_edge_errors_total", code="unread_body") == before + 1


def test_a_flood_after_an_early_answer_is_cut_at_the_byte_cap(server: LiveServer) -> None:
    with raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(64):  # 4 MiB, past the 1 MiB cap, well inside the deadline
                sock.sendall(b"\0" * 65536)
        closed, data = closed_within(sock, LINGER_S + MARGIN_S)
    assert closed and response(data)[0] == 200
    assert time.monotonic() - started < LINGER_S + MARGIN_S


def test_blank_lines_between_requests_do_not_hold_the_connection(server: LiveServer) -> None:
    """A blank line starts no request, so no header deadline; it did stop the keep-alive
    timer. Trickled blank lines now count as the next request's headers."""
    with raw(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        received = b""
        closed = False
        while not closed and time.monotonic() - started < HEADER_S + KEEP_ALIVE_S + 4 * MARGIN_S:
            with contextlib.suppress(OSError):
                sock.sendall(b"\r\n")
            closed, chunk = closed_within(sock, 0.3)
            received += chunk
    assert closed and response(received)[0] == 200
    assert time.monotonic() - started < HEADER_S + 2 * MARGIN_S


def test_a_hundred_trickling_connections_leave_healthz_answering(server: LiveServer) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n"
    sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(100)]
    try:
        for sock in sockets:
            sock.sendall(head)
        started = time.monotonic()
        open_ = list(sockets)
        while open_ and time.monotonic() - started < LINGER_S + 3 * MARGIN_S:
            for sock in list(open_):
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")
                if closed_within(sock, 0.01)[0]:
                    open_.remove(sock)
            assert server.get("/healthz").status_code == 200
            time.sleep(0.2)
        assert not open_, f"{len(open_)} of 100 trickling connections still open"
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/metrics", "/v1/models", "/", "/docs", "/static/app.js"]
)
def test_head_is_answered_wherever_get_is(server: LiveServer, path: str) -> None:
    got = httpx.get(server.url + path, timeout=10, trust_env=False)
    with raw(server) as sock:
        sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        closed, data = closed_within(sock, 5)
    status, headers, body = response(data)
    assert closed and status == got.status_code == 200
    assert body == b""  # the headers only
    assert headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its counters moved between the two requests
        assert int(headers["content-length"]) == len(got.content)
    deadline = time.monotonic() + 5  # the log line is written after the response
    while time.monotonic() < deadline:
        logged = [e.get("path") for e in server.log_entries() if e.get("method") == "HEAD"]
        if logged and logged[-1] == path:
            break
        time.sleep(0.05)
    assert logged[-1] == path


def test_head_on_a_post_only_route_is_still_405(server: LiveServer) -> None:
    reply = httpx.head(server.url + "/predict", timeout=10, trust_env=False)
    assert reply.status_code == 405 and "POST" in reply.headers["allow"]


def test_trailers_over_the_header_cap_are_a_prompt_431(server: LiveServer) -> None:
    """httptools reports a chunked body's trailers as headers: over the cap they used to wait
    for the body deadline and get a 408 that blamed the upload's speed."""
    with raw(server) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: audio/wav\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n4\r\nRIFF\r\n0\r\n"
            + b"".join(b"X-T%d: " % i + b"a" * 1000 + b"\r\n" for i in range(8))
        )
        started = time.monotonic()
        closed, data = closed_within(sock, GRACE_S + MARGIN_S)
    assert closed and time.monotonic() - started < GRACE_S
    assert_json_error(data, 431, "headers_too_large")
