"""The bad-input table: every category of upload a hostile or careless client can send to
/predict, with the status and error code it must get, and a live /healthz after each.

A 200 must carry finite probabilities that sum to 1; an error must be the JSON error body.
No row may give a 5xx.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes

RATE = 16_000
MAX_AUDIO_S = 20.0
MAX_UPLOAD_BYTES = 3_000_000
MAX_DECODED_SAMPLES = 2_000_000


@dataclass(frozen=True)
class Case:
    """One row: the request to send and the answer it must get (code None: a 200)."""

    name: str
    body: Callable[[], bytes | Iterator[bytes]]
    status: int
    code: str | None = None
    content_type: str | None = "audio/wav"
    multipart: bool = False
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)


def speech(seconds: float = 1.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    mono = synth_speechlike(seconds, rate)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def encoded(wave: np.ndarray, rate: int = RATE, subtype: str = "PCM_16", fmt: str = "WAV"):
    return lambda: wav_bytes(wave, rate, subtype=subtype, fmt=fmt)


def float_wav(wave: np.ndarray, rate: int = RATE) -> Callable[[], bytes]:
    return encoded(wave.astype(np.float32), rate, subtype="FLOAT")


def patched(offset: int, fmt: str, value: int, base: bytes | None = None) -> Callable[[], bytes]:
    """A 1 s PCM16 WAV with one header field overwritten."""

    def make() -> bytes:
        data = bytearray(base if base is not None else wav_bytes(speech(), RATE))
        struct.pack_into(fmt, data, offset, value)
        return bytes(data)

    return make


def other_container(fmt: str, subtype: str) -> Callable[[], bytes]:
    def make() -> bytes:
        buf = io.BytesIO()
        sf.write(buf, speech(0.5), RATE, format=fmt, subtype=subtype)
        return buf.getvalue()

    return make


def bomb() -> bytes:
    """A small FLAC that decodes to 8 channels x 192 kHz x 10 s = 15.4 M samples."""
    rate, channels, seconds = 192_000, 8, 10
    second = np.zeros((rate, channels), np.int16)
    second[::1000] = 1  # near-silence: a click every 1000 samples
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, "PCM_16", format="FLAC") as f:
        for _ in range(seconds):
            f.write(second)
    return buf.getvalue()


def one_spike(value: float) -> Callable[[], bytes]:
    wave = speech(1.0, 48_000)
    wave[1000] = value
    return float_wav(wave, 48_000)


def square(amplitude: float, seconds: float = 0.2, rate: int = 48_000) -> np.ndarray:
    n = int(seconds * rate)
    return np.where(np.arange(n) % 96 < 48, amplitude, -amplitude).astype(np.float32)


LONG_NAME = "m" * 60_000

CASES = [
    # Formats that must work.
    Case("wav_pcm16", encoded(speech()), 200),
    Case("wav_pcm_u8", encoded(speech(), subtype="PCM_U8"), 200),
    Case("wav_pcm24", encoded(speech(), subtype="PCM_24"), 200),
    Case("wav_pcm32", encoded(speech(), subtype="PCM_32"), 200),
    Case("wav_float", encoded(speech(), subtype="FLOAT"), 200),
    Case("wav_double", encoded(speech(), subtype="DOUBLE"), 200),
    Case("flac", encoded(speech(), fmt="FLAC"), 200, content_type="audio/flac"),
    Case(
        "ogg_vorbis", encoded(speech(), subtype="VORBIS", fmt="OGG"), 200, content_type="audio/ogg"
    ),
    Case(
        "ogg_opus",
        encoded(speech(1.0, 48_000), 48_000, "OPUS", "OGG"),
        200,
        content_type="audio/ogg",
    ),
    Case("multipart_wav", encoded(speech()), 200, multipart=True),
    Case("octet_stream", encoded(speech()), 200, content_type="application/octet-stream"),
    # Containers and bytes that are not (accepted) audio.
    Case("aiff", other_container("AIFF", "PCM_16"), 415, "unsupported_audio"),
    Case("au", other_container("AU", "PCM_16"), 415, "unsupported_audio"),
    Case("raw_pcm", lambda: speech().tobytes(), 415, "unsupported_audio"),
    Case("text", lambda: b"this is not audio at all", 415, "unsupported_audio"),
    Case("pdf", lambda: b"%PDF-1.7\n" + b"x" * 500, 415, "unsupported_audio"),
    Case("zeros", lambda: b"\x00" * 4096, 415, "unsupported_audio"),
    Case("riff_stub", lambda: b"RIFF\x10\x00", 415, "unsupported_audio"),
    Case("multipart_garbage", lambda: b"not audio", 415, "unsupported_audio", multipart=True),
    # Headers that lie or are broken.
    Case("empty_body", lambda: b"", 422, "empty_audio"),
    Case("no_samples", encoded(np.zeros(0, np.float32)), 422, "empty_audio"),
    Case("truncated_half", lambda: wav_bytes(speech(), RATE)[:16_000], 200),
    Case("data_size_lies", patched(40, "<I", 0x7FFF_FFF0), 200),
    Case("riff_size_lies", patched(4, "<I", 0xFFFF_FFFF), 200),
    Case("channels_zero", patched(22, "<H", 0), 415, "unsupported_audio"),
    Case("channels_65535", patched(22, "<H", 65_535), 415, "unsupported_audio"),
    Case("rate_zero", patched(24, "<I", 0), 415, "unsupported_audio"),
    Case("rate_4g", patched(24, "<I", 0xFFFF_FFFF), 415, "unsupported_audio"),
    Case("rate_1hz", patched(24, "<I", 1), 422, "unsupported_sample_rate"),
    Case("bits_zero", patched(34, "<H", 0), 415, "unsupported_audio"),
    Case("format_tag_unknown", patched(20, "<H", 0x1234), 415, "unsupported_audio"),
    # Rates.
    Case("rate_4k", encoded(speech(1.0, 4_000), 4_000), 422, "unsupported_sample_rate"),
    Case("rate_8k", encoded(speech(1.0, 8_000), 8_000), 200),
    Case("rate_44k1", encoded(speech(1.0, 44_100), 44_100), 200),
    Case("rate_192k", encoded(speech(1.0, 192_000), 192_000), 200),
    Case("rate_384k", encoded(speech(0.5, 384_000), 384_000), 422, "unsupported_sample_rate"),
    # Channel counts.
    Case("stereo_48k", encoded(speech(1.0, 48_000, 2), 48_000), 200),
    Case("channels_8", encoded(speech(1.0, 16_000, 8)), 200),
    Case("channels_64", encoded(speech(0.5, 16_000, 64)), 200),
    # Sizes and durations.
    Case("too_short", encoded(speech(0.05)), 422, "unusable_audio"),
    Case("too_long", encoded(speech(MAX_AUDIO_S + 1, 8_000), 8_000), 422, "audio_too_long"),
    Case("upload_too_large", lambda: b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "upload_too_large"),
    Case(
        "chunked_too_large",
        lambda: (b"\0" * 100_000 for _ in range(MAX_UPLOAD_BYTES // 100_000 + 2)),
        413,
        "upload_too_large",
    ),
    Case("flac_bomb", bomb, 413, "audio_too_large", content_type="audio/flac"),
    Case(
        "wide_and_long",
        encoded(speech(8.0, 8_000, 32), 8_000, subtype="PCM_U8"),  # 2.05 M samples
        413,
        "audio_too_large",
    ),
    # Numbers that must stay numbers.
    Case("nan", float_wav(np.full(RATE, np.nan, np.float32)), 422, "non_finite_samples"),
    Case("inf", one_spike(np.inf), 422, "non_finite_samples"),
    Case("minus_inf", one_spike(-np.inf), 422, "non_finite_samples"),
    Case("square_3e38", float_wav(square(3e38), 48_000), 422, "sample_out_of_range"),
    Case("scaled_1e20", float_wav(speech(1.0, 48_000) * 1e20, 48_000), 422, "sample_out_of_range"),
    Case("one_sample_1e36", one_spike(1e36), 422, "sample_out_of_range"),
    Case(
        "double_1e300",
        encoded(speech().astype(np.float64) * 1e300, subtype="DOUBLE"),
        422,
        "non_finite_samples",
    ),
    Case("overs_12db", float_wav(speech() * (3.9 / np.abs(speech()).max())), 200),
    Case("scaled_1e-30", float_wav(speech() * 1e-30), 422, "unusable_audio"),
    Case("denormals", float_wav(speech() * 1e-40), 422, "unusable_audio"),
    Case("digital_zeros", encoded(np.zeros(RATE, np.float32)), 422, "unusable_audio"),
    Case("dc_offset", float_wav(np.full(RATE, 0.5, np.float32)), 422, "no_speech"),
    Case("full_scale_square", float_wav(square(1.0, 1.0), 48_000), 422, "no_speech"),
    # Request shapes.
    Case("text_plain", encoded(speech()), 415, "unsupported_media_type", content_type="text/plain"),
    Case("no_body", lambda: b"", 400, "missing_audio", content_type=None),
    Case(
        "bad_content_length",
        encoded(speech()),
        400,
        "bad_request",
        headers={"content-length": "12abc"},
    ),
    Case(
        "malformed_multipart",
        lambda: b"garbage without boundaries",
        400,
        "bad_request",
        content_type="multipart/form-data; boundary=xyz",
    ),
    Case("unknown_model", encoded(speech()), 404, "unknown_model", query="?model=nope"),
    Case("huge_model_name", encoded(speech()), 404, "unknown_model", query=f"?model={LONG_NAME}"),
]


@pytest.fixture(scope="module")
def hostile_client(models_dir: Path) -> Iterator[TestClient]:
    settings = Settings(
        models_dir=models_dir,
        max_audio_s=MAX_AUDIO_S,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        max_decoded_samples=MAX_DECODED_SAMPLES,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def send(client: TestClient, case: Case) -> Any:
    body = case.body()
    url = f"/predict{case.query}"
    if case.multipart:
        assert isinstance(body, bytes)
        return client.post(url, files={"file": ("clip.wav", body, "audio/wav")})
    headers = dict(case.headers)
    if case.content_type is not None:
        headers["content-type"] = case.content_type
    return client.post(url, content=body, headers=headers)


def test_the_table_covers_forty_categories() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_its_answer(hostile_client: TestClient, case: Case) -> None:
    response = send(hostile_client, case)
    assert response.status_code == case.status, response.text[:300]
    assert len(response.content) < 4096  # nothing the client sent is echoed whole
    body = response.json()
    if case.code is None:
        probabilities = np.array(list(body["probabilities"].values()), dtype=np.float64)
        assert np.isfinite(probabilities).all() and abs(probabilities.sum() - 1) < 1e-4
        assert isinstance(body["confidence"], float) and body["label"] in body["probabilities"]
        for segment in body["segments"]:
            assert all(np.isfinite(p) for p in segment["probabilities"].values())
    else:
        assert set(body) == {"error"} and body["error"]["code"] == case.code
        assert body["error"]["message"]
    assert hostile_client.get("/healthz").status_code == 200
