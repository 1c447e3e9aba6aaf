"""A training run stopped by SIGTERM (a container stop) or Ctrl-C: its log exists from the
start, the interruption is a message and exit 130, not a traceback, and the log says what
--resume will continue from."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.test_pipeline_end_to_end import _write_corpus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_ends_a_run_with_a_message_and_a_log(tmp_path: Path) -> None:
    corpus = _write_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "training", "train", "--loss", "ce", "--epochs", "200",
        "--data", str(corpus), "--out", str(out), "--runs", str(out / "runs"), "--workers", "0",
        "--cache-dir", str(tmp_path / "segments"), "--feature-cache", str(tmp_path / "features"),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    logs: list[Path] = []
    while not logs and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        logs = list((out / "runs").rglob("train.log"))
    assert logs, "train.log was not written when training started"
    started = logs[0].read_text()
    assert "ce: 200 epochs of" in started  # written before the first epoch ends
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err.decode()[-2000:]
    assert b"interrupted" in err and b"Traceback" not in err
    log = logs[0].read_text()
    assert "interrupted in epoch" in log and "--resume" in log
