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

Every frame costs the parser a few microseconds whatever it carries, and the library's
``max_size`` counts payload bytes only: empty continuation frames and unsolicited pongs, at
0.85 MB/s, held the event loop for 21 s (the whole service, every client). So every frame of
every kind spends a token of a second bucket (:data:`FRAME_BURST`, :data:`FRAME_RATE_PER_S`), a
message may have at most :data:`MAX_FRAGMENTS` fragments, and the bytes of one read are parsed
:data:`PARSE_SLICE_BYTES` at a time with the budget checked between slices: a flooder is
closed with 1008 after a few milliseconds of parsing, not after its whole backlog.
"""

from __future__ import annotations

import asyncio
from typing import Final

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import (
    HeaderLineTooLong,
    InvalidHeader,
    InvalidMethod,
    InvalidUpgrade,
    RequestLineTooLong,
    TooManyHeaders,
)
from websockets.frames import Frame
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request

from app import metrics
from app.error_codes import POLICY_VIOLATION
from app.http_edge import error_bytes, header_limits

# Keep-alive pings from client libraries come every few seconds (websockets: 20 s); browsers
# send none. A burst for reconnect logic, then a steady few per second, is more than any of
# them needs, and bounds what a flooder makes the server write (pongs of 125 bytes at most).
PING_BURST: Final[int] = 16
PING_RATE_PER_S: Final[float] = 4.0
# Frames of any kind. The page and the client send one frame per 0.1 s chunk; 20 ms chunks
# (50 a second) are the finest any capture API delivers. 250 a second after a burst of 500
# leaves them far below the budget and bounds a flooder's parse cost to ~1 ms a second.
FRAME_BURST: Final[int] = 500
FRAME_RATE_PER_S: Final[float] = 250.0
MAX_FRAGMENTS: Final[int] = 64  # no client library fragments an audio chunk into more
# One slice is at most ~680 six-byte frames, ~3 ms of parsing, between two budget checks.
PARSE_SLICE_BYTES: Final[int] = 4096


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; :meth:`take` spends one if there is one."""

    def __init__(self, burst: float, rate_per_s: float, now: float) -> None:
        self.burst, self.rate_per_s = burst, rate_per_s
        self.tokens, self.clock = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.clock) * self.rate_per_s)
        self.clock = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def _handshake_refusal(exc: Exception) -> tuple[int, str, str]:
    """Status, code and message for the websockets library's refusal ``exc``."""
    if isinstance(exc, RequestLineTooLong):
        return 414, "uri_too_long", f"the request line is over {MAX_LINE_LENGTH} bytes"
    if isinstance(exc, HeaderLineTooLong):
        return 431, "headers_too_large", f"a header line is over {MAX_LINE_LENGTH} bytes"
    if isinstance(exc, TooManyHeaders):
        return 431, "headers_too_large", f"the request has more than {MAX_NUM_HEADERS} headers"
    return 400, "bad_request", "not a valid WebSocket opening handshake"


def _accept_refusal(exc: Exception | None) -> str:
    """What to fix, for an opening handshake the websockets library will not accept (its own
    refusal is plain text in its own words)."""
    if isinstance(exc, InvalidMethod):
        return "open a WebSocket with GET"
    if isinstance(exc, InvalidUpgrade):
        return (
            "the request does not ask for a WebSocket (Upgrade: websocket, Connection: "
            "Upgrade): connect with a WebSocket client"
        )
    if isinstance(exc, InvalidHeader) and exc.name.lower() == "sec-websocket-key":
        return "the Sec-WebSocket-Key header must be 16 random bytes in base64, sent once"
    if isinstance(exc, InvalidHeader) and exc.name.lower() == "sec-websocket-version":
        return "only WebSocket version 13 is served: send Sec-WebSocket-Version: 13"
    if isinstance(exc, InvalidHeader):
        return f"the {exc.name[:64]} header is missing or invalid"
    return "not a valid WebSocket opening handshake"


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with the edges described in the module docstring."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._handshake_timer: asyncio.TimerHandle | None = None
        self.set_handshake_deadline(self.loop.time() + header_limits().timeout_s)
        now = self.loop.time()
        self._pings = TokenBucket(PING_BURST, PING_RATE_PER_S, now)
        self._frames = TokenBucket(FRAME_BURST, FRAME_RATE_PER_S, now)

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
        for start in range(0, len(data), PARSE_SLICE_BYTES):
            if self.transport.is_closing():
                return  # closed by a budget: the rest of the read is not parsed
            super().data_received(data[start : start + PARSE_SLICE_BYTES])
            refusal = self.conn.handshake_exc
            if refusal is not None and not self.handshake_initiated:
                # websockets queued its own plain-text 414/431 (or nothing, for a request it
                # could not parse) that uvicorn never writes: answer in the service's shape.
                self._refuse(*_handshake_refusal(refusal))
                return

    def handle_connect(self, event: Request) -> None:
        refusal = self.conn.accept(event)  # the library's verdict, before uvicorn sends it
        if refusal.status_code == 101:
            super().handle_connect(event)  # accepts again: the same verdict, now for the app
            return
        self.handshake_initiated = True
        extra = [
            (name.lower().encode("ascii"), value.encode("latin-1"))
            for name, value in refusal.headers.raw_items()
            if name.lower() in ("allow", "upgrade", "sec-websocket-version")
        ]
        if isinstance(self.conn.handshake_exc, InvalidHeader) and (
            self.conn.handshake_exc.name.lower() == "sec-websocket-version"
        ):
            extra.append((b"sec-websocket-version", b"13"))  # RFC 6455, 4.4
        self._refuse(
            refusal.status_code,
            "bad_handshake",
            _accept_refusal(self.conn.handshake_exc),
            extra,
        )

    def _frame_allowed(self) -> bool:
        """Spend a frame token; False (the connection closed) for a flooder or a closed one."""
        if self.close_sent or self.transport.is_closing():
            return False
        if self._frames.take(self.loop.time()):
            return True
        self._close_flood(
            "frame_flood",
            f"more than {FRAME_BURST} frames at once or {FRAME_RATE_PER_S:g} a second",
        )
        return False

    def handle_cont(self, event: Frame) -> None:
        if not self._frame_allowed():
            return
        if len(self.frames) >= MAX_FRAGMENTS:
            self._close_flood("frame_flood", f"a message of more than {MAX_FRAGMENTS} fragments")
            return
        super().handle_cont(event)

    def handle_text(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_bytes(event)

    def handle_pong(self, event: Frame) -> None:
        if self._frame_allowed():
            super().handle_pong(event)

    def handle_ping(self) -> None:
        if not self._frame_allowed():
            return
        if not self._pings.take(self.loop.time()):
            self._close_flood(
                "ping_flood",
                f"more than {PING_BURST} pings at once or {PING_RATE_PER_S:g} a second",
            )
            return
        super().handle_ping()

    def _close_flood(self, code: str, reason: str) -> None:
        metrics.STREAM_ERRORS.labels(code=code).inc()
        self.conn.fail(POLICY_VIOLATION, reason)
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

    def _refuse(
        self,
        status: int,
        code: str,
        message: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        metrics.HTTP_EDGE_ERRORS.labels(code=code).inc()
        self.handshake_complete = True  # nothing more of the handshake will happen
        self.close_sent = True
        if not self.transport.is_closing():
            headers = self.default_headers + (extra_headers or [])
            self.transport.write(error_bytes(status, code, message, headers))
            self.transport.close()
