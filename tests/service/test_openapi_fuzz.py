"""schemathesis against the service's own ``/openapi.json``, with its checks on.

Every operation of the schema gets a bounded number of generated requests (schema-valid and
schema-invalid), sent to the app in process (schemathesis runs the lifespan, so the tiny test
models are loaded). The audio bodies, raw and as the multipart ``file`` field, come from
:func:`audio_bodies`: mostly real WAV files written with soundfile at assorted rates, channel
counts and sample formats, so the 200 path is exercised, beside truncated files and noise.

Asserted for every response: no 5xx; status, content type, headers and body conform to the
schema (schemathesis' checks); every error is the JSON ``{"error": {"code", "message"}}``; and a
schema-valid request that carries one of the real WAV files is a 200.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans

from app.api.predict import AUDIO_TYPES
from app.main import create_app
from app.settings import Settings
from tests.conftest import synth_speechlike, wav_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EXAMPLES_PER_OPERATION: Final[int] = 30
# 16 kHz and up: the speech detector hears the synthetic voice at 8 kHz for most seeds only
# (telephone-band audio has its own tests with fixed voices).
RATES: Final[tuple[int, ...]] = (16_000, 22_050, 44_100, 48_000)
# Voices the detector hears in more than half of their frames at every rate and length here
# (a few seeds of the synthetic voice are heard far less).
VOICED_SEEDS: Final[tuple[int, ...]] = (0, 1, 2, 3, 7, 8, 9, 10, 12, 13)
SUBTYPES: Final[tuple[str, ...]] = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT")
# A schema-valid /predict body can still be refused for what its bytes hold, which the schema
# cannot say ("format: binary"): too large (413), not a supported format (415), not usable
# audio (422). Every other refusal of schema-valid data is a failure, as schemathesis has it.
CONTENT_REFUSALS: Final[list[str]] = ["413", "415", "422"]
CONFIG: Final = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-tag": "predict",
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": ["2xx", "404", *CONTENT_REFUSALS]
                    }
                },
            }
        ]
    }
)

_real_wavs: set[bytes] = set()  # digests of every real WAV generated
_accepted: Counter[str] = Counter()  # real WAVs answered 200, by operation
_called: Counter[str] = Counter()  # generated requests sent, by operation


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _remember(data: bytes) -> bytes:
    _real_wavs.add(_digest(data))
    return data


@st.composite
def real_wav(draw: st.DrawFn) -> bytes:
    """A WAV file of 1-2 s of speech-like audio, 1-3 channels: a clip the API accepts (the
    speech detector needs a few syllables to hear a voice)."""
    rate = draw(st.sampled_from(RATES))
    duration_s = draw(st.floats(1.0, 2.0))
    channels = draw(st.integers(1, 3))
    wave = synth_speechlike(duration_s, rate, seed=draw(st.sampled_from(VOICED_SEEDS)))
    samples = wave if channels == 1 else wave[:, None].repeat(channels, axis=1)
    return wav_bytes(samples, rate, subtype=draw(st.sampled_from(SUBTYPES)))


def audio_bodies() -> st.SearchStrategy[bytes]:
    """Half real WAV files, then truncated ones and arbitrary bytes."""
    real = real_wav().map(_remember)
    truncated = st.tuples(real_wav(), st.integers(0, 200)).map(lambda t: t[0][: t[1]])
    return st.one_of(real, real, truncated, st.binary(max_size=512))


for _media_type in sorted(AUDIO_TYPES):
    schemathesis.openapi.media_type(_media_type, audio_bodies())
schemathesis.openapi.format("binary", audio_bodies())  # the multipart "file" field

# The schema is the document /openapi.json serves (checked below); it does not depend on the
# models, so it comes from an app that is never started. schemathesis.pytest.from_fixture, which
# would load it from a started app, fails on pytest 9: it sets request.node._nodeid, gone there.
DOCUMENT_APP: Final = create_app(Settings(models_dir=Path("unused")))
schema = schemathesis.openapi.from_dict(DOCUMENT_APP.openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def app(models_dir: Path) -> Iterator[FastAPI]:
    """The service on the test models; schemathesis starts its lifespan on the first call."""
    yield create_app(Settings(models_dir=models_dir))
    shutdown_lifespans()  # the lifespans schemathesis started: work pools and models closed


def test_the_fuzzed_document_is_the_served_one(app: FastAPI) -> None:
    with TestClient(app) as client:
        assert client.get("/openapi.json").json() == DOCUMENT_APP.openapi()


def _audio_sent(body: object) -> bytes | None:
    """The audio bytes of a generated body: raw, or the multipart ``file`` field."""
    if isinstance(body, dict):
        body = body.get("file")
    data = getattr(body, "data", body)  # schemathesis wraps format-binary values
    return data if isinstance(data, bytes) else None


def _error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    return str(error["code"])


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_every_operation_conforms_and_never_fails(case: Any, app: FastAPI) -> None:
    response = case.call_and_validate(app=app)
    label = case.operation.label
    _called[label] += 1
    assert response.status_code < 500, response.text
    code = _error_code(response) if response.status_code >= 400 else None
    audio = _audio_sent(case.body)
    if audio is not None and _digest(audio) in _real_wavs and case.meta.generation.mode.is_positive:
        assert response.status_code == 200 or code == "unknown_model", response.text
        _accepted[label] += response.status_code == 200


def test_real_wavs_reached_the_200_path() -> None:
    predict_ops = [label for label in _called if label.endswith("predict")]
    if not predict_ops:
        pytest.skip("the fuzzing test did not run in this session")
    assert all(_accepted[label] > 0 for label in predict_ops), (_accepted, _called)
