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
:class:`app.live.LiveStream` (audio to classified windows); this handler only moves bytes and
messages.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import APIRouter, FastAPI, WebSocket
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import metrics
from app.api.admission import AdmissionRefused, StreamAdmission, client_host
from app.api.security import origin_allowed
from app.api.stream_messages import (
    ErrorMessage,
    PredictionMessage,
    ProtocolError,
    ReadyMessage,
    StartMessage,
    SummaryMessage,
    parse_control,
    parse_start,
)
from app.audio import AudioError
from app.error_codes import NORMAL, http_status
from app.errors import UpgradeRequiredError, clipped, error_response
from app.labels import LABELS
from app.live import ClassifiedWindow, LiveStream
from app.registry import ModelRegistry, ModelsNotReady, UnknownModelError
from app.settings import Settings
from app.streaming import StreamError, StreamSession
from app.workpool import LaneFullError, WorkLane, WorkPools

log = logging.getLogger(__name__)
router = APIRouter(tags=["streaming"])

# Close codes of a connection the WebSocket layer (uvicorn + websockets) ended because of a
# frame: protocol error, invalid UTF-8 in a text frame, a frame over --ws-max-size.
FRAME_REFUSED_CLOSES: Final[frozenset[int]] = frozenset({1002, 1007, 1009})


@dataclass
class Limits:
    """The server-side limits of one connection, from the app settings."""

    max_frame_bytes: int
    max_control_bytes: int
    idle_timeout_s: float
    start_timeout_s: float
    max_session_s: float
    min_audio_rate: float
    min_audio_grace_s: float
    connected_at: float = field(default_factory=time.monotonic)
    started: bool = False
    started_at: float = 0.0  # time.monotonic() of the start
    audio_s: float = 0.0  # audio the session has carried so far

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_frame_bytes=settings.stream_max_frame_bytes,
            max_control_bytes=settings.stream_max_control_bytes,
            idle_timeout_s=settings.stream_idle_timeout_s,
            start_timeout_s=settings.stream_start_timeout_s,
            max_session_s=settings.stream_max_session_s,
            min_audio_rate=settings.stream_min_audio_rate,
            min_audio_grace_s=settings.stream_min_audio_grace_s,
        )

    def start(self) -> None:
        self.started, self.started_at = True, time.monotonic()

    @property
    def deadline(self) -> float:
        """time.monotonic() by which a start must arrive, or after which the session ends."""
        return self.connected_at + (self.max_session_s if self.started else self.start_timeout_s)

    def deadline_error(self) -> ProtocolError:
        if not self.started:
            return ProtocolError(
                "start_timeout", f"no start message within {self.start_timeout_s:g} s of connecting"
            )
        return ProtocolError(
            "session_too_long",
            f"the session passed its {self.max_session_s:g} s limit: start a new one",
        )

    def check_deadline(self) -> None:
        if time.monotonic() >= self.deadline:
            raise self.deadline_error()

    @property
    def audio_deadline(self) -> float:
        """time.monotonic() by which more audio must arrive to keep the session at
        ``min_audio_rate`` of real time on average (after the grace period); inf without
        the rule or before the start."""
        if not self.started or self.min_audio_rate <= 0:
            return math.inf
        return self.started_at + self.min_audio_grace_s + self.audio_s / self.min_audio_rate

    def audio_deadline_error(self) -> ProtocolError:
        elapsed_s = time.monotonic() - self.started_at
        return ProtocolError(
            "audio_too_slow",
            f"{self.audio_s:.1f} s of audio in {elapsed_s:.1f} s: a session must carry audio at "
            f"{self.min_audio_rate:g}x real time or more after its first "
            f"{self.min_audio_grace_s:g} s (stop and start a new session after a pause)",
        )


@router.get("/ws/stream", include_in_schema=False)
@router.get("/v1/stream", include_in_schema=False)
async def plain_request() -> None:
    raise UpgradeRequiredError(
        "this is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket); "
        "docs/api.md describes the protocol"
    )


async def _no_websocket_route(websocket: WebSocket) -> None:
    """A WebSocket handshake to a path without a WebSocket route: 404 with the JSON body (the
    default is a 403 with none)."""
    await websocket.send_denial_response(
        error_response(
            http_status("no_websocket_route"),
            "no_websocket_route",
            f"no WebSocket at {clipped(websocket.url.path)}: stream at /ws/stream",
        )
    )


def install_websocket_fallback(app: FastAPI) -> None:
    """Answer WebSocket handshakes that match no route with :func:`_no_websocket_route`."""
    default = app.router.default

    async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _no_websocket_route(WebSocket(scope, receive, send))
            return
        await default(scope, receive, send)

    app.router.default = fallback


@router.websocket("/ws/stream")
@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host", ""), settings.allowed_origin_set):
        await _refuse_origin(websocket, origin or "")
        return
    await websocket.accept()
    admission: StreamAdmission = websocket.app.state.stream_admission
    client = client_host(websocket.scope)
    try:
        admission.connect(client)
    except AdmissionRefused as e:
        await _fail(websocket, ProtocolError(e.code, e.message))
        return
    try:
        await _run(websocket, admission)
    except ProtocolError as e:
        await _fail(websocket, e)
    except WebSocketDisconnect as e:
        if e.code in FRAME_REFUSED_CLOSES:  # the WebSocket layer refused a frame and closed
            metrics.STREAM_ERRORS.labels(code="invalid_frame").inc()
    except Exception:
        log.exception("stream failed")
        await _fail(websocket, ProtocolError("internal_error", "the server failed"))
    finally:
        admission.disconnect(client)


async def _run(websocket: WebSocket, admission: StreamAdmission) -> None:
    """Wait for a valid start (within the start deadline), then hold a slot while serving."""
    settings: Settings = websocket.app.state.settings
    limits = Limits.from_settings(settings)
    start = await _receive_start(websocket, limits)
    live = _open_stream(websocket.app, start, settings)
    limits.max_frame_bytes = min(limits.max_frame_bytes, live.session.max_frame_bytes)
    lane = _stream_lane(websocket.app)
    try:
        admission.take_slot()
    except AdmissionRefused as e:
        raise ProtocolError(e.code, e.message) from e
    limits.start()
    metrics.ACTIVE_STREAMS.inc()
    try:
        await _serve(websocket, limits, live, lane)
    finally:
        admission.release_slot()
        metrics.ACTIVE_STREAMS.dec()


async def _serve(websocket: WebSocket, limits: Limits, live: LiveStream, lane: WorkLane) -> None:
    session_id = uuid.uuid4().hex
    session, served = live.session, live.model
    ready = ReadyMessage(
        session_id=session_id,
        model=served.key,
        model_name=served.metadata.name,
        model_version=served.metadata.version,
        labels=list(LABELS),
        sample_rate=session.sample_rate,
        encoding=session.encoding,
        channels=session.channels,
        model_sample_rate=session.model_rate,
        hop_s=session.hop_s,
        window_s=session.window_s,
        max_frame_bytes=limits.max_frame_bytes,
    )
    await _send(websocket, ready)
    log.info("stream started", extra={"session_id": session_id, "model": served.key})
    while True:
        received_at, message = await _receive(websocket, limits)
        if message.get("bytes") is not None:
            # Resampling, features and inference in one hand-off to the stream lane.
            results = await _in_lane(lane, live.push, message["bytes"])
            limits.audio_s = session.duration_s
            await _send_predictions(websocket, results, received_at, final=False)
            continue
        kind = parse_control(message.get("text") or "", limits.max_control_bytes).get("type")
        if kind == "stop":
            results = await _in_lane(lane, live.finish)
            await _send_predictions(websocket, results, received_at, final=True)
            totals = live.totals
            await _send(websocket, SummaryMessage.of(session_id, served.key, totals))
            await websocket.close(code=NORMAL)
            log.info("stream finished", extra={"session_id": session_id, "windows": totals.windows})
            return
        if kind == "start":
            raise ProtocolError("already_started", "this session has started already")
        raise _unknown_type(kind)


async def _receive(websocket: WebSocket, limits: Limits) -> tuple[float, Mapping[str, Any]]:
    """The next text or binary frame within the idle timeout, before the deadline and before
    the session falls below its least audio rate, and when it arrived."""
    limits.check_deadline()
    now = time.monotonic()
    if now >= limits.audio_deadline:
        raise limits.audio_deadline_error()
    to_deadline_s = limits.deadline - now
    to_audio_deadline_s = limits.audio_deadline - now
    try:
        message = await asyncio.wait_for(
            websocket.receive(), min(limits.idle_timeout_s, to_deadline_s, to_audio_deadline_s)
        )
    except TimeoutError as e:
        if to_audio_deadline_s <= min(limits.idle_timeout_s, to_deadline_s):
            raise limits.audio_deadline_error() from e
        if to_deadline_s <= limits.idle_timeout_s:  # the deadline, not the idle time, ran out
            raise limits.deadline_error() from e
        raise ProtocolError(
            "idle_timeout", f"nothing received for {limits.idle_timeout_s:g} s: send audio or stop"
        ) from e
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    payload = message.get("bytes")
    if payload is not None and len(payload) > limits.max_frame_bytes:
        raise ProtocolError(
            "frame_too_large",
            f"a frame of {len(payload)} bytes is over the {limits.max_frame_bytes} byte limit: "
            "send smaller chunks",
        )
    return time.perf_counter(), message  # text frames are bounded by parse_control


async def _receive_start(websocket: WebSocket, limits: Limits) -> StartMessage:
    _, message = await _receive(websocket, limits)
    if message.get("bytes") is not None:
        raise ProtocolError("not_started", "send a JSON start message before any audio")
    data = parse_control(message.get("text") or "", limits.max_control_bytes)
    kind = data.get("type")
    if kind == "start":
        return parse_start(data)
    if kind == "stop":
        raise ProtocolError("not_started", "stop before start: nothing to stop")
    raise _unknown_type(kind)


def _open_stream(app: FastAPI, start: StartMessage, settings: Settings) -> LiveStream:
    registry: ModelRegistry = app.state.registry
    try:
        registry.require_ready()
    except ModelsNotReady as e:
        raise ProtocolError("not_ready", f"{e}: retry later") from e
    try:
        served = registry.get(start.model)
    except UnknownModelError as e:
        raise ProtocolError("unknown_model", str(e)) from e
    config = served.metadata.feature_config
    session = _guarded(
        StreamSession,
        config,
        hop_s=settings.stream_hop_s if start.hop_s is None else start.hop_s,
        window_s=config.window_samples / config.sample_rate
        if start.window_s is None
        else start.window_s,
        sample_rate=start.sample_rate,
        encoding=start.encoding,
        channels=start.channels,
        max_duration_s=settings.stream_max_session_s,
        vad_threshold=settings.vad_threshold,
    )
    return LiveStream(session, served)


def _stream_lane(app: FastAPI) -> WorkLane:
    pools: WorkPools | None = app.state.work_pools  # made by the lifespan
    if pools is None:
        raise ProtocolError("not_ready", "the server is starting or shutting down: retry later")
    return pools.stream


async def _in_lane(lane: WorkLane, call: Any, *args: Any) -> list[ClassifiedWindow]:
    """``call(*args)`` (a :class:`LiveStream` step) on a stream-lane thread, its errors as
    protocol errors."""
    try:
        results: list[ClassifiedWindow] = await lane.run(_guarded, call, *args)
    except LaneFullError as e:  # not while every session waits for its own chunk
        raise ProtocolError("server_busy", str(e)) from e
    return results


def _guarded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a session call, turning the session's and the audio's errors into protocol errors
    (their codes are in the one table, :data:`app.error_codes.ERROR_CODES`)."""
    try:
        return call(*args, **kwargs)
    except (StreamError, AudioError) as e:
        raise ProtocolError(e.code, str(e)) from e


async def _send(websocket: WebSocket, message: BaseModel) -> None:
    # pydantic's own JSON encoder: one pass, no intermediate dict for json.dumps to walk.
    await websocket.send_text(message.model_dump_json())


async def _send_predictions(
    websocket: WebSocket, results: list[ClassifiedWindow], received_at: float, final: bool
) -> None:
    """One message per window, in order; latency counts from the chunk's arrival."""
    for result in results:
        latency_ms = (time.perf_counter() - received_at) * 1000.0
        await _send(websocket, PredictionMessage.of(result, final, latency_ms))


async def _refuse_origin(websocket: WebSocket, origin: str) -> None:
    """403 before the upgrade, with the JSON error body (a browser page shows its script only
    that the connection failed; the body is for whoever reads the network log)."""
    metrics.STREAM_ERRORS.labels(code="origin_not_allowed").inc()
    log.info("stream refused", extra={"code": "origin_not_allowed", "origin": origin[:200]})
    await websocket.send_denial_response(
        error_response(
            http_status("origin_not_allowed"),
            "origin_not_allowed",
            f"pages from {origin[:100]!r} may not stream to this server: open the service's own "
            "page, or add the origin to SER_ALLOWED_ORIGINS on a server you run",
        )
    )


def _unknown_type(kind: object) -> ProtocolError:
    return ProtocolError(
        "unknown_type", f"unknown message type {kind!r}: send 'start', binary audio, then 'stop'"
    )


async def _fail(websocket: WebSocket, error: ProtocolError) -> None:
    """Tell the client what went wrong and close; a client that already left is fine."""
    metrics.STREAM_ERRORS.labels(code=error.code).inc()
    if websocket.application_state == WebSocketState.DISCONNECTED:
        return
    log.info("stream error", extra={"code": error.code, "close_code": error.close_code})
    try:
        await _send(websocket, ErrorMessage(code=error.code, message=error.message))
        await websocket.close(code=error.close_code)
    except (WebSocketDisconnect, RuntimeError):
        pass
