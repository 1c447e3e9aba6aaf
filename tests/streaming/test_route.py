"""The WebSocket route, end to end with tiny random models: message order, timing, errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.affect import affect_of
from app.api.stream_messages import PredictionMessage, ReadyMessage, SummaryMessage
from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes

from .conftest import ClientFactory
from .test_session import chunks, pcm16, quantised

HOP_S = 0.5
WINDOW_S = 3.5
START_48K = {"type": "start", "sample_rate": 48_000, "encoding": "pcm_s16le", "channels": 1}


def read_until_close(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every JSON message the server sends, and its close code."""
    messages = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            return messages, message["code"]
        messages.append(json.loads(message["text"]))


def stream_audio(
    client: TestClient,
    start: dict[str, Any],
    data: bytes,
    sizes: list[int],
    path: str = "/ws/stream",
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Start, send ``data`` in chunks of ``sizes``, stop: (ready, later messages, close code)."""
    with client.websocket_connect(path) as ws:
        ws.send_json(start)
        ready = ws.receive_json()
        for piece in chunks(data, sizes):
            ws.send_bytes(piece)
        ws.send_json({"type": "stop"})
        messages, code = read_until_close(ws)
    return ready, messages, code


def assert_works(client: TestClient) -> None:
    """A fresh, short session still streams normally."""
    audio = pcm16(synth_speechlike(4.0, 16_000, seed=9))
    start = {**START_48K, "sample_rate": 16_000}
    ready, messages, code = stream_audio(client, start, audio, [16_000])
    assert ready["type"] == "ready" and code == 1000
    assert [m["type"] for m in messages] == ["prediction"] * 2 + ["summary"]
    assert client.get("/healthz").status_code == 200


def test_an_8s_48k_stream_in_odd_chunks(client: TestClient) -> None:
    audio = pcm16(synth_speechlike(8.0, 48_000, seed=4))
    ready, messages, code = stream_audio(client, START_48K, audio, [4097, 1, 333, 10_001])
    assert ready["type"] == "ready" and ready["session_id"]
    assert (ready["sample_rate"], ready["hop_s"], ready["window_s"]) == (48_000, HOP_S, WINDOW_S)
    assert ready["model"] in ("ce", "bce", "smoothl1", "l1")
    predictions, summary = messages[:-1], messages[-1]
    # 8 s, 3.5 s windows every 0.5 s: starts 0.0 .. 4.5, the last ends at 8.0 (nothing unseen).
    assert [m["type"] for m in predictions] == ["prediction"] * 10
    starts = [m["start_s"] for m in predictions]
    np.testing.assert_allclose(starts, np.arange(10) * HOP_S, atol=1e-6)
    np.testing.assert_allclose([m["end_s"] - m["start_s"] for m in predictions], WINDOW_S)
    for m in predictions:
        assert m["speech"] is True and m["label"] in m["probabilities"]
        assert sum(m["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert sum(m["smoothed"].values()) == pytest.approx(1.0, abs=1e-5)
        assert m["latency_ms"] >= 0
        for prefix, probs in (("", m["probabilities"]), ("smoothed_", m["smoothed"])):
            scores = (m[prefix + "arousal"], m[prefix + "valence"])
            assert scores == pytest.approx(affect_of(np.array(list(probs.values()))), abs=2e-4)
    assert summary["type"] == "summary" and code == 1000
    assert (summary["windows"], summary["speech_windows"]) == (10, 10)
    assert summary["duration_s"] == pytest.approx(8.0)
    mean = np.mean([list(m["probabilities"].values()) for m in predictions], axis=0)
    np.testing.assert_allclose(list(summary["probabilities"].values()), mean, atol=1e-6)
    assert summary["label"] == max(summary["probabilities"], key=summary["probabilities"].get)
    mean_affect = np.mean([(m["arousal"], m["valence"]) for m in predictions], axis=0)
    assert (summary["arousal"], summary["valence"]) == pytest.approx(mean_affect, abs=2e-4)


def test_the_alias_path_and_float_stereo(client: TestClient) -> None:
    wave = synth_speechlike(4.5, 44_100, seed=5)
    stereo = np.stack([wave, 0.5 * wave], axis=1).astype("<f4").tobytes()
    start = {"type": "start", "sample_rate": 44_100, "encoding": "pcm_f32le", "channels": 2}
    ready, messages, code = stream_audio(client, start, stereo, [7001, 5], path="/v1/stream")
    assert (ready["encoding"], ready["channels"], code) == ("pcm_f32le", 2, 1000)
    assert [m["start_s"] for m in messages[:-1]] == [0.0, 0.5, 1.0]
    assert messages[-1]["duration_s"] == pytest.approx(4.5)


def test_silence_is_reported_and_not_classified(client: TestClient) -> None:
    silence = np.zeros(5 * 16_000, dtype="<i2").tobytes()
    _, messages, code = stream_audio(client, {**START_48K, "sample_rate": 16_000}, silence, [999])
    predictions, summary = messages[:-1], messages[-1]
    assert len(predictions) == 4 and code == 1000
    for m in predictions:
        assert m["speech"] is False
        assert m["label"] is None and m["probabilities"] is None and m["smoothed"] is None
        scores = ("arousal", "valence", "smoothed_arousal", "smoothed_valence")
        assert [m[k] for k in scores] == [None] * 4
    assert (summary["speech_windows"], summary["label"], summary["probabilities"]) == (
        0,
        None,
        None,
    )
    assert summary["arousal"] is None and summary["valence"] is None


def test_stop_flushes_a_final_window_ending_at_the_last_sample(client: TestClient) -> None:
    audio = pcm16(synth_speechlike(5.3, 16_000, seed=6))
    _, messages, _ = stream_audio(client, {**START_48K, "sample_rate": 16_000}, audio, [3001])
    predictions = messages[:-1]
    assert [m["final"] for m in predictions] == [False] * 4 + [True]
    assert predictions[-1]["end_s"] == pytest.approx(5.3)
    assert predictions[-1]["start_s"] == pytest.approx(5.3 - WINDOW_S)


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_streamed_and_uploaded_predictions_agree(client: TestClient, rate: int) -> None:
    """The clip starts with sound, so /predict's silence trim keeps sample 0 and its first
    segment is the span [0, 3.5 s): the same span as the stream's first window. Both paths
    resample the same PCM16 samples with soxr HQ (whole clip vs streamed, equal by design)."""
    wave = quantised(synth_speechlike(6.0, rate, seed=7))
    upload = client.post("/predict", files={"file": ("clip.wav", wav_bytes(wave, rate))})
    assert upload.status_code == 200, upload.text
    first = upload.json()["segments"][0]
    assert first["start_s"] == 0.0 and first["end_s"] == pytest.approx(WINDOW_S)
    start = {**START_48K, "sample_rate": rate}
    _, messages, _ = stream_audio(client, start, pcm16(wave), [5003, 7])
    streamed = messages[0]
    assert (streamed["start_s"], streamed["end_s"]) == (0.0, pytest.approx(WINDOW_S))
    np.testing.assert_allclose(
        list(streamed["probabilities"].values()),
        list(first["probabilities"].values()),
        atol=1e-4,
    )
    assert streamed["label"] == first["label"]


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_every_streamed_window_equals_the_upload_window_of_the_same_span(
    client: TestClient, rate: int
) -> None:
    """With the stream's hop set to /predict's (1.75 s), the streamed windows after the first
    are built from frames the previous window computed (app.windows.SlidingFeatures), and still
    give the upload's probabilities for the same span."""
    wave = quantised(synth_speechlike(7.0, rate, seed=11))
    upload = client.post("/predict", files={"file": ("clip.wav", wav_bytes(wave, rate))})
    assert upload.status_code == 200, upload.text
    segments = {round(seg["start_s"], 3): seg for seg in upload.json()["segments"]}
    start = {**START_48K, "sample_rate": rate, "hop_s": 1.75}
    _, messages, _ = stream_audio(client, start, pcm16(wave), [4099, 31, 20_000])
    predictions = [m for m in messages if m["type"] == "prediction"]
    shared = [m for m in predictions if round(m["start_s"], 3) in segments]
    assert [round(m["start_s"], 3) for m in shared] == [0.0, 1.75, 3.5]
    for streamed in shared:
        uploaded = segments[round(streamed["start_s"], 3)]
        assert streamed["end_s"] == pytest.approx(uploaded["end_s"])
        np.testing.assert_allclose(
            list(streamed["probabilities"].values()),
            list(uploaded["probabilities"].values()),
            atol=1e-4,
        )


def test_a_chosen_model_hop_and_window(client: TestClient) -> None:
    start = {**START_48K, "sample_rate": 16_000, "model": "ce", "hop_s": 0.25, "window_s": 2.0}
    audio = pcm16(synth_speechlike(3.0, 16_000))
    ready, messages, _ = stream_audio(client, start, audio, [4000])
    assert (ready["model"], ready["hop_s"], ready["window_s"]) == ("ce", 0.25, 2.0)
    np.testing.assert_allclose([m["start_s"] for m in messages[:-1]], [0.0, 0.25, 0.5, 0.75, 1.0])


def test_metrics_count_streams_and_their_predictions(client: TestClient) -> None:
    def scrape() -> str:
        return client.get("/metrics").text

    def value(text: str, prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))

    before = scrape()
    audio = pcm16(synth_speechlike(4.0, 16_000))
    stream_audio(client, {**START_48K, "sample_rate": 16_000}, audio, [8000])
    after = scrape()
    assert value(after, "ser_predictions_total") - value(before, "ser_predictions_total") == 2
    seconds = 'ser_audio_seconds_total{source="stream"}'
    assert value(after, seconds) - value(before, seconds) == pytest.approx(4.0)
    assert value(after, "ser_active_streams") == 0


# ---------- errors: each gets its code and close code, and the server carries on ----------

ONE_SECOND = pcm16(synth_speechlike(1.0, 16_000))
START_16K = {**START_48K, "sample_rate": 16_000}


def send_json(message: Any) -> Callable[[Any], None]:
    return lambda ws: ws.send_text(message if isinstance(message, str) else json.dumps(message))


def send_bytes(data: bytes) -> Callable[[Any], None]:
    return lambda ws: ws.send_bytes(data)


ERROR_CASES: dict[str, tuple[list[Callable[[Any], None]], str, int]] = {
    "binary before start": ([send_bytes(ONE_SECOND)], "not_started", 1008),
    "stop before start": ([send_json({"type": "stop"})], "not_started", 1008),
    "bad json": ([send_json("{start")], "bad_json", 1007),
    "json not an object": ([send_json("[1, 2]")], "bad_json", 1007),
    "unknown type": ([send_json({"type": "hello"})], "unknown_type", 1003),
    "unknown encoding": (
        [send_json({**START_16K, "encoding": "mp3"})],
        "unsupported_encoding",
        1003,
    ),
    "sample rate too low": ([send_json({**START_16K, "sample_rate": 100})], "invalid_start", 1007),
    "sample rate missing": (
        [send_json({"type": "start", "encoding": "pcm_s16le"})],
        "invalid_start",
        1007,
    ),
    "zero channels": ([send_json({**START_16K, "channels": 0})], "invalid_start", 1007),
    "hop too short": ([send_json({**START_16K, "hop_s": 0.001})], "invalid_start", 1007),
    "window too long": ([send_json({**START_16K, "window_s": 60})], "invalid_start", 1007),
    "unknown model": ([send_json({**START_16K, "model": "nope"})], "unknown_model", 1007),
    "second start": (
        [send_json(START_16K), send_json(START_16K)],
        "already_started",
        1008,
    ),
    "unknown type after start": (
        [send_json(START_16K), send_json({"type": "pause"})],
        "unknown_type",
        1003,
    ),
    "bytes that never align": (
        [send_json(START_16K), send_bytes(ONE_SECOND + b"\x01"), send_json({"type": "stop"})],
        "partial_frame",
        1007,
    ),
    "non-finite floats": (
        [
            send_json({**START_16K, "encoding": "pcm_f32le"}),
            send_bytes(np.array([0.1, np.inf], dtype="<f4").tobytes()),
        ],
        "non_finite_samples",
        1007,
    ),
    "oversized frame": (
        [send_json(START_16K), send_bytes(b"\x00" * (256 * 1024 + 2))],
        "frame_too_large",
        1009,
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_protocol_errors_get_a_code_and_a_close_code(client: TestClient, case: str) -> None:
    actions, error_code, close_code = ERROR_CASES[case]
    with client.websocket_connect("/ws/stream") as ws:
        for act in actions:
            act(ws)
        messages, code = read_until_close(ws)
    errors = [m for m in messages if m["type"] == "error"]
    assert [e["code"] for e in errors] == [error_code], messages
    assert errors[0]["message"] and messages[-1] is errors[0]
    assert code == close_code
    assert_works(client)


def test_too_many_sessions_are_refused_until_one_ends(make_client: ClientFactory) -> None:
    client = make_client(stream_max_sessions=2, stream_max_sessions_per_client=3)
    with (
        client.websocket_connect("/ws/stream") as first,
        client.websocket_connect("/ws/stream") as second,
    ):
        for ws in (first, second):
            ws.send_json(START_16K)
            assert ws.receive_json()["type"] == "ready"
        with client.websocket_connect("/ws/stream") as third:
            third.send_json(START_16K)  # slots are taken by a valid start, not by connecting
            messages, code = read_until_close(third)
        assert [m["code"] for m in messages] == ["too_many_sessions"] and code == 1013
        first.send_json({"type": "stop"})
        assert read_until_close(first)[1] == 1000
        assert_works(client)  # the first one's slot is free again


def test_an_idle_session_is_closed(make_client: ClientFactory) -> None:
    client = make_client(stream_idle_timeout_s=0.3)
    for actions in ([], [send_json(START_16K), send_bytes(ONE_SECOND)]):
        started = time.monotonic()
        with client.websocket_connect("/ws/stream") as ws:
            for act in actions:
                act(ws)
            messages, code = read_until_close(ws)
        assert messages[-1]["code"] == "idle_timeout" and code == 1008
        assert time.monotonic() - started < 5
    assert_works(client)


def test_a_session_past_its_length_limit_is_closed(make_client: ClientFactory) -> None:
    client = make_client(stream_max_session_s=1.5)
    with client.websocket_connect("/ws/stream") as ws:  # too much audio
        ws.send_json(START_16K)
        ws.receive_json()
        ws.send_bytes(ONE_SECOND)
        ws.send_bytes(ONE_SECOND)
        messages, code = read_until_close(ws)
    assert messages[-1]["code"] == "session_too_long" and code == 1008
    with client.websocket_connect("/ws/stream") as ws:  # too long on the clock
        ws.send_json(START_16K)
        ws.receive_json()
        time.sleep(1.6)
        messages, code = read_until_close(ws)
    assert messages[-1]["code"] == "session_too_long" and code == 1008


def test_a_server_fault_is_1011_and_the_next_session_works(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = client.app.state.registry.get(None)  # type: ignore[attr-defined]

    def broken(features: np.ndarray) -> np.ndarray:
        raise RuntimeError("the engine fell over")

    monkeypatch.setattr(served, "predict", broken)
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        ws.send_bytes(pcm16(synth_speechlike(4.0, 16_000)))
        messages, code = read_until_close(ws)
    assert messages[-1] == {
        "type": "error",
        "code": "internal_error",
        "message": "the server failed",
    }
    assert code == 1011
    monkeypatch.undo()
    assert_works(client)


def test_chunks_run_on_the_stream_lane_threads(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(stream_threads=2)
    pools = client.app.state.work_pools  # type: ignore[attr-defined]
    served = client.app.state.registry.get(None)  # type: ignore[attr-defined]
    threads: set[str] = set()
    predict = served.predict

    def recorded(features: np.ndarray) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return predict(features)

    monkeypatch.setattr(served, "predict", recorded)
    audio = pcm16(synth_speechlike(6.0, 16_000))
    _, messages, code = stream_audio(client, {**START_48K, "sample_rate": 16_000}, audio, [8000])
    assert code == 1000 and sum(m["type"] == "prediction" for m in messages) == 6
    assert threads and all(name.startswith("work-stream") for name in threads)
    assert pools.stream.capacity == 2 + client.app.state.settings.stream_max_sessions  # type: ignore[attr-defined]
    assert pools.stream.jobs == 0


def test_a_client_that_vanishes_mid_stream_frees_its_slot(make_client: ClientFactory) -> None:
    client = make_client(stream_max_sessions=1)
    with client.websocket_connect("/ws/stream") as ws:
        ws.send_json(START_16K)
        ws.receive_json()
        ws.send_bytes(pcm16(synth_speechlike(4.0, 16_000)))
        assert ws.receive_json()["type"] == "prediction"
    # Left without stop or close handshake; the slot must come back for the next client.
    deadline = time.monotonic() + 5
    while client.app.state.stream_admission.active and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    assert client.app.state.stream_admission.active == 0  # type: ignore[attr-defined]
    assert_works(client)


def test_without_models_a_stream_is_told_to_retry_later(tmp_path: Path) -> None:
    with (
        TestClient(create_app(Settings(models_dir=tmp_path / "no-models"))) as client,
        client.websocket_connect("/ws/stream") as ws,
    ):
        ws.send_json(START_16K)
        messages, code = read_until_close(ws)
    assert [m["code"] for m in messages] == ["not_ready"] and code == 1013
    assert "does not exist" in messages[0]["message"]


def test_every_message_is_exactly_its_typed_model(client: TestClient) -> None:
    """What the server sends is what the pydantic models in stream_messages say, no more."""
    audio = np.concatenate([np.zeros(16_000, np.float32), synth_speechlike(4.0, 16_000, seed=4)])
    ready, messages, code = stream_audio(client, START_16K, pcm16(audio), [4_000])
    assert code == 1000
    models = {"ready": ReadyMessage, "prediction": PredictionMessage, "summary": SummaryMessage}
    kinds = set()
    for message in [ready, *messages]:
        model = models[message["type"]]
        assert model.model_validate(message).model_dump() == message
        assert set(message) == set(model.model_fields)
        kinds.add((message["type"], message.get("speech")))
    assert ("prediction", True) in kinds and ("summary", None) in kinds
