"""The benchmark's lean upload client against a real server: every request it counts was a
whole, successful /predict, and a refused one stops the run."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from benchmarks.upload_load import ResponseError, multipart_request, read_response, run_load
from tests.conftest import synth_speechlike
from tests.live import LiveServer, live_server


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(models_dir, tmp_path_factory.mktemp("load") / "server.log") as running:
        yield running


def _wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synth_speechlike(seconds, 16_000), 16_000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def _predict_200s(server: LiveServer) -> float:
    return server.metric("ser_http_requests_total", route="/predict", status="200")


def test_each_counted_request_is_a_whole_prediction(server: LiveServer) -> None:
    before = _predict_200s(server)
    run = run_load([server.port], multipart_request("/predict?model=ce", _wav(3.5)), 12, 3)
    assert len(run["latencies_ms"]) == 12
    assert all(latency > 0 for latency in run["latencies_ms"])
    assert run["wall_s"] > 0 and run["client_cpu_s"] >= 0
    # 12 measured requests and one warm-up per connection, each a 200 the server counted.
    assert _predict_200s(server) - before == 12 + 3


def test_a_refused_request_raises_with_the_status(server: LiveServer) -> None:
    request = multipart_request("/predict?model=nope", _wav(1.0))
    with pytest.raises(ResponseError, match="HTTP 404"):
        run_load([server.port], request, 4, 2)


def test_the_request_is_what_curl_sends_for_a_file_field() -> None:
    request = multipart_request("/predict", b"RIFFdata")
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /predict HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert b'name="file"; filename="clip.wav"' in body and b"\r\n\r\nRIFFdata\r\n--" in body


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "without Content-Length"),
    ],
)
def test_a_response_it_cannot_measure_is_an_error(raw: bytes, error: str) -> None:
    with pytest.raises(ResponseError, match=error):
        read_response(io.BytesIO(raw))


def test_a_response_is_read_to_its_length_and_no_further() -> None:
    stream = io.BytesIO(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 ...")
    assert read_response(stream) == (200, b"{}")
    assert stream.read() == b"HTTP/1.1 ..."  # the next response starts where this one ended
