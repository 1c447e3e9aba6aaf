"""Every way a client can get /predict wrong: a 4xx with a JSON error body, never a 500."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.api.predict import UploadLimits, _limited
from app.errors import UploadTooLargeError
from tests.conftest import synth_speechlike, wav_bytes

RATE = 16_000


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def float_wav(wave: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_too_large_by_content_length(make_client) -> None:
    client = make_client(max_upload_bytes=50_000)
    data = wav_bytes(synth_speechlike(2.0, RATE), RATE)  # 64 kB
    raw = client.post("/predict", content=data, headers={"content-type": "audio/wav"})
    error = assert_error(raw, 413, "upload_too_large")
    assert "50000" in error["message"]
    big = b"x" * 200_000
    multipart = client.post("/predict", files={"file": ("a.wav", big, "audio/wav")})
    assert_error(multipart, 413, "upload_too_large")


def test_too_large_counted_while_streaming(make_client) -> None:
    """No Content-Length (chunked): the server stops at the limit instead of buffering."""
    client = make_client(max_upload_bytes=50_000)
    chunks = (b"\0" * 10_000 for _ in range(100))
    response = client.post("/predict", content=chunks, headers={"content-type": "audio/wav"})
    assert_error(response, 413, "upload_too_large")


async def test_reading_stops_at_the_limit() -> None:
    pulled = 0

    async def body():
        nonlocal pulled
        for _ in range(100):
            pulled += 1
            yield b"\0" * 10_000

    with pytest.raises(UploadTooLargeError):
        async for _ in _limited(body(), 50_000, UploadLimits(50_000, 600.0)):
            pass
    assert pulled == 6  # the chunk that crossed the limit, and nothing after it


def test_multipart_file_over_limit_within_overhead(make_client) -> None:
    client = make_client(max_upload_bytes=50_000)
    response = client.post("/predict", files={"file": ("a.wav", b"y" * 60_000, "audio/wav")})
    assert_error(response, 413, "upload_too_large")


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "image/png"])
def test_not_audio_content_type_is_415(client: TestClient, content_type: str) -> None:
    response = client.post("/predict", content=b"hello", headers={"content-type": content_type})
    assert_error(response, 415, "unsupported_media_type")


def test_bytes_that_are_not_audio_are_415(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("a.wav", b"not audio at all", "audio/wav")})
    assert_error(response, 415, "unsupported_audio")
    raw = client.post("/predict", content=b"%PDF-1.4", headers={"content-type": "audio/wav"})
    assert_error(raw, 415, "unsupported_audio")


def test_unusable_audio_is_422(make_client) -> None:
    client = make_client(max_audio_s=5.0)
    cases = {
        "empty_audio": wav_bytes(np.zeros(0, dtype=np.float32), RATE),
        "non_finite_samples": float_wav(np.full(RATE, np.nan, dtype=np.float32)),
        "audio_too_long": wav_bytes(synth_speechlike(6.0, RATE), RATE),
        "unsupported_sample_rate": wav_bytes(synth_speechlike(1.0, 4_000), 4_000),
        "unusable_audio": wav_bytes(np.zeros(RATE, dtype=np.float32), RATE),  # silence
    }
    for code, data in cases.items():
        response = client.post("/predict", files={"file": ("a.wav", data, "audio/wav")})
        assert_error(response, 422, code)
    empty_raw = client.post("/predict", content=b"", headers={"content-type": "audio/wav"})
    assert_error(empty_raw, 422, "empty_audio")


def test_too_short_is_422(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(0.05, RATE), RATE)
    error = assert_error(
        client.post("/predict", content=data, headers={"content-type": "audio/wav"}), 422
    )
    assert "at least" in error["message"]


def test_missing_audio_is_400(client: TestClient) -> None:
    assert_error(client.post("/predict"), 400, "missing_audio")
    wrong_field = client.post("/predict", files={"audio": ("a.wav", b"RIFF", "audio/wav")})
    error = assert_error(wrong_field, 400, "missing_audio")
    assert "'file'" in error["message"] and "audio" in error["message"]
    # A multipart text field named file (no filename): not a file upload.
    text_field = client.post("/predict", files={"file": (None, "not a file")})
    assert_error(text_field, 400, "missing_audio")
    form = client.post("/predict", data={"file": "not a file"})  # urlencoded form
    assert_error(form, 415, "unsupported_media_type")


def test_malformed_multipart_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=b"garbage without boundaries",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    error = assert_error(response, 400, "bad_request")
    assert "multipart" in error["message"]


def test_bad_content_length_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"abc", headers={"content-type": "audio/wav", "content-length": "x"}
    )
    assert response.status_code == 400


def test_unknown_model_is_404_listing_the_models(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    for name in ("nope", "l1", "ser-l1"):  # l1 is a valid loss, but not loaded here
        response = client.post(f"/predict?model={name}", files={"file": ("a.wav", data)})
        error = assert_error(response, 404, "unknown_model")
        assert "ce or ser-ce; bce or ser-bce" in error["message"]
        assert error["details"] == {"available": ["ce", "bce"], "full_names": ["ser-ce", "ser-bce"]}


def test_framework_errors_use_the_same_body(client: TestClient) -> None:
    error = assert_error(client.get("/no/such/route"), 404, "not_found")
    assert "/docs" in error["message"]
    assert_error(client.get("/predict"), 405, "method_not_allowed")

    @client.app.get("/typed")
    def typed(n: int) -> int:
        return n

    error = assert_error(client.get("/typed?n=abc"), 422, "invalid_request")
    assert "n" in error["message"]


async def test_a_client_that_disconnects_mid_upload_is_not_a_server_error(models_dir) -> None:
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(models_dir=models_dir))
    sent: list[dict] = []
    messages = iter(
        [
            {"type": "http.request", "body": b"RIFF", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"model=ce",
        "headers": [(b"content-type", b"audio/wav")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400


def test_a_server_fault_is_a_json_500_that_closes_the_connection(make_client, monkeypatch) -> None:
    """The server closes the connection after an unhandled error: the answer says so."""
    client = make_client()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("app.api.predict.predict_clip", broken)
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    response = client.post("/predict", content=data, headers={"content-type": "audio/wav"})
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in error["message"]  # internals go to the log, not to the client
    assert response.headers["connection"] == "close"


# ------------------------------------------------- messages that say what to do next


def test_too_large_says_how_to_get_under_the_limit(make_client) -> None:
    client = make_client(max_upload_bytes=50_000)
    data = wav_bytes(synth_speechlike(2.0, RATE), RATE)
    error = assert_error(
        client.post("/predict", content=data, headers={"content-type": "audio/wav"}), 413
    )
    for advice in ("FLAC", "Opus", "/ws/stream", "SER_MAX_UPLOAD_BYTES", "0.05 MB"):
        assert advice in error["message"]
    # The length limit comes before the advice to compress: a 20-minute recording compressed
    # under the byte limit would be refused next for its length.
    message = error["message"]
    assert "at most 600 s" in message and message.index("600 s") < message.index("FLAC")


BROKEN = {
    "M4A": b"\0\0\0\x18ftypM4A \0\0\0\0" + bytes(range(256)) * 8,  # FFmpeg reads it
    "WebM": b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8,
    "WAV": b"RIFF\xff\xff\xff\x7fWAVEjunk" + bytes(range(256)) * 8,  # libsndfile reads it
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_an_unreadable_file_is_a_415_without_the_parsers_words(
    client: TestClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.INFO, logger="app.errors")
    response = client.post("/predict", files={"file": ("a", BROKEN[kind], "audio/wav")})
    error = assert_error(response, 415, "unsupported_audio")
    message = error["message"]
    assert "re-encode" in message and "Errno" not in message and "Invalid data" not in message
    assert "(" not in message.split(":")[0]  # no "(<library error>)" after the first words
    # The parser's words are in the log, under the id the response names.
    request_id = response.headers["x-request-id"]
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "audio_refused"]
    assert record.request_id == request_id and record.detail  # type: ignore[attr-defined]
    assert record.detail not in message  # type: ignore[attr-defined]


def test_the_gateways_request_id_is_kept_and_a_strange_one_replaced(client: TestClient) -> None:
    kept = client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = client.get("/healthz", headers={"x-request-id": "a b\n{injected}"})
    assert replaced.headers["x-request-id"] != "a b\n{injected}"
    assert len(replaced.headers["x-request-id"]) == 32


@pytest.mark.parametrize("path", ["/predict", "/v1/predict"])
def test_get_predict_says_to_post(client: TestClient, path: str) -> None:
    error = assert_error(client.get(path), 405, "method_not_allowed")
    assert f"GET {path} is not allowed" in error["message"]
    assert "POST" in error["message"] and "multipart field 'file'" in error["message"]
    assert error["details"]["allow"] == ["POST"]
    assert {"POST /v1/predict", "GET /v1/models", "WebSocket /ws/stream"} <= set(
        error["details"]["routes"]
    )


def test_a_wrong_method_elsewhere_names_the_right_one(client: TestClient) -> None:
    error = assert_error(client.post("/v1/models"), 405, "method_not_allowed")
    assert "/v1/models takes GET" in error["message"] and "multipart" not in error["message"]
    assert "POST /v1/predict" in error["message"]  # and where the audio goes


def test_a_model_is_named_by_key_or_full_name(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    for name in ("ce", "ser-ce"):
        response = client.post(f"/predict?model={name}", files={"file": ("a.wav", data)})
        assert response.status_code == 200, response.text
        assert response.json()["model"]["name"] == "ser-ce"


@pytest.mark.parametrize("name", ["", "CE", "Ser-Ce"])
def test_an_empty_model_is_the_default_and_names_ignore_case(client: TestClient, name: str) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    response = client.post(f"/predict?model={name}", files={"file": ("a.wav", data)})
    assert response.status_code == 200, response.text
    expected = "ser-ce" if name else client.get("/v1/models").json()["default"]
    assert response.json()["model"]["name"].endswith(expected.removeprefix("ser-"))


def test_a_long_path_or_content_type_is_not_echoed_whole(client: TestClient) -> None:
    long_path = "/" + "a" * 60_000
    error = assert_error(client.get(long_path), 404)
    assert len(error["message"]) < 400 and "60001 characters" in error["message"]
    long_type = "audio/" + "x" * 60_000
    error = assert_error(
        client.post("/predict", content=b"RIFF", headers={"content-type": long_type}), 415
    )
    assert len(error["message"]) < 1000


def test_an_encoded_body_is_refused_not_misread(client: TestClient) -> None:
    data = wav_bytes(synth_speechlike(1.0, RATE), RATE)
    headers = {"content-type": "audio/wav", "content-encoding": "gzip"}
    error = assert_error(client.post("/predict", content=data, headers=headers), 415)
    assert "Content-Encoding 'gzip'" in error["message"]
    identity = {"content-type": "audio/wav", "content-encoding": "identity"}
    assert client.post("/predict", content=data, headers=identity).status_code == 200


def multipart(*parts: bytes, closed: bool = True) -> bytes:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--b--\r\n" if closed else b"")


FILE_PART = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (multipart(FILE_PART, FILE_PART), "more than one file"),
        (
            multipart(
                *(
                    f'Content-Disposition: form-data; name="f{i}"\r\n\r\nx'.encode()
                    for i in range(17)
                )
            ),
            "more than 16 fields",
        ),
        (multipart(b"Content-Disposition: form-data\r\n\r\nx"), "has no name"),
        (b"--b\r\n" + FILE_PART, "closing boundary"),
    ],
    ids=["two files", "17 fields", "a nameless part", "no closing boundary"],
)
def test_multipart_refusals_say_what_is_wrong(client: TestClient, body: bytes, says: str) -> None:
    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert says in response.json()["error"]["message"]


def test_sample_and_length_messages_show_the_real_figures(client: TestClient) -> None:
    peak = np.full(RATE, 0.1, np.float32)
    peak[100] = np.float32(4.0000005)
    error = assert_error(
        client.post("/predict", content=float_wav(peak), headers={"content-type": "audio/wav"}),
        422,
        "sample_out_of_range",
    )
    assert "peaks at 4.00000048" in error["message"]
    short = wav_bytes(synth_speechlike(0.0999375, RATE), RATE)  # 1599 samples
    error = assert_error(
        client.post("/predict", content=short, headers={"content-type": "audio/wav"}), 422
    )
    assert "lasts 0.0999375 s; send at least 0.1 s" in error["message"]


def test_parser_details_lose_heap_addresses() -> None:
    from app.audio import UnsupportedAudioError

    error = UnsupportedAudioError(
        "x", detail="Error opening <_io.BytesIO object at 0x7f3a2c1d>: no"
    )
    assert error.detail == "Error opening <_io.BytesIO object>: no"


def test_the_multipart_parsers_warnings_are_info(caplog: pytest.LogCaptureFixture) -> None:
    from app.logs import MULTIPART_LOGGER, configure_logging

    configure_logging("info", json_lines=True)
    with caplog.at_level(logging.INFO):
        logging.getLogger(MULTIPART_LOGGER).warning("Skipping data after last boundary")
    assert [r.levelname for r in caplog.records if r.name == MULTIPART_LOGGER] == ["INFO"]


def test_a_chained_ogg_is_refused_not_cut_to_its_first_link(client: TestClient) -> None:
    def ogg(seconds: float, seed: int) -> bytes:
        return wav_bytes(synth_speechlike(seconds, RATE, seed=seed), RATE, "VORBIS", "OGG")

    single = ogg(2.0, 1)
    assert client.post("/predict", content=single, headers={"content-type": "audio/ogg"}).is_success
    chained = single + ogg(3.0, 2)
    error = assert_error(
        client.post("/predict", content=chained, headers={"content-type": "audio/ogg"}),
        422,
        "invalid_audio",
    )
    assert "chained Ogg" in error["message"]
