"""Hostile WebSocket clients, in process: every one gets a client error code and a fitting close
(never 1011), holds no session slot it did not earn, and a well-behaved client still streams."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.admission import UNKNOWN_CLIENT, StreamAdmission
from app.api.stream_messages import MAX_DEPTH, nesting_depth, parse_control
from tests.conftest import synth_speechlike

from .conftest import ClientFactory
from .test_route import START_16K, assert_works, read_until_close
from .test_session import pcm16


def error_and_close(client: TestClient, *frames: str | bytes) -> tuple[list[str], int]:
    """Send ``frames`` on a fresh stream: (the error codes received, the close code)."""
    with client.websocket_connect("/ws/stream") as ws:
        for frame in frames:
            if isinstance(frame, bytes):
                ws.send_bytes(frame)
            else:
                ws.send_text(frame)
        messages, code = read_until_close(ws)
    return [m["code"] for m in messages if m["type"] == "error"], code


def start_with(**fields: Any) -> str:
    return json.dumps({**START_16K, **fields})


def raw_start(field: str, literal: str) -> str:
    """A start message whose ``field`` is the JSON number ``literal``, written as is."""
    return json.dumps(START_16K)[:-1] + f', "{field}": {literal}}}'


# ------------------------------------------------------- control frames: size, depth, numbers

HOSTILE_TEXT: dict[str, tuple[str, str, int]] = {
    "200 KB of nested brackets": ("[" * 200_000, "frame_too_large", 1009),
    "4 KB of nested brackets": ("[" * 4000, "bad_json", 1007),
    "nested objects": ('{"a":' * 50 + "1" + "}" * 50, "bad_json", 1007),
    "a 300 KB text frame": (json.dumps({"pad": "x" * 300_000}), "frame_too_large", 1009),
    "a 400-digit sample_rate": (raw_start("sample_rate", "9" * 400), "bad_json", 1007),
    "a 5000-digit window_s": (raw_start("window_s", "1" * 5000), "frame_too_large", 1009),
    "a 4000-digit hop_s": (raw_start("hop_s", "1" * 3900), "bad_json", 1007),
    "a 20-digit sample_rate": (raw_start("sample_rate", "9" * 20), "invalid_start", 1007),
    "a 30-digit hop_s": (raw_start("hop_s", "1" * 30), "invalid_start", 1007),
    "hop_s 1e400": (raw_start("hop_s", "1e400"), "bad_json", 1007),
    "window_s NaN": (raw_start("window_s", "NaN"), "bad_json", 1007),
    "channels -Infinity": (raw_start("channels", "-Infinity"), "bad_json", 1007),
    "sample_rate a string": (start_with(sample_rate="fast"), "invalid_start", 1007),
    "channels a list": (start_with(channels=[1, 2]), "invalid_start", 1007),
    "a 3 kB model name": (start_with(model="m" * 3000), "invalid_start", 1007),
    "a 60 kB model name": (start_with(model="m" * 60_000), "frame_too_large", 1009),
    "model an object": (start_with(model={"name": "ce"}), "invalid_start", 1007),
    "encoding a number": (start_with(encoding=16), "invalid_start", 1007),
    "type missing": (json.dumps({"sample_rate": 16_000}), "unknown_type", 1003),
    "a bare number": ("1" * 1000, "bad_json", 1007),
    "empty text": ("", "bad_json", 1007),
}


@pytest.mark.parametrize("case", list(HOSTILE_TEXT))
def test_hostile_control_frames_get_client_errors(client: TestClient, case: str) -> None:
    text, error_code, close_code = HOSTILE_TEXT[case]
    codes, close = error_and_close(client, text)
    assert (codes, close) == ([error_code], close_code)
    assert_works(client)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"type": "stop", "note": '[[[[[[[[{{{{{{{{ \\" [[['})
    assert nesting_depth(text, MAX_DEPTH) == 1
    assert parse_control(text, 4096)["type"] == "stop"


def test_a_flood_of_tiny_control_frames_after_start(client: TestClient) -> None:
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        assert ws.receive_json()["type"] == "ready"
        for _ in range(500):
            ws.send_text("{}")  # unknown type: the first one ends the session
        messages, close = read_until_close(ws)
    assert [m["code"] for m in messages] == ["unknown_type"] and close == 1003
    assert_works(client)


def test_a_flood_of_tiny_audio_frames_is_streamed_exactly(client: TestClient) -> None:
    """4 s of PCM16 sent 2 bytes (one sample) per frame for the first 0.25 s, then whole."""
    audio = pcm16(synth_speechlike(4.0, 16_000, seed=11))
    split = 8000  # bytes sent one sample at a time: 4000 frames
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        for offset in range(0, split, 2):
            ws.send_bytes(audio[offset : offset + 2])
        ws.send_bytes(audio[split:])
        ws.send_json({"type": "stop"})
        messages, close = read_until_close(ws)
    assert close == 1000
    assert [m["type"] for m in messages] == ["prediction"] * 2 + ["summary"]
    assert messages[-1]["duration_s"] == pytest.approx(4.0)


# Any text at all, and start messages with any JSON values: never a server fault.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
START_FIELDS = st.fixed_dictionaries(
    {"type": st.just("start")},
    optional={
        key: JSON_VALUES
        for key in ("sample_rate", "encoding", "channels", "model", "hop_s", "window_s")
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frame=st.text(max_size=300) | START_FIELDS.map(lambda d: json.dumps(d, allow_nan=True)))
def test_no_text_frame_is_a_server_fault(client: TestClient, frame: str) -> None:
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_text(frame)
        ws.send_json({"type": "stop"})
        messages, close = read_until_close(ws)
    errors = [m["code"] for m in messages if m["type"] == "error"]
    assert "internal_error" not in errors and close != 1011, (frame, messages)
    assert close == 1000 or len(errors) == 1


def test_client_errors_are_counted_by_code(client: TestClient) -> None:
    def count(code: str) -> float:
        prefix = f'ser_stream_errors_total{{code="{code}"}} '
        lines = [x for x in client.get("/metrics").text.splitlines() if x.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = count("bad_json"), count("frame_too_large")
    error_and_close(client, "[" * 4000)
    error_and_close(client, "{" * 3000)
    error_and_close(client, "[" * 200_000)
    assert (count("bad_json"), count("frame_too_large")) == (before[0] + 2, before[1] + 1)


# ------------------------------------------------------------------------ squatting and limits


def test_sockets_that_never_start_hold_no_slot_and_are_closed(make_client: ClientFactory) -> None:
    """16 sockets that never send start: a real client streams at once (slots are taken by a
    valid start), and the squatters are closed with start_timeout at the deadline."""
    client = make_client(
        stream_max_sessions=16, stream_max_sessions_per_client=32, stream_start_timeout_s=1.5
    )
    results: list[tuple[list[dict[str, Any]], int, float]] = []

    def squat() -> None:
        opened = time.monotonic()
        with client.websocket_connect("/ws/stream") as ws:
            messages, close = read_until_close(ws)
        results.append((messages, close, time.monotonic() - opened))

    squatters = [threading.Thread(target=squat) for _ in range(16)]
    for thread in squatters:
        thread.start()
    time.sleep(0.3)  # every squatter is connected
    assert_works(client)  # well inside the start deadline
    for thread in squatters:
        thread.join(timeout=10)
    assert len(results) == 16
    for messages, close, held_s in results:
        assert [m["code"] for m in messages] == ["start_timeout"] and close == 1008
        assert 1.4 < held_s < 5.0
    admission: StreamAdmission = client.app.state.stream_admission  # type: ignore[attr-defined]
    assert admission.active == 0 and admission.open_connections(UNKNOWN_CLIENT) == 0


def test_one_client_cannot_hold_every_slot(make_client: ClientFactory) -> None:
    client = make_client(stream_max_sessions=16, stream_max_sessions_per_client=4)
    with (
        client.websocket_connect("/ws/stream") as a,
        client.websocket_connect("/ws/stream") as b,
        client.websocket_connect("/ws/stream"),
        client.websocket_connect("/ws/stream"),
    ):
        for ws in (a, b):
            ws.send_json(START_16K)
            assert ws.receive_json()["type"] == "ready"
        # c and d have not started: they count against the client all the same.
        codes, close = error_and_close(client)
        assert (codes, close) == (["too_many_client_streams"], 1008)
        admission: StreamAdmission = client.app.state.stream_admission  # type: ignore[attr-defined]
        assert admission.active == 2 and admission.open_connections(UNKNOWN_CLIENT) == 4
    assert_works(client)  # all four closed: the client may stream again


def test_connection_attempts_are_rate_limited(make_client: ClientFactory) -> None:
    client = make_client(stream_max_connects_per_client=3, stream_connect_window_s=60)
    for _ in range(3):
        assert error_and_close(client, json.dumps({"type": "stop"}))[0] == ["not_started"]
    assert error_and_close(client) == (["too_many_attempts"], 1008)


def test_the_attempt_window_slides() -> None:
    now = [0.0]
    admission = StreamAdmission(
        max_sessions=4, max_per_client=4, max_attempts=2, window_s=10.0, clock=lambda: now[0]
    )
    for at in (0.0, 1.0):
        now[0] = at
        admission.connect("a")
        admission.disconnect("a")
    now[0] = 5.0
    with pytest.raises(Exception, match="more than 2 connections"):
        admission.connect("a")
    admission.connect("b")  # another client is not affected
    now[0] = 11.5  # the attempts at 0 and 1 have left the window; the refused one at 5 has not
    admission.connect("a")
    assert admission.open_connections("a") == 1


def test_a_silent_started_session_is_closed_and_frees_its_slot(make_client: ClientFactory) -> None:
    """Half-open from the server's view: started, then nothing (no audio, no close)."""
    client = make_client(stream_idle_timeout_s=0.5, stream_max_sessions=1)
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        ws.send_bytes(np.zeros(1600, "<i2").tobytes())
        messages, close = read_until_close(ws)
    assert messages[-1]["code"] == "idle_timeout" and close == 1008
    assert_works(client)


def test_a_session_trickling_audio_is_closed_and_frees_its_slot(make_client: ClientFactory) -> None:
    """A byte every 0.1 s resets the idle timer for ever; the least audio rate (half real time
    after the grace period) does not: the session is closed 1008 and its slot is free."""
    client = make_client(
        stream_min_audio_grace_s=0.5, stream_max_sessions=1, stream_idle_timeout_s=5
    )
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                try:
                    ws.send_bytes(b"\0\0")  # one sample: 62.5 us of audio
                except Exception:
                    return
                time.sleep(0.1)

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        messages, close = read_until_close(ws)
        stop.set()
    assert messages[-1]["code"] == "audio_too_slow" and close == 1008
    assert "0.5x real time" in messages[-1]["message"]
    assert time.monotonic() - started < 3.0
    assert_works(client)


def test_a_session_at_real_time_meets_the_audio_rate(make_client: ClientFactory) -> None:
    client = make_client(stream_min_audio_grace_s=0.2)
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        for _ in range(8):  # 0.1 s of audio every 0.1 s for 0.8 s
            ws.send_bytes(np.zeros(1600, "<i2").tobytes())
            time.sleep(0.1)
        ws.send_json({"type": "stop"})
        messages, close = read_until_close(ws)
    assert close == 1000 and messages[-1]["type"] == "summary"
