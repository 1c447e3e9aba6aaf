"""The server's edge below the ASGI app: uvicorn's HTTP protocol with request-header limits.

uvicorn (0.54, httptools) starts no timer on a new connection and stops its keep-alive timer
when the first byte of a request arrives, so a socket that never sends, or sends half a request
line, stays open for good; nor does it bound the size of the headers. :class:`EdgeHttpProtocol`
adds one deadline for the request line and headers of each request (from the connection's
start or the request's first byte) and a cap on their size, and answers its own errors with the
service's JSON error body: 400 for bytes that are not HTTP (uvicorn sends plain text), 408 when
the deadline passes mid-request, 431 for headers over the cap. A connection that sent nothing
is closed silently, as a keep-alive timeout closes it. Upload bodies have their own deadline in
:mod:`app.api.upload`.

``python -m app`` passes the class to uvicorn (``http=``); its limits come from the ``SER_*``
settings of the process. :class:`InvalidUtf8LogFilter` turns uvicorn's error-level traceback for
a client's invalid UTF-8 text frame into one warning line: a client's fault, not a server fault.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app import metrics
from app.errors import ErrorDetail, ErrorResponse
from app.settings import Settings

INVALID_UTF8_MESSAGE: Final[str] = "Invalid UTF-8 sequence received from client"


@dataclass(frozen=True)
class HeaderLimits:
    timeout_s: float
    max_bytes: int


@functools.cache
def header_limits() -> HeaderLimits:
    """The limits of this process, read once from its ``SER_*`` environment."""
    settings = Settings()
    return HeaderLimits(settings.http_header_timeout_s, settings.http_max_header_bytes)


def error_bytes(
    status: int, code: str, message: str, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """A complete HTTP/1.1 response with the JSON error body, closing the connection."""
    body = ErrorResponse(error=ErrorDetail(code=code, message=message)).model_dump_json(
        exclude_none=True
    )
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [
        b"content-type: application/json\r\n",
        f"content-length: {len(body)}\r\n".encode(),
        b"connection: close\r\n\r\n",
    ]
    return b"".join(head) + body.encode()


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size cap on each request's headers."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._limits = header_limits()
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._request_started = False
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is None or self.transport.is_closing():
            return  # not inside a request's headers (they completed in this chunk, or earlier)
        self._header_bytes += len(data)
        if self._header_bytes > self._limits.max_bytes:
            self._refuse(
                431,
                "headers_too_large",
                f"the request line and headers are over {self._limits.max_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_started = True
        if self._header_timer is None:
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm_header_deadline()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_deadline()
        metrics.HTTP_EDGE_ERRORS.labels(code="bad_request").inc()
        self.transport.write(
            error_bytes(400, "bad_request", msg, self.server_state.default_headers)
        )
        self.transport.close()

    def _arm_header_deadline(self) -> None:
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self._limits.timeout_s, self._on_header_timeout)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._request_started = False

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if not self._request_started:
            metrics.HTTP_EDGE_ERRORS.labels(code="idle_timeout").inc()
            self.transport.close()  # nothing sent: close quietly, like a keep-alive timeout
            return
        self._refuse(
            408,
            "header_timeout",
            f"the request line and headers did not arrive within {self._limits.timeout_s:g} s",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm_header_deadline()
        metrics.HTTP_EDGE_ERRORS.labels(code=code).inc()
        if self.cycle is None or self.cycle.response_complete:  # not inside another response
            self.transport.write(
                error_bytes(status, code, message, self.server_state.default_headers)
            )
        self.transport.close()


class InvalidUtf8LogFilter(logging.Filter):
    """Log uvicorn's "Invalid UTF-8 sequence received from client" as one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING and record.getMessage().startswith(
            INVALID_UTF8_MESSAGE
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def install_log_filter() -> None:
    """Put :class:`InvalidUtf8LogFilter` on uvicorn's logger, once."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, InvalidUtf8LogFilter) for f in logger.filters):
        logger.addFilter(InvalidUtf8LogFilter())
