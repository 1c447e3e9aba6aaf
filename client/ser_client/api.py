"""The service from Python: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

::

    from ser_client import Client

    with Client("http://127.0.0.1:8000") as client:
        result = client.predict("clip.wav")
        print(result.label, result.confidence)

    from ser_client import AsyncClient, file_source

    async with AsyncClient("http://127.0.0.1:8000") as client:
        source = file_source("clip.wav", realtime=False)
        async for event in client.stream(source):
            print(event)  # StreamPrediction ..., then one StreamSummary

Errors the service answers with (4xx/5xx, or a stream's ``error`` message) raise
:class:`ser_client.results.ServiceError` carrying its status or close code, code and message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ser_client.results import Prediction, ServiceError, StreamPrediction, StreamSummary
from ser_client.sources import AudioSource

DEFAULT_URL: Final[str] = os.environ.get("SER_URL", "http://127.0.0.1:8000")
DEFAULT_TIMEOUT_S: Final[float] = 120.0  # a 10-minute upload takes seconds to decode
StreamEvent = StreamPrediction | StreamSummary
AudioInput = str | os.PathLike[str] | bytes


def _upload(audio: AudioInput) -> dict[str, tuple[str, bytes]]:
    if isinstance(audio, bytes):
        return {"file": ("audio", audio)}
    path = Path(audio)
    return {"file": (path.name, path.read_bytes())}


def _params(model: str | None, segments: str | None = None) -> dict[str, str]:
    params = {} if model is None else {"model": model}
    return params if segments is None else {**params, "segments": segments}


def _checked(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code != 200:
        raise ServiceError.from_body(response.status_code, body)
    return body


def stream_url(url: str) -> str:
    """The WebSocket URL of the service at ``url`` (``http://h:p`` -> ``ws://h:p/ws/stream``)."""
    base = url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            base = ws + base[len(http) :]
    return base + "/ws/stream"


class Client:
    """Blocking calls to the service at ``url``; use it as a context manager, or call close()."""

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def predict(
        self, audio: AudioInput, model: str | None = None, segments: str | None = None
    ) -> Prediction:
        """Classify a recording: a path (WAV, FLAC, OGG, MP3, M4A, WebM) or its bytes;
        ``segments="utterances"`` for a result per utterance instead of per window."""
        params = _params(model, segments)
        response = self._http.post("/predict", params=params, files=_upload(audio))
        return Prediction.from_json(_checked(response))

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``: the loaded models and the default."""
        body: dict[str, Any] = _checked(self._http.get("/v1/models"))
        return body

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient:
    """The same calls for asyncio, plus :meth:`stream`."""

    def __init__(self, url: str = DEFAULT_URL, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, trust_env=False)

    async def predict(
        self, audio: AudioInput, model: str | None = None, segments: str | None = None
    ) -> Prediction:
        """Classify a recording: a path or its bytes (``segments`` as :meth:`Client.predict`)."""
        files = await asyncio.to_thread(_upload, audio)
        params = _params(model, segments)
        response = await self._http.post("/predict", params=params, files=files)
        return Prediction.from_json(_checked(response))

    async def models(self) -> dict[str, Any]:
        body: dict[str, Any] = _checked(await self._http.get("/v1/models"))
        return body

    async def stream(
        self, source: AudioSource, model: str | None = None, hop_s: float | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Send ``source``'s audio over the WebSocket; yield each window's
        :class:`StreamPrediction` as it arrives, then the :class:`StreamSummary`.

        Raises:
            ServiceError: the service sent an error message (``status`` is its close code) or
                closed the stream without a summary.
        """
        start: dict[str, Any] = {
            "type": "start",
            "sample_rate": source.sample_rate,
            "channels": source.channels,
            "encoding": "pcm_s16le",
        }
        if model is not None:
            start["model"] = model
        if hop_s is not None:
            start["hop_s"] = hop_s
        try:
            socket = await connect(
                stream_url(self.url), open_timeout=self.timeout_s, max_size=2**22
            )
        except InvalidStatus as e:  # refused before the upgrade (an HTTP answer)
            raise _handshake_refusal(e) from e
        async with socket:
            await socket.send(json.dumps(start))
            await _expect(socket, "ready")
            sender = asyncio.create_task(_send_all(socket, source))
            try:
                async for event in _events(socket):
                    yield event
                    if isinstance(event, StreamSummary):
                        return
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await sender

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _expect(socket: Any, kind: str) -> dict[str, Any]:
    """The next message, which must be a ``kind`` one; an error message's close code is the
    status of the :class:`ServiceError` it becomes."""
    message: dict[str, Any] = json.loads(await socket.recv())
    if message.get("type") == "error":
        await socket.wait_closed()
        code = socket.close_code or 1006
        raise ServiceError(code, str(message.get("code")), str(message.get("message")))
    if message.get("type") != kind:
        raise ServiceError(0, "protocol_error", f"expected a {kind!r} message, got {message}")
    return message


def _handshake_refusal(error: InvalidStatus) -> ServiceError:
    """The service's answer to a refused upgrade (403 origin, 404 path, ...) as an error."""
    response = error.response
    try:
        body: Any = json.loads(response.body or b"")
    except ValueError:
        body = (response.body or b"").decode("utf-8", "replace")
    return ServiceError.from_body(response.status_code, body)


async def _send_all(socket: Any, source: AudioSource) -> None:
    async for chunk in source.chunks():
        await socket.send(chunk)
    await socket.send(json.dumps({"type": "stop"}))


async def _events(socket: Any) -> AsyncIterator[StreamEvent]:
    try:
        async for text in socket:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "prediction":
                yield StreamPrediction.from_json(message)
            elif kind == "summary":
                yield StreamSummary.from_json(message)
                return
            elif kind == "error":
                await socket.wait_closed()
                code = socket.close_code or 0
                raise ServiceError(code, str(message.get("code")), str(message.get("message")))
    except ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else 1006
        raise ServiceError(code, "closed", f"the stream closed before its summary: {e}") from e
    code = socket.close_code or 1006
    raise ServiceError(code, "closed", "the stream closed before its summary")
