"""/predict against hostile media: each is a JSON 4xx that says what to do, and the work lanes
are chosen by what an upload really decodes to, not by what its header claims."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.workpool import WorkPools
from tests.hostile_media import (
    HLS,
    SDP,
    adts_format_change,
    ffconcat,
    lying_webm,
    many_tracks_mkv,
    padded_m4a,
)
from tests.service.conftest import occupy

RATE = 48_000


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def post(client: TestClient, data: bytes) -> httpx.Response:
    return client.post("/predict", content=data, headers={"content-type": "audio/webm"})


def assert_error(response: httpx.Response, status: int, code: str, says: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert says in error["message"]


@pytest.mark.parametrize(
    "data",
    [SDP, HLS, ffconcat("models/ser-ce.onnx"), ffconcat("/etc/passwd")],
    ids=["sdp", "hls", "ffconcat-model", "ffconcat-absolute"],
)
def test_texts_that_drive_ffmpeg_are_415_with_the_formats_to_send(make_client, data) -> None:
    response = post(make_client(), data)
    assert_error(response, 415, "unsupported_audio", "send WAV, FLAC")
    assert "text" in response.json()["error"]["message"]


def test_a_thousand_tracks_is_a_415_that_says_so(make_client) -> None:
    assert_error(post(make_client(), many_tracks_mkv(1000)), 415, "unsupported_audio", "streams")


def test_a_format_change_mid_stream_is_a_422_not_a_500(make_client) -> None:
    response = post(make_client(), adts_format_change())
    assert_error(response, 422, "invalid_audio", "re-encode")


def test_a_header_slow_to_parse_is_a_422(make_client) -> None:
    response = post(make_client(max_header_s=0.01), padded_m4a(300_000))
    assert_error(response, 422, "invalid_audio", "header took")


def moves(client: TestClient) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "ser_work_lane_moves_total":
                return float(sample.value)
    return 0.0


def test_a_header_that_understates_the_length_is_moved_to_the_long_lane(make_client) -> None:
    client = make_client(long_lane_samples=5 * RATE)
    before = moves(client)
    response = post(client, lying_webm(12.0, claimed_s=1.0))
    assert response.status_code == 200, response.text
    assert response.json()["duration_s"] == pytest.approx(12.0, abs=0.1)
    assert moves(client) == before + 1


def test_the_lying_file_never_holds_the_short_lane(make_client, gate) -> None:
    """With the long lane full, the lying file is refused there (503, the long lane's
    Retry-After) while an honest short clip still passes."""
    client = make_client(long_lane_samples=5 * RATE, long_work_threads=1, long_work_queue_limit=0)
    pools: WorkPools = client.app.state.work_pools  # type: ignore[attr-defined]
    occupy(client, pools.long, gate)
    response = post(client, lying_webm(12.0, claimed_s=1.0))
    assert response.status_code == 503 and response.headers["retry-after"] == "10"
    assert post(client, lying_webm(2.0, claimed_s=2.0)).status_code == 200
    assert pools.short.jobs == 0
