"""The client and the ``ser`` command against a real ``python -m app`` (the tiny test models)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.affect import affect_of
from app.labels import LABELS
from ser_client import (
    AsyncClient,
    Client,
    MicrophoneError,
    MicrophoneSource,
    ServiceError,
    StreamPrediction,
    StreamSummary,
    file_source,
    stream_url,
)
from tests.conftest import av_bytes, synth_speechlike
from tests.live import LiveServer, live_server

RATE = 16_000


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("client") / "server.log"
    with live_server(models_dir, log) as running:
        yield running


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    long = synth_speechlike(6.0, 44_100, seed=2)
    files = {
        "short.wav": (synth_speechlike(2.0, RATE, seed=1), RATE, "WAV"),
        "long.flac": (np.stack([long, long], axis=1), 44_100, "FLAC"),
    }
    out = {}
    for name, (wave, rate, fmt) in files.items():
        sf.write(folder / name, wave, rate, format=fmt)
        out[name] = folder / name
    sf.write(folder / "voice.mp3", synth_speechlike(3.0, 44_100, seed=3), 44_100, format="MP3")
    out["voice.mp3"] = folder / "voice.mp3"
    phone = av_bytes(synth_speechlike(3.0, 48_000, seed=4), 48_000, "mp4", "aac")
    (folder / "phone.m4a").write_bytes(phone)
    out["phone.m4a"] = folder / "phone.m4a"
    browser = av_bytes(synth_speechlike(3.0, 48_000, seed=5), 48_000, "webm", "libopus")
    (folder / "browser.webm").write_bytes(browser)
    out["browser.webm"] = folder / "browser.webm"
    out["notes.txt"] = folder / "notes.txt"
    out["notes.txt"].write_text("not audio")
    return out


def assert_affect_of(
    probabilities: dict[str, float] | None, arousal: float | None, valence: float | None
) -> None:
    """The scores are those of the probabilities (not swapped, not another window's)."""
    assert probabilities is not None and arousal is not None and valence is not None
    expected = affect_of(np.array([probabilities[label] for label in LABELS]))
    assert (arousal, valence) == pytest.approx(expected, abs=2e-4)
    assert -1 <= arousal <= 1 and -1 <= valence <= 1


def ser(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ser_client", "--url", server.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_PROXY": "*"},
    )


def test_predict_returns_typed_results(server: LiveServer, clips: dict[str, Path]) -> None:
    with Client(server.url) as client:
        result = client.predict(clips["long.flac"], model="ce")
        same = client.predict(clips["long.flac"].read_bytes(), model="ce")
        assert client.models()["default"] == "bce"
    assert result.label in LABELS and set(result.probabilities) == set(LABELS)
    assert result.model == "ser-ce" and result.duration_s == pytest.approx(6.0)
    assert len(result.segments) >= 2
    assert result.segments[0].start_s < result.segments[1].start_s
    assert same.probabilities == result.probabilities
    assert (result.arousal, result.valence) == (result.raw["arousal"], result.raw["valence"])
    assert_affect_of(result.probabilities, result.arousal, result.valence)
    for segment, raw in zip(result.segments, result.raw["segments"], strict=True):
        assert (segment.arousal, segment.valence) == (raw["arousal"], raw["valence"])
        assert_affect_of(segment.probabilities, segment.arousal, segment.valence)


def test_predict_refusal_is_a_service_error(server: LiveServer, clips: dict[str, Path]) -> None:
    with Client(server.url) as client, pytest.raises(ServiceError) as caught:
        client.predict(clips["notes.txt"])
    assert caught.value.status == 415 and caught.value.code == "unsupported_audio"
    with Client(server.url) as client, pytest.raises(ServiceError) as caught:
        client.predict(clips["short.wav"], model="nope")
    assert caught.value.status == 404


def test_stream_yields_predictions_in_order_then_the_summary(
    server: LiveServer, clips: dict[str, Path]
) -> None:
    async def run() -> list[StreamPrediction | StreamSummary]:
        async with AsyncClient(server.url) as client:
            source = file_source(clips["long.flac"], chunk_s=0.25, realtime=False)
            return [event async for event in client.stream(source, model="ce")]

    events = asyncio.run(run())
    *windows, summary = events
    assert isinstance(summary, StreamSummary) and summary.model == "ce"
    assert all(isinstance(w, StreamPrediction) for w in windows)
    assert [w.index for w in windows] == list(range(len(windows))) and len(windows) >= 5
    assert summary.windows == len(windows) and summary.duration_s == pytest.approx(6.0, abs=0.01)
    assert summary.label in LABELS
    assert_affect_of(summary.probabilities, summary.arousal, summary.valence)
    for window in windows:
        assert isinstance(window, StreamPrediction)
        if window.speech:
            assert_affect_of(window.probabilities, window.arousal, window.valence)
        else:
            assert window.arousal is None and window.valence is None
        if window.smoothed is not None:
            assert_affect_of(window.smoothed, window.smoothed_arousal, window.smoothed_valence)
        else:
            assert window.smoothed_arousal is None and window.smoothed_valence is None
    assert any(isinstance(w, StreamPrediction) and w.speech for w in windows)


def test_realtime_pacing_takes_as_long_as_the_audio(
    server: LiveServer, clips: dict[str, Path]
) -> None:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with AsyncClient(server.url) as client:
            source = file_source(clips["short.wav"], chunk_s=0.1, realtime=True)
            async for _ in client.stream(source):
                pass
        return loop.time() - started

    assert asyncio.run(run()) >= 1.8  # 2 s of audio, sent at real time


def test_stream_refusal_is_a_service_error(server: LiveServer, clips: dict[str, Path]) -> None:
    async def run() -> None:
        async with AsyncClient(server.url) as client:
            async for _ in client.stream(file_source(clips["short.wav"]), model="nope"):
                pass

    with pytest.raises(ServiceError) as caught:
        asyncio.run(run())
    assert caught.value.code == "unknown_model"
    assert caught.value.status == 1007  # the close code, as docs/api.md says


def test_a_refused_handshake_is_a_service_error_with_its_status(
    server: LiveServer, clips: dict[str, Path]
) -> None:
    async def run() -> None:
        async with AsyncClient(server.url + "/nowhere") as client:
            async for _ in client.stream(file_source(clips["short.wav"])):
                pass

    with pytest.raises(ServiceError) as caught:
        asyncio.run(run())
    assert (caught.value.status, caught.value.code) == (404, "no_websocket_route")


@pytest.mark.parametrize("name", ["phone.m4a", "browser.webm"])
def test_cli_streams_m4a_and_webm(server: LiveServer, clips: dict[str, Path], name: str) -> None:
    done = ser(server, "stream", str(clips[name]), "--fast", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["type"] == "summary"
    assert summary["duration_s"] == pytest.approx(3.0, abs=0.1)


def test_cli_stream_status_is_the_close_code(server: LiveServer, clips: dict[str, Path]) -> None:
    done = ser(server, "stream", str(clips["short.wav"]), "--fast", "--model", "nope")
    assert done.returncode == 1
    assert "1007 unknown_model" in done.stderr


def test_cli_predict_many_files_as_csv(server: LiveServer, clips: dict[str, Path]) -> None:
    names = ("short.wav", "long.flac", "voice.mp3", "phone.m4a", "notes.txt")
    done = ser(server, "predict", *(str(clips[n]) for n in names), "--csv", "--windows")
    assert done.returncode == 1, done.stderr  # one file was refused
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    by_file = {Path(r["file"]).name: [] for r in rows}
    for row in rows:
        by_file[Path(row["file"]).name].append(row)
    assert list(by_file) == list(names)  # in the order given
    assert "415 unsupported_audio" in by_file["notes.txt"][0]["error"]
    clip_row, *window_rows = by_file["long.flac"]
    assert clip_row["start_s"] == "" and len(window_rows) >= 2
    assert sum(float(clip_row[label]) for label in LABELS) == pytest.approx(1.0, abs=1e-5)
    # The scores follow the probabilities, and are the service's (the default model here too).
    head = done.stdout.splitlines()[0].split(",")
    scores = ["arousal", "valence", "error"]
    assert head == ["file", "start_s", "end_s", "label", "confidence", *LABELS, *scores]
    with Client(server.url) as client:
        expected = client.predict(clips["long.flac"])
    assert len(window_rows) == len(expected.segments)
    scored = [(expected.arousal, expected.valence)]
    scored += [(s.arousal, s.valence) for s in expected.segments]
    assert [(float(r["arousal"]), float(r["valence"])) for r in [clip_row, *window_rows]] == scored
    assert by_file["notes.txt"][0]["arousal"] == by_file["notes.txt"][0]["valence"] == ""


def test_cli_predict_json_and_table(server: LiveServer, clips: dict[str, Path]) -> None:
    done = ser(server, "predict", str(clips["short.wav"]), "--json", "--model", "ce")
    assert done.returncode == 0, done.stderr
    [item] = json.loads(done.stdout)
    assert item["result"]["model"]["name"] == "ser-ce"
    table = ser(server, "predict", str(clips["short.wav"]), "--model", "ce", "--windows")
    assert table.returncode == 0 and "short.wav" in table.stdout
    head, row, window = table.stdout.splitlines()
    assert head.split() == ["file", "label", "conf", "arousal", "valence", "seconds", "windows"]
    result = item["result"]
    assert row.split()[1:] == [
        result["label"],
        f"{result['confidence']:.3f}",
        f"{result['arousal']:+.3f}",
        f"{result['valence']:+.3f}",
        f"{result['duration_s']:.2f}",
        "1",
    ]
    [segment] = result["segments"]
    assert window.split()[-4:] == [
        segment["label"],
        f"{segment['confidence']:.3f}",
        f"{segment['arousal']:+.3f}",
        f"{segment['valence']:+.3f}",
    ]


def test_cli_stream_prints_a_line_per_window_and_the_summary(
    server: LiveServer, clips: dict[str, Path]
) -> None:
    done = ser(server, "stream", str(clips["long.flac"]), "--fast")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("summary: ") and len(lines) >= 6
    assert all(" s  " in line for line in lines[:-1])
    speech = [line for line in lines[:-1] if "(no speech)" not in line]
    assert speech and all("smoothed: " in line for line in speech)
    # "... label 0.123  arousal +0.12 valence -0.34  smoothed: label arousal ... valence ..."
    assert all(line.count(" arousal ") == line.count(" valence ") == 2 for line in speech)
    assert "(arousal " in lines[-1] and " valence " in lines[-1]
    as_json = ser(server, "stream", str(clips["short.wav"]), "--fast", "--json")
    messages = [json.loads(line) for line in as_json.stdout.splitlines()]
    kinds = [message["type"] for message in messages]
    assert kinds[-1] == "summary" and set(kinds[:-1]) == {"prediction"}
    assert {"arousal", "valence", "smoothed_arousal", "smoothed_valence"} <= set(messages[0])
    assert {"arousal", "valence"} <= set(messages[-1])


def test_cli_says_what_is_wrong(server: LiveServer, clips: dict[str, Path], tmp_path) -> None:
    nothing = ser(server, "stream")
    assert nothing.returncode == 2 and "give a FILE or --mic" in nothing.stderr
    unreadable = ser(server, "stream", str(clips["notes.txt"]))
    assert unreadable.returncode == 2 and "cannot decode" in unreadable.stderr
    missing = ser(server, "stream", str(tmp_path / "gone.wav"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    nobody = ["--url", "http://127.0.0.1:9", "predict", str(clips["short.wav"])]
    down = subprocess.run(
        [sys.executable, "-m", "ser_client", *nobody], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 2 and "cannot reach the service" in down.stderr


def test_cli_takes_the_url_after_the_subcommand(server: LiveServer, clips: dict[str, Path]) -> None:
    args = ["predict", str(clips["short.wav"]), "--url", server.url, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "ser_client", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_PROXY": "*"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["result"]["label"] in LABELS


def test_cli_into_a_closed_pipe_ends_quietly(server: LiveServer, clips: dict[str, Path]) -> None:
    """``ser predict folder/ --csv | head``: the reader has gone by the time ser writes."""
    args = ["predict", str(clips["short.wav"].parent), "--csv", "--windows", "--url", server.url]
    process = subprocess.Popen(
        [sys.executable, "-m", "ser_client", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "NO_PROXY": "*"},
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before ser has written anything: its first write fails
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # 128 + SIGPIPE, what a shell shows for it
    assert stderr == ""  # no "cannot reach the service", no traceback


def test_microphone_without_a_device_is_a_clear_error() -> None:
    # The CI machine has no sound card (and no sounddevice package): either way, a message.
    with pytest.raises(MicrophoneError, match=r"sounddevice|microphone"):
        MicrophoneSource()


def test_stream_url() -> None:
    assert stream_url("http://h:8000/") == "ws://h:8000/ws/stream"
    assert stream_url("https://example.org") == "wss://example.org/ws/stream"


def test_cli_predict_a_folder(server: LiveServer, clips: dict[str, Path], tmp_path: Path) -> None:
    folder = clips["short.wav"].parent  # audio files and notes.txt
    done = ser(server, "predict", str(folder), "--json")
    assert done.returncode == 0, done.stderr  # notes.txt is not an audio file: not sent
    names = [Path(item["file"]).name for item in json.loads(done.stdout)]
    assert names == sorted(["short.wav", "long.flac", "voice.mp3", "phone.m4a", "browser.webm"])
    empty = ser(server, "predict", str(tmp_path))
    assert empty.returncode == 2 and "no audio files found" in empty.stderr
    missing = ser(server, "predict", str(tmp_path / "gone.wav"))
    assert missing.returncode == 1 and "cannot read the file" in missing.stdout


def test_cli_models_lists_each_model_and_what_it_learnt_from(server: LiveServer) -> None:
    done = ser(server, "models", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    table = ser(server, "models")
    assert table.returncode == 0, table.stderr
    head, *rows = table.stdout.splitlines()
    assert head.split() == [
        "model",
        "provider",
        "T",
        "test",
        "acc",
        "(own",
        "split)",
        "learnt",
        "from",
    ]
    assert len(rows) == len(listing["models"])
    for model, row in zip(listing["models"], rows, strict=True):
        assert row.startswith("*") == model["default"]
        assert model["name"] in row.split() and model["provider"] in row.split()
        corpora = model["training_corpora"]
        expected = f"{sum(corpora.values())} clips" if corpora else "(not recorded)"
        assert expected in row


def test_models_table_names_the_corpora_and_their_clips() -> None:
    from ser_client.cli import models_table

    listing = {
        "models": [
            {
                "name": "ser-ce",
                "default": True,
                "provider": "cpu",
                "temperature": 1.2,
                "metrics": {"test": {"accuracy": 0.8}},
                "training_corpora": {"nemo": 3547, "ravdess": 1154},
            },
            {
                "name": "ser-l1",
                "default": False,
                "provider": "cpu",
                "temperature": 3.0,
                "metrics": {},
                "training_corpora": {},
            },
        ]
    }
    _, ce, l1 = models_table(listing).splitlines()
    assert ce.split() == [
        "*",
        "ser-ce",
        "cpu",
        "1.200",
        "0.8000",
        "4701",
        "clips:",
        "nemo",
        "3547,",
        "ravdess",
        "1154",
    ]
    assert l1.split() == ["ser-l1", "cpu", "3.000", "-", "(not", "recorded)"]


def test_cli_predict_per_utterance(server: LiveServer, tmp_path: Path) -> None:
    """Two turns a second apart: a CSV row for the file, then one per utterance."""
    wave = np.zeros(6 * RATE, dtype=np.float32)
    wave[int(0.5 * RATE) : int(2.5 * RATE)] = synth_speechlike(2.0, RATE, seed=1)
    wave[int(3.5 * RATE) : int(5.5 * RATE)] = synth_speechlike(2.0, RATE, seed=2)
    path = tmp_path / "call.wav"
    sf.write(path, wave, RATE)
    done = ser(server, "predict", str(path), "--utterances", "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 3 and rows[0]["start_s"] == ""
    starts = [float(r["start_s"]) for r in rows[1:]]
    assert starts == pytest.approx([0.5, 3.5], abs=0.15)
    assert all(r["label"] in LABELS for r in rows)
    with Client(server.url) as client:
        result = client.predict(path, segments="utterances")
    assert result.raw["segmentation"] == "utterances" and len(result.segments) == 2
    assert result.speech_s is not None and 2.5 < result.speech_s <= 4.2


def test_the_microphone_hint_names_an_install_that_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import sounddevice -> ImportError
    with pytest.raises(MicrophoneError) as missing:
        MicrophoneSource()
    assert "pip install sounddevice" in str(missing.value)
    assert "PortAudio" not in str(missing.value)  # only the package is missing here
