"""One table of error codes: every code the service can send is in it, with the status and
close code each transport uses."""

from __future__ import annotations

import pytest

from app import audio, errors, streaming
from app.api.admission import StreamAdmission
from app.api.stream_messages import ProtocolError
from app.error_codes import ERROR_CODES, INVALID_PAYLOAD, close_code, http_status


def _subclasses(base: type) -> list[type]:
    found = []
    for cls in base.__subclasses__():
        found += [cls, *_subclasses(cls)]
    return found


@pytest.mark.parametrize(
    "base", [audio.AudioError, streaming.StreamError, errors.ServiceError], ids=lambda b: b.__name__
)
def test_every_error_class_has_its_code_in_the_table(base: type) -> None:
    for cls in [base, *_subclasses(base)]:
        assert cls.code in ERROR_CODES, cls


def test_http_errors_take_their_status_from_the_table() -> None:
    for cls in _subclasses(errors.ServiceError):
        assert cls.status_code == http_status(cls.code)
    assert errors.NotReadyError.status_code == 503
    assert errors.UploadTooLargeError.status_code == 413


def test_audio_errors_mean_the_same_on_both_transports() -> None:
    # A NaN sample in an upload is a 422; in a stream, an invalid payload (1007): same code.
    for cls in [audio.AudioError, *_subclasses(audio.AudioError)]:
        outcome = ERROR_CODES[cls.code]
        assert outcome.http is not None and outcome.close is not None, cls
    assert ERROR_CODES["non_finite_samples"].close == INVALID_PAYLOAD
    assert ProtocolError("non_finite_samples", "NaN").close_code == INVALID_PAYLOAD


def test_admission_refusals_have_close_codes() -> None:
    admission = StreamAdmission(max_sessions=0, max_per_client=0, max_attempts=0, window_s=1.0)
    for attempt in (lambda: admission.connect("a"), admission.take_slot):
        with pytest.raises(Exception) as refused:
            attempt()
        assert close_code(refused.value.code) in (1008, 1013)  # type: ignore[attr-defined]


def test_a_code_without_a_transport_is_a_bug_not_a_silent_default() -> None:
    with pytest.raises(KeyError):
        http_status("bad_json")
    with pytest.raises(KeyError):
        close_code("upload_timeout")
