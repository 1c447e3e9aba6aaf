"""WebSocket streaming: ``/ws/stream`` (alias ``/v1/stream``).

Protocol (JSON text frames, binary audio frames):

1. client ``{"type": "start", "sample_rate": 48000, "encoding": "pcm_s16le", "channels": 1}``
   (optional ``model``, ``hop_s``, ``window_s``); server ``{"type": "ready", ...}``.
2. client: binary PCM chunks of any size; server: a ``prediction`` every ``hop_s`` of audio
   once a full window has arrived (silent windows: ``speech: false``, ``label: null``).
3. client ``{"type": "stop"}``; server: the last predictions, a ``summary``, close 1000.

Any error: ``{"type": "error", "code", "message"}`` then a close code that fits (1003
unsupported data, 1007 invalid payload, 1008 policy violation, 1009 message too big, 1013 try
again later, 1011 only for faults of the server itself). The state of a stream lives in
:class:`app.streaming.StreamSession`; this handler only moves bytes and messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import metrics
from app.labels import LABELS
from app.registry import ModelRegistry, ServedModel, UnknownModelError
from app.settings import Settings
from app.streaming import (
    NonFiniteStreamError,
    PartialFrameError,
    PredictionTrack,
    StreamConfigError,
    StreamError,
    StreamSession,
    StreamTooLongError,
    UnsupportedEncodingError,
    Window,
    window_features,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["streaming"])

# WebSocket close codes (RFC 6455, section 7.4.1).
NORMAL: Final[int] = 1000
UNSUPPORTED_DATA: Final[int] = 1003
INVALID_PAYLOAD: Final[int] = 1007
POLICY_VIOLATION: Final[int] = 1008
MESSAGE_TOO_BIG: Final[int] = 1009
INTERNAL_ERROR: Final[int] = 1011
TRY_AGAIN_LATER: Final[int] = 1013

STREAM_ERROR_CLOSE: Final[dict[type[StreamError], int]] = {
    UnsupportedEncodingError: UNSUPPORTED_DATA,
    StreamConfigError: INVALID_PAYLOAD,
    PartialFrameError: INVALID_PAYLOAD,
    NonFiniteStreamError: INVALID_PAYLOAD,
    StreamTooLongError: POLICY_VIOLATION,
}


class ProtocolError(Exception):
    """Ends a session with an ``error`` message and ``close_code``."""

    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code

    @classmethod
    def from_stream_error(cls, e: StreamError) -> ProtocolError:
        close = next(c for kind, c in STREAM_ERROR_CLOSE.items() if isinstance(e, kind))
        return cls(e.code, str(e), close)


class StreamSlots:
    """Counts the live sessions of one app against ``stream_max_sessions``."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    def acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


def _slots(app: FastAPI) -> StreamSlots:
    slots = getattr(app.state, "stream_slots", None)
    if slots is None:
        slots = app.state.stream_slots = StreamSlots(app.state.settings.stream_max_sessions)
    return slots


@dataclass
class Limits:
    """The server-side limits of one session, from the app settings."""

    max_frame_bytes: int
    idle_timeout_s: float
    deadline: float  # time.monotonic() after which the session is too long
    max_session_s: float

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise ProtocolError(
                "session_too_long",
                f"the session passed its {self.max_session_s:g} s limit: start a new one",
                POLICY_VIOLATION,
            )

    def receive_timeout_s(self) -> float:
        self.check_deadline()
        return min(self.idle_timeout_s, self.deadline - time.monotonic())


@router.websocket("/ws/stream")
@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    await websocket.accept()
    slots = _slots(websocket.app)
    if not slots.acquire():
        await _fail(
            websocket,
            ProtocolError(
                "too_many_sessions",
                f"the server is at its limit of {slots.limit} streams: retry later",
                TRY_AGAIN_LATER,
            ),
        )
        return
    metrics.ACTIVE_STREAMS.inc()
    try:
        await _serve(websocket)
    except ProtocolError as e:
        await _fail(websocket, e)
    except WebSocketDisconnect:
        pass  # the client left; nothing to answer
    except Exception:
        log.exception("stream failed")
        await _fail(websocket, ProtocolError("internal_error", "the server failed", INTERNAL_ERROR))
    finally:
        slots.release()
        metrics.ACTIVE_STREAMS.dec()


async def _serve(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    limits = Limits(
        max_frame_bytes=settings.stream_max_frame_bytes,
        idle_timeout_s=settings.stream_idle_timeout_s,
        deadline=time.monotonic() + settings.stream_max_session_s,
        max_session_s=settings.stream_max_session_s,
    )
    start = await _receive_start(websocket, limits)
    served, session = _open_session(websocket.app, start, settings)
    session_id = uuid.uuid4().hex
    track = PredictionTrack(session.hop_s)
    name = served.key
    await websocket.send_json(
        {
            "type": "ready",
            "session_id": session_id,
            "model": name,
            "model_name": served.metadata.name,
            "model_version": served.metadata.version,
            "labels": list(LABELS),
            "sample_rate": session.sample_rate,
            "encoding": session.encoding,
            "channels": session.channels,
            "model_sample_rate": session.model_rate,
            "hop_s": session.hop_s,
            "window_s": session.window_s,
            "max_frame_bytes": limits.max_frame_bytes,
        }
    )
    log.info("stream started", extra={"session_id": session_id, "model": name})
    while True:
        received_at, message = await _receive(websocket, limits)
        if message.get("bytes") is not None:
            before_s = session.duration_s
            windows = _guarded(session.push, message["bytes"])
            metrics.AUDIO_SECONDS.labels(source="stream").inc(session.duration_s - before_s)
            await _predict(websocket, served, track, windows, received_at, final=False)
            continue
        kind = _parse(message.get("text") or "").get("type")
        if kind == "stop":
            windows = _guarded(session.flush)
            await _predict(websocket, served, track, windows, received_at, final=True)
            await websocket.send_json(_summary(session_id, name, session, track))
            await websocket.close(code=NORMAL)
            log.info("stream finished", extra={"session_id": session_id, "windows": track.windows})
            return
        if kind == "start":
            raise ProtocolError(
                "already_started", "this session has started already", POLICY_VIOLATION
            )
        raise _unknown_type(kind)


async def _receive(websocket: WebSocket, limits: Limits) -> tuple[float, Mapping[str, Any]]:
    """The next text or binary frame within the idle timeout, and when it arrived."""
    try:
        message = await asyncio.wait_for(websocket.receive(), limits.receive_timeout_s())
    except TimeoutError as e:
        limits.check_deadline()
        raise ProtocolError(
            "idle_timeout",
            f"nothing received for {limits.idle_timeout_s:g} s: send audio or stop",
            POLICY_VIOLATION,
        ) from e
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    payload = message.get("bytes") if message.get("bytes") is not None else message.get("text")
    size = len(payload.encode() if isinstance(payload, str) else payload or b"")
    if size > limits.max_frame_bytes:
        raise ProtocolError(
            "frame_too_large",
            f"a frame of {size} bytes is over the {limits.max_frame_bytes} byte limit: "
            "send smaller chunks",
            MESSAGE_TOO_BIG,
        )
    return time.perf_counter(), message


async def _receive_start(websocket: WebSocket, limits: Limits) -> dict[str, Any]:
    _, message = await _receive(websocket, limits)
    if message.get("bytes") is not None:
        raise ProtocolError(
            "not_started", "send a JSON start message before any audio", POLICY_VIOLATION
        )
    start = _parse(message.get("text") or "")
    kind = start.get("type")
    if kind == "start":
        return start
    if kind == "stop":
        raise ProtocolError("not_started", "stop before start: nothing to stop", POLICY_VIOLATION)
    raise _unknown_type(kind)


def _open_session(
    app: FastAPI, start: dict[str, Any], settings: Settings
) -> tuple[ServedModel, StreamSession]:
    registry: ModelRegistry = app.state.registry
    if not registry.ready:
        reason = registry.not_ready_reason or "the models are not loaded"
        raise ProtocolError("not_ready", f"{reason}: retry later", TRY_AGAIN_LATER)
    model = start.get("model")
    if model is not None and not isinstance(model, str):
        raise ProtocolError("invalid_start", "model must be a string", INVALID_PAYLOAD)
    try:
        served = registry.get(model)
    except UnknownModelError as e:
        raise ProtocolError("unknown_model", str(e), INVALID_PAYLOAD) from e
    config = served.metadata.feature_config
    if "sample_rate" not in start:
        raise ProtocolError(
            "invalid_start", "start needs sample_rate (Hz) of the audio you send", INVALID_PAYLOAD
        )
    session = _guarded(
        StreamSession,
        config,
        hop_s=start.get("hop_s", settings.stream_hop_s),
        window_s=start.get("window_s", config.window_samples / config.sample_rate),
        sample_rate=start["sample_rate"],
        encoding=start.get("encoding", "pcm_s16le"),
        channels=start.get("channels", 1),
        max_duration_s=settings.stream_max_session_s,
    )
    return served, session


def _guarded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a session call, turning the session's errors into protocol errors."""
    try:
        return call(*args, **kwargs)
    except StreamError as e:
        raise ProtocolError.from_stream_error(e) from e


async def _predict(
    websocket: WebSocket,
    served: ServedModel,
    track: PredictionTrack,
    windows: list[Window],
    received_at: float,
    final: bool,
) -> None:
    """Classify the speech windows in one batch and send one message per window, in order."""
    speech = [w for w in windows if w.speech]
    probs: dict[int, np.ndarray] = {}
    if speech:
        config = served.feature_config
        features = await asyncio.to_thread(window_features, speech, config)
        rows = await served.predict(features)
        probs = {w.index: np.asarray(row) for w, row in zip(speech, rows, strict=True)}
    for window in windows:
        p = probs.get(window.index)
        smoothed = track.add(p)
        if p is not None:
            metrics.PREDICTIONS.labels(model=served.key, label=LABELS[int(np.argmax(p))]).inc()
        await websocket.send_json(
            {
                "type": "prediction",
                "index": window.index,
                "start_s": round(window.start_s, 6),
                "end_s": round(window.end_s, 6),
                "speech": window.speech,
                "label": None if p is None else LABELS[int(np.argmax(p))],
                "confidence": None if p is None else float(np.max(p)),
                "probabilities": _by_label(p),
                "smoothed": _by_label(smoothed),
                "smoothed_label": None if smoothed is None else LABELS[int(np.argmax(smoothed))],
                "level_dbfs": None
                if math.isinf(window.level_dbfs)
                else round(window.level_dbfs, 2),
                "active_fraction": round(window.active_fraction, 4),
                "padded": window.padded_samples > 0,
                "final": final,
                "latency_ms": round((time.perf_counter() - received_at) * 1000.0, 3),
            }
        )


def _summary(
    session_id: str, model: str, session: StreamSession, track: PredictionTrack
) -> dict[str, Any]:
    mean = track.mean
    return {
        "type": "summary",
        "session_id": session_id,
        "model": model,
        "duration_s": round(session.duration_s, 6),
        "windows": track.windows,
        "speech_windows": track.speech_windows,
        "label": None if mean is None else LABELS[int(np.argmax(mean))],
        "confidence": None if mean is None else float(np.max(mean)),
        "probabilities": _by_label(mean),
    }


def _by_label(p: np.ndarray | None) -> dict[str, float] | None:
    return None if p is None else {label: float(v) for label, v in zip(LABELS, p, strict=True)}


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError(
            "bad_json", f"text frames must be JSON objects: {e.msg}", INVALID_PAYLOAD
        ) from e
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "text frames must be JSON objects", INVALID_PAYLOAD)
    return data


def _unknown_type(kind: object) -> ProtocolError:
    return ProtocolError(
        "unknown_type",
        f"unknown message type {kind!r}: send 'start', binary audio, then 'stop'",
        UNSUPPORTED_DATA,
    )


async def _fail(websocket: WebSocket, error: ProtocolError) -> None:
    """Tell the client what went wrong and close; a client that already left is fine."""
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    log.info("stream error", extra={"code": error.code, "close_code": error.close_code})
    try:
        await websocket.send_json({"type": "error", "code": error.code, "message": error.message})
        await websocket.close(code=error.close_code)
    except (WebSocketDisconnect, RuntimeError):
        pass
