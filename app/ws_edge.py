"""The server's WebSocket edge below the ASGI app: uvicorn's websockets (sans-I/O) protocol with
a handshake deadline, an answer to every refused handshake, and a bounded ping rate.

uvicorn (0.54) hands an upgrade request to the websockets library's ``ServerProtocol``, which
refuses a request line over 8 KiB (414) or a header line over 8 KiB or more than 128 headers
(431), but uvicorn only writes a response when a request was parsed: the refusal stays queued,
and the socket stays open for good (1,000 such sockets were all open after 60 s). Nor does a
timer run from the upgrade until the app accepts. And every ping is answered with a pong
written straight to the transport, with no back-pressure: a client that floods pings and never
reads grew the server by 265 MB in 12 s.

:class:`EdgeWebSocketProtocol` answers the library's refusal (with the service's JSON error
body) and closes; closes a connection whose handshake has not completed by the deadline the
HTTP edge hands over (:mod:`app.http_edge`: what is left of the request's header deadline); and
answers pings from a token bucket per connection (:data:`PING_BURST`, then
:data:`PING_RATE_PER_S`), closing a flooder with 1008. Once accepted, the session's own
deadlines (start, idle, length) are the app's (:mod:`app.api.stream`).
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

from app import metrics
from app.error_codes import POLICY_VIOLATION
from app.http_edge import error_bytes, header_limits

# Keep-alive pings from client libraries come every few seconds (websockets: 20 s); browsers
# send none. A burst for reconnect logic, then a steady few per second, is more than any of
# them needs, and bounds what a flooder makes the server write (pongs of 125 bytes at most).
PING_BURST: Final[int] = 16
PING_RATE_PER_S: Final[float] = 4.0


def _handshake_refusal(exc: Exception) -> tuple[int, str, str]:
    """Status, code and message for the websockets library's refusal ``exc``."""
    if isinstance(exc, RequestLineTooLong):
        return 414, "uri_too_long", f"the request line is over {MAX_LINE_LENGTH} bytes"
    if isinstance(exc, HeaderLineTooLong):
        return 431, "headers_too_large", f"a header line is over {MAX_LINE_LENGTH} bytes"
    if isinstance(exc, TooManyHeaders):
        return 431, "headers_too_large", f"the request has more than {MAX_NUM_HEADERS} headers"
    return 400, "bad_request", "not a valid WebSocket opening handshake"


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the edges described in the module docstring."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.set_handshake_deadline(self.loop.time() + header_limits().timeout_s)
        self._ping_tokens = float(PING_BURST)
        self._ping_clock = self.loop.time()

    def set_handshake_deadline(self, when: float) -> None:
        """Close the connection at loop time ``when`` unless the app has accepted it."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._handshake_timer = self.loop.call_at(when, self._on_handshake_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refusal = self.conn.handshake_exc
        if refusal is not None and not self.handshake_initiated:
            # websockets queued its own plain-text 414/431 (or nothing, for a request it could
            # not parse) that uvicorn never writes: answer in the service's shape instead.
            self._refuse(*_handshake_refusal(refusal))

    def handle_ping(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        now = self.loop.time()
        refill = (now - self._ping_clock) * PING_RATE_PER_S
        self._ping_tokens = min(float(PING_BURST), self._ping_tokens + refill)
        self._ping_clock = now
        if self._ping_tokens < 1.0:
            self._close_flood()
            return
        self._ping_tokens -= 1.0
        super().handle_ping()

    def _close_flood(self) -> None:
        metrics.STREAM_ERRORS.labels(code="ping_flood").inc()
        self.conn.fail(
            POLICY_VIOLATION,
            f"more than {PING_BURST} pings at once or {PING_RATE_PER_S:g} a second",
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        if self.handshake_complete or self.transport.is_closing():
            return
        if self.handshake_initiated:  # the app has the request but never answered it
            metrics.HTTP_EDGE_ERRORS.labels(code="header_timeout").inc()
            self.transport.close()
            return
        self._refuse(408, "header_timeout", "the WebSocket opening handshake did not complete")

    def _refuse(self, status: int, code: str, message: str) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        metrics.HTTP_EDGE_ERRORS.labels(code=code).inc()
        self.handshake_complete = True  # nothing more of the handshake will happen
        self.close_sent = True
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, code, message, self.default_headers))
            self.transport.close()
