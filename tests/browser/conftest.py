"""Shared by the browser tests: the app under uvicorn, and the fake microphone's audio."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
import uvicorn

from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(models_dir: Path) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(Settings(models_dir=models_dir)),
        host="127.0.0.1",
        port=port,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def microphone_wav(tmp_path: Path) -> Path:
    """What the fake microphone plays: 6 s of speech-like audio at 48 kHz, then looped."""
    path = tmp_path / "microphone.wav"
    sf.write(path, synth_speechlike(6.0, 48_000, seed=3), 48_000, subtype="PCM_16")
    return path
