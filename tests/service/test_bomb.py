"""Decompression bombs: a 1.4 MB FLAC that decodes to 123 M samples (8 channels, 192 kHz,
80 s of near-silence; 490 MB as float32) is refused from its header by /predict, and even with
the size limit lifted it decodes with bounded memory. Eight of the largest uploads /predict
accepts, at once, keep a real server's peak memory growth under 1 GB.

Peak memory is measured in a fresh subprocess (``ru_maxrss`` after the imports and the file
are loaded, against the peak after the work), so nothing else in the test run counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.audio import DEFAULT_MAX_DECODED_SAMPLES
from tests.conftest import write_worst_case_flac
from tests.live import live_server, peak_rss_growth_mb

pytestmark = pytest.mark.slow

BOMB_RATE, BOMB_CHANNELS, BOMB_SECONDS = 192_000, 8, 80
WORST_RATE = 192_000  # the highest rate accepted
MAX_GROWTH_MB = 300  # the bound for one upload (the earlier decoder: ~540 MB here)

# Runs in the subprocess: argv = [mode, bomb path, models dir]; prints one JSON line.
MEASURE = """
import json, resource, sys
from pathlib import Path

mode, path, models = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
data = path.read_bytes()
if mode == "predict":
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings
    client = TestClient(create_app(Settings(models_dir=models)))
    client.__enter__()
from app.audio import decode_audio

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

before = peak_mb()
if mode == "predict":
    response = client.post("/predict", content=data, headers={"content-type": "audio/flac"})
    result = {"status": response.status_code, "code": response.json()["error"]["code"]}
else:
    audio = decode_audio(data, max_decoded_samples=None)
    result = {"samples": int(audio.samples.shape[0])}
result["growth_mb"] = peak_mb() - before
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def flac_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.flac"
    second = np.zeros((BOMB_RATE, BOMB_CHANNELS), np.int16)
    second[:: BOMB_RATE // 4] = 1  # near-silence: four clicks a second
    with sf.SoundFile(path, "w", BOMB_RATE, BOMB_CHANNELS, "PCM_16", format="FLAC") as f:
        for _ in range(BOMB_SECONDS):
            f.write(second)
    return path


def measure(mode: str, bomb: Path, models_dir: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, mode, str(bomb), str(models_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_bomb_is_what_it_claims(flac_bomb: Path) -> None:
    info = sf.info(str(flac_bomb))
    assert info.frames * info.channels > DEFAULT_MAX_DECODED_SAMPLES
    assert flac_bomb.stat().st_size < 2_000_000


def test_predict_refuses_the_bomb_from_its_header(flac_bomb: Path, models_dir: Path) -> None:
    result = measure("predict", flac_bomb, models_dir)
    assert (result["status"], result["code"]) == (413, "audio_too_large")
    assert result["growth_mb"] < 50  # the header was read, no sample was decoded


def test_the_bomb_decodes_in_bounded_memory_without_the_limit(
    flac_bomb: Path, models_dir: Path
) -> None:
    result = measure("decode", flac_bomb, models_dir)
    assert result["samples"] == BOMB_SECONDS * 16_000
    assert result["growth_mb"] < MAX_GROWTH_MB, result


MAX_CONCURRENT_GROWTH_MB = 1024  # the bound for 8 worst-case uploads at once
CONCURRENT_UPLOADS = 8


def test_eight_worst_case_uploads_at_once_stay_under_a_gigabyte(
    tmp_path: Path, models_dir: Path
) -> None:
    """Each upload is exactly at the decoded-size limit (mono, 192 kHz, 600 s), and each gets
    its own long-lane thread, so all eight decode, featurise and classify at the same time."""
    worst = tmp_path / "worst.flac"
    write_worst_case_flac(worst, DEFAULT_MAX_DECODED_SAMPLES / WORST_RATE, WORST_RATE)
    assert sf.info(str(worst)).frames == DEFAULT_MAX_DECODED_SAMPLES
    body = worst.read_bytes()
    settings = {"long_work_threads": CONCURRENT_UPLOADS, "long_work_queue_limit": 0}
    with live_server(models_dir, tmp_path / "server.log", **settings) as server:

        def post(_: int) -> int:
            response = httpx.post(
                server.url + "/predict",
                content=body,
                headers={"content-type": "audio/flac"},
                timeout=300,
                trust_env=False,
            )
            return response.status_code

        def all_at_once() -> list[int]:
            with ThreadPoolExecutor(CONCURRENT_UPLOADS) as pool:
                return list(pool.map(post, range(CONCURRENT_UPLOADS)))

        post(0)  # warm: the first long clip grows ONNX Runtime's arena once
        statuses, memory = peak_rss_growth_mb(server.process.pid, all_at_once)
    assert statuses == [200] * CONCURRENT_UPLOADS
    assert memory["growth_mb"] < MAX_CONCURRENT_GROWTH_MB, memory
