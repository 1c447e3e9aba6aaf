"""Hostile media against a real ``python -m app``: what the event loop and the process feel
while they are refused (TestClient would hide a blocked loop and shares the test's memory)."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import synth_speechlike, wav_bytes
from tests.hostile_media import SDP, ffconcat, lying_webm, many_tracks_mkv
from tests.live import LiveServer, live_server, peak_rss_growth_mb

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SDP_PORT_HEX = f":{7300:04X}"  # the port the SDP asks FFmpeg to bind, as /proc/net/udp shows it


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("untrusted") / "server.log"
    with live_server(models_dir, log) as running:
        yield running


def client(server: LiveServer) -> httpx.Client:
    """A client made before the clock starts: making one costs tens of milliseconds here."""
    return httpx.Client(base_url=server.url, timeout=120, trust_env=False)


def post(
    server: LiveServer, data: bytes, kind: str = "audio/webm", via: httpx.Client | None = None
) -> httpx.Response:
    with contextlib.ExitStack() as stack:
        http = via if via is not None else stack.enter_context(client(server))
        return http.post("/predict", content=data, headers={"content-type": kind})


def udp_bound(pid: int) -> bool:
    lines = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1].endswith(SDP_PORT_HEX) for line in lines)


def test_sdp_and_ffconcat_are_refused_at_once_with_healthz_unaffected(
    server: LiveServer,
) -> None:
    uploads = [SDP, SDP, ffconcat("models/ser-ce.onnx")]
    answers: list[tuple[int, float]] = []
    clients = [client(server) for _ in uploads]
    for http in clients:
        http.get("/healthz")  # connected before the clock starts

    def send(data: bytes, http: httpx.Client) -> None:
        started = time.perf_counter()
        answers.append((post(server, data, via=http).status_code, time.perf_counter() - started))

    threads = [
        threading.Thread(target=send, args=pair) for pair in zip(uploads, clients, strict=True)
    ]
    healthz_s = []
    with client(server) as probe:
        probe.get("/healthz")
        for thread in threads:
            thread.start()
        for _ in range(5):
            started = time.perf_counter()
            assert probe.get("/healthz").status_code == 200
            healthz_s.append(time.perf_counter() - started)
    for thread in threads:
        thread.join()
    for http in clients:
        http.close()
    assert [status for status, _ in answers] == [415] * len(uploads)
    # The target: 415 in < 50 ms and /healthz within 100 ms (was 10 s); the maxima
    # get slack for a 2-core machine that runs other work.
    assert statistics.median(s for _, s in answers) < 0.05 * 4
    assert statistics.median(healthz_s) < 0.1 and max(healthz_s) < 1.0
    assert not udp_bound(server.process.pid)


def test_six_thousand_track_files_at_once_stay_under_fifty_megabytes(server: LiveServer) -> None:
    data = many_tracks_mkv(1000)

    def six() -> list[int]:
        with ThreadPoolExecutor(6) as pool:
            return [r.status_code for r in pool.map(lambda _: post(server, data), range(6))]

    statuses, memory = peak_rss_growth_mb(server.process.pid, six)
    assert statuses == [415] * 6
    assert memory["growth_mb"] <= 50, memory


def test_a_lying_header_cannot_slow_a_short_clip_down(server: LiveServer) -> None:
    """Two 120 s WebM files whose headers say 1 s, beside a 3.5 s WAV: the clip takes at most
    ten times what it takes alone (the liars are moved to the long lane)."""
    clip = wav_bytes(synth_speechlike(3.5, 16_000), 16_000)
    liar = lying_webm(120.0, claimed_s=1.0)
    http = client(server)

    def timed_clip() -> float:
        started = time.perf_counter()
        assert post(server, clip, "audio/wav", via=http).status_code == 200
        return time.perf_counter() - started

    idle_s = min(timed_clip() for _ in range(3))
    with ThreadPoolExecutor(2) as pool:
        liars = [pool.submit(post, server, liar) for _ in range(2)]
        time.sleep(0.2)
        busy_s = timed_clip()
        assert [f.result().status_code for f in liars] == [200, 200]
    http.close()
    assert busy_s <= 10 * max(idle_s, 0.05), (busy_s, idle_s)
