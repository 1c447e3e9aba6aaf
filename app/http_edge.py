"""The server's edge below the ASGI app: uvicorn's HTTP protocol with request-header limits.

uvicorn (0.54, httptools) starts no timer on a new connection and stops its keep-alive timer
when the first byte of a request arrives, so a socket that never sends, or sends half a request
line, stays open for good; nor does it bound the size of the headers. :class:`EdgeHttpProtocol`
adds one deadline for the request line and headers of each request (from the connection's
start or the request's first byte) and a cap on their size, and answers its own errors with the
service's JSON error body: 400 for bytes that are not HTTP (uvicorn sends plain text), 408 when
the deadline passes mid-request, 431 for headers over the cap. A connection that sent nothing
is closed silently, as a keep-alive timeout closes it. Upload bodies have their own deadline in
:mod:`app.api.upload`. A WebSocket upgrade keeps what is left of its request's deadline until
the app accepts it (:class:`app.ws_edge.EdgeWebSocketProtocol`).

uvicorn also lets a connection outlive every timer once the app has answered without reading
the body it was sent (a 200 ``/healthz`` with a ``Content-Length`` of a terabyte, a 404, a 413
or 415 from the headers alone): it discards the body as it arrives, and each byte restarts the
keep-alive timer. Such a connection is closed here instead, after a lingering close as nginx
does it: the answer is sent, the write side shut, and what still arrives is read and dropped
for at most :data:`LINGER_S` and :data:`LINGER_MAX_BYTES` (closing at once would let the
client's next bytes reset the connection before it read the answer). Bytes that start no
request (blank lines) between requests put the connection under the header deadline, so
trickling them cannot hold it open either.

The cap counts the request's own header bytes only, never the body of the request before it
on the same connection (pipelining). Every byte of a chunk read while a request's headers are
open is theirs, except in the chunk where the request begins after the end of the one before
(httptools does not say where in the chunk that is): there, what httptools reports of the new
request counts (the request line as it arrives, each header once complete), so a header still
arriving at the end of that chunk is counted from the next chunk on.

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


# "METHOD SP ... SP HTTP/1.1 CRLF" and the blank line, besides the method and the URL, and
# ": " + CRLF around each header: what httptools does not report.
REQUEST_LINE_EXTRA_BYTES: Final[int] = 1 + 11 + 2
HEADER_EXTRA_BYTES: Final[int] = 4

# The lingering close after an answer to a request whose body was not read.
LINGER_S: Final[float] = 2.0
LINGER_MAX_BYTES: Final[int] = 1024 * 1024


@dataclass(frozen=True)
class HeaderLimits:
    timeout_s: float
    max_bytes: int


class _Refused(Exception):
    """Raised in a parser callback to stop httptools once the request has been refused."""


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
        self._reported_bytes = 0  # request line and headers httptools has reported
        self._raw_bytes = 0  # bytes of later chunks that arrived while the headers were open
        self._began_in_chunk = False
        self._chunk_shared = False  # a request's bytes came before the new one in this chunk
        self._completed_in_chunk = False
        self._request_started = False
        self._refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered_bytes = 0
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the connection closes after the response in flight; nothing more is read
        if self._linger_timer is not None:
            self._lingered_bytes += len(data)  # the unread body's tail: dropped
            if self._lingered_bytes > LINGER_MAX_BYTES:
                self.transport.close()
            return
        self._began_in_chunk = self._chunk_shared = self._completed_in_chunk = False
        super().data_received(data)
        if self.transport.is_closing() or self._refused:
            return
        if self._header_timer is None and self._between_requests():
            self._arm_header_deadline()  # bytes that began no request (blank lines)
        if self._header_timer is None:
            return  # not inside a request's headers (they completed in this chunk, or earlier)
        if not (self._began_in_chunk and self._chunk_shared):
            self._raw_bytes += len(data)  # the whole chunk is this request's line and headers
            self._refuse_if_over(self._raw_bytes)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_started = True
        self._began_in_chunk = True
        # A request that ended earlier in this chunk had its last bytes here.
        self._chunk_shared = self._completed_in_chunk
        self._reported_bytes = self._raw_bytes = 0
        if self._header_timer is None:
            self._arm_header_deadline()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._completed_in_chunk = True

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            super().on_response_complete()
            return
        # Answered before the request's body was read to its end: a lingering close.
        self.server_state.total_requests += 1
        self._unset_keepalive_if_required()
        self._disarm_header_deadline()
        metrics.HTTP_EDGE_ERRORS.labels(code="unread_body").inc()
        if self.transport.can_write_eof():
            self.transport.write_eof()  # after what is buffered: the answer, then FIN
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()

    def _between_requests(self) -> bool:
        """No request is open on the connection and none is waiting to start."""
        idle = self.cycle is None or self.cycle.response_complete
        return idle and not self.pipeline and self.timeout_keep_alive_task is None

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._reported_bytes += len(url)
        self._stop_if_over(self._reported_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._reported_bytes += len(name) + len(value) + HEADER_EXTRA_BYTES
        self._stop_if_over(self._reported_bytes)

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        method = self.parser.get_method()
        self._stop_if_over(self._reported_bytes + len(method) + REQUEST_LINE_EXTRA_BYTES)
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        deadline = self.loop.time() + self._limits.timeout_s
        if self._header_timer is not None:
            deadline = self._header_timer.when()
        self._disarm_header_deadline()
        super().handle_websocket_upgrade()
        from app.ws_edge import EdgeWebSocketProtocol  # it imports this module

        protocol = self.transport.get_protocol()
        if isinstance(protocol, EdgeWebSocketProtocol):
            protocol.set_handshake_deadline(deadline)

    def send_400_response(self, msg: str) -> None:
        self._disarm_header_deadline()
        if self._refused or self.transport.is_closing():
            return  # httptools stopped because a callback refused the request: answered
        metrics.HTTP_EDGE_ERRORS.labels(code="bad_request").inc()
        self.transport.write(
            error_bytes(400, "bad_request", msg, self.server_state.default_headers)
        )
        self.transport.close()

    def _refuse_if_over(self, size_bytes: int) -> bool:
        """Refuse the request (431) when its headers are over the cap; whether it was."""
        if size_bytes <= self._limits.max_bytes:
            return False
        self._refuse(
            431,
            "headers_too_large",
            f"the request line, headers and trailers are over {self._limits.max_bytes} bytes",
        )
        return True

    def _stop_if_over(self, size_bytes: int) -> None:
        """:meth:`_refuse_if_over` inside a parser callback: stops httptools if refused (its
        callback error reaches :meth:`send_400_response`, which then stays silent)."""
        if self._refuse_if_over(size_bytes):
            raise _Refused

    def _arm_header_deadline(self) -> None:
        self._header_timer = self.loop.call_later(self._limits.timeout_s, self._on_header_timeout)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._request_started = False

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refused:
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
        """Answer ``status`` and close; while the response to an earlier pipelined request is
        still being written, let it finish first (uvicorn closes after it) instead of cutting
        it off: the client gets that answer, and nothing writes to a closed transport."""
        self._disarm_header_deadline()
        self._refused = True
        metrics.HTTP_EDGE_ERRORS.labels(code=code).inc()
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not cycle.response_started:
            # Trailers of a chunked body the app is still reading (httptools reports them as
            # headers): answer now, and end the app's read as a disconnect.
            self.transport.write(
                error_bytes(status, code, message, self.server_state.default_headers)
            )
            self.transport.close()
            cycle.disconnected = True
            cycle.message_event.set()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self.transport.write(error_bytes(status, code, message, self.server_state.default_headers))
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
