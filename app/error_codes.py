"""Every error code the service sends, with its HTTP status and WebSocket close code.

One table, so that an upload and a stream that fail for the same reason (say a NaN sample) send
the same ``code`` and a status / close code that mean the same thing. The HTTP handlers
(:mod:`app.errors`) and the stream route (:mod:`app.api.stream`) both look codes up here;
``docs/api.md`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# WebSocket close codes (RFC 6455, section 7.4.1).
NORMAL: Final[int] = 1000
UNSUPPORTED_DATA: Final[int] = 1003
INVALID_PAYLOAD: Final[int] = 1007
POLICY_VIOLATION: Final[int] = 1008
MESSAGE_TOO_BIG: Final[int] = 1009
INTERNAL_ERROR: Final[int] = 1011
TRY_AGAIN_LATER: Final[int] = 1013


@dataclass(frozen=True)
class Outcome:
    """What a code does on each transport; None where the code cannot happen there."""

    http: int | None
    close: int | None


ERROR_CODES: Final[dict[str, Outcome]] = {
    # The audio itself (uploads and streams).
    "invalid_audio": Outcome(422, INVALID_PAYLOAD),
    "unsupported_audio": Outcome(415, UNSUPPORTED_DATA),
    "empty_audio": Outcome(422, INVALID_PAYLOAD),
    "non_finite_samples": Outcome(422, INVALID_PAYLOAD),
    "sample_out_of_range": Outcome(422, INVALID_PAYLOAD),
    "audio_too_long": Outcome(422, POLICY_VIOLATION),
    "audio_too_large": Outcome(413, MESSAGE_TOO_BIG),
    "unsupported_sample_rate": Outcome(422, INVALID_PAYLOAD),
    "unusable_audio": Outcome(422, None),
    "no_speech": Outcome(422, None),
    # The request around it.
    "bad_request": Outcome(400, None),
    "invalid_request": Outcome(422, None),
    "missing_audio": Outcome(400, None),
    "upload_too_large": Outcome(413, None),
    "unsupported_media_type": Outcome(415, None),
    "upload_timeout": Outcome(408, None),
    "client_disconnected": Outcome(400, None),
    "invalid_host": Outcome(400, None),
    "upgrade_required": Outcome(426, None),  # a plain request to a WebSocket endpoint
    "no_websocket_route": Outcome(404, None),  # a WebSocket handshake to another path
    "origin_not_allowed": Outcome(403, None),  # a WebSocket handshake, refused before accepting
    # The stream protocol.
    "bad_json": Outcome(None, INVALID_PAYLOAD),
    "frame_too_large": Outcome(None, MESSAGE_TOO_BIG),
    "invalid_start": Outcome(None, INVALID_PAYLOAD),
    "unsupported_encoding": Outcome(None, UNSUPPORTED_DATA),
    "partial_frame": Outcome(None, INVALID_PAYLOAD),
    "unknown_type": Outcome(None, UNSUPPORTED_DATA),
    "not_started": Outcome(None, POLICY_VIOLATION),
    "already_started": Outcome(None, POLICY_VIOLATION),
    "start_timeout": Outcome(None, POLICY_VIOLATION),
    "idle_timeout": Outcome(None, POLICY_VIOLATION),
    "audio_too_slow": Outcome(None, POLICY_VIOLATION),
    "session_too_long": Outcome(None, POLICY_VIOLATION),
    "stream_error": Outcome(None, POLICY_VIOLATION),  # a session used out of order
    "too_many_attempts": Outcome(None, POLICY_VIOLATION),
    "too_many_client_streams": Outcome(None, POLICY_VIOLATION),
    # The service's state.
    "unknown_model": Outcome(404, INVALID_PAYLOAD),
    "not_ready": Outcome(503, TRY_AGAIN_LATER),
    "server_busy": Outcome(503, TRY_AGAIN_LATER),
    "too_many_sessions": Outcome(None, TRY_AGAIN_LATER),
    # The server's own faults: never the client's input.
    "inference_failed": Outcome(500, INTERNAL_ERROR),
    "engine_failed": Outcome(503, None),  # /healthz: an engine failed for good, restart
    "internal_error": Outcome(500, INTERNAL_ERROR),
}


def http_status(code: str) -> int:
    """The HTTP status of ``code`` (a KeyError for a code that has none: a bug, not input)."""
    status = ERROR_CODES[code].http
    if status is None:
        raise KeyError(f"{code!r} has no HTTP status")
    return status


def close_code(code: str) -> int:
    """The WebSocket close code of ``code``."""
    close = ERROR_CODES[code].close
    if close is None:
        raise KeyError(f"{code!r} has no WebSocket close code")
    return close
