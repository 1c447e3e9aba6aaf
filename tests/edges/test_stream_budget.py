"""A stream's work and memory per frame are bounded whatever its settings: the worst allowed
start (8 kHz, hop 0.1 s, window 1 s) with the largest frames it may send, sixteen sessions at
once, against a real ``python -m app``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import synth_speechlike
from tests.live import LiveServer, live_server, peak_rss_growth_mb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SESSIONS = 16
RATE = 8_000
WORST_START = {
    "type": "start",
    "sample_rate": RATE,
    "encoding": "pcm_s16le",
    "channels": 1,
    "hop_s": 0.1,
    "window_s": 1.0,
}
FRAMES_PER_SESSION = 4
# docs/api.md: what one session may add to the server at the worst settings.
SESSION_BUDGET_MB = 5.0


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("stream-budget") / "server.log"
    limits = {"stream_max_sessions_per_client": SESSIONS, "stream_max_connects_per_client": 100}
    with live_server(models_dir, log, **limits) as running:
        yield running


def speech_pcm(seconds: float) -> bytes:
    wave = synth_speechlike(seconds, RATE, seed=7)
    return (np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes()


def test_the_worst_start_caps_its_frames_at_thirty_two_windows(server: LiveServer) -> None:
    with connect(server.ws_url) as ws:
        ws.send(json.dumps(WORST_START))
        ready = json.loads(ws.recv(10))
        assert ready["max_frame_bytes"] == 31 * 800 * 2  # 31 hops of 0.1 s, 16-bit
        ws.send(b"\0" * (ready["max_frame_bytes"] + 2))
        error = json.loads(ws.recv(10))
        assert error["code"] == "frame_too_large"
        assert str(ready["max_frame_bytes"]) in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def session(server: LiveServer, pcm: bytes) -> tuple[int, int, int | None]:
    """One worst-case session: max-size frames as fast as TCP takes them, then stop.
    Returns (predictions, windows in the summary, close code)."""
    predictions = 0
    with connect(server.ws_url, max_queue=None, open_timeout=30) as ws:
        ws.send(json.dumps(WORST_START))
        frame_bytes = json.loads(ws.recv(30))["max_frame_bytes"]
        for start in range(0, len(pcm), frame_bytes):
            ws.send(pcm[start : start + frame_bytes])
        ws.send(json.dumps({"type": "stop"}))
        while True:
            message = json.loads(ws.recv(120))
            if message["type"] != "prediction":
                break
            predictions += 1
        assert message["type"] == "summary", message
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(30)
    code = closed.value.rcvd.code if closed.value.rcvd is not None else None
    return predictions, message["windows"], code


def test_sixteen_worst_case_sessions_stay_within_their_budget(server: LiveServer) -> None:
    frame_s = 31 * 0.1
    pcm = speech_pcm(FRAMES_PER_SESSION * frame_s)
    session(server, pcm)  # the first windows grow ONNX Runtime's arena once (~120 MB)

    def all_sessions() -> list[tuple[int, int, int | None]]:
        with ThreadPoolExecutor(SESSIONS) as pool:
            return list(pool.map(lambda _: session(server, pcm), range(SESSIONS)))

    results, memory = peak_rss_growth_mb(server.process.pid, all_sessions)
    print(f"{SESSIONS} sessions at the worst settings: {memory}")
    for predictions, windows, code in results:
        assert code == 1000  # never 1011: the server kept reading
        assert predictions == windows > 100
    assert memory["growth_mb"] < SESSIONS * SESSION_BUDGET_MB, memory
