"""Read deadlines for request bodies: a total time and a minimum average rate.

A pure ASGI middleware wraps ``receive`` of every HTTP request, so whoever reads the body
(``/predict``'s multipart parser or its raw-body reader) reads it under the same rule: the
clock starts when the app first asks for the body; the whole body must arrive within
``timeout_s``; and once ``grace_s`` has passed, the bytes received must keep up with
``min_rate_bytes_s`` on average (a client trickling 1 KB/s is cut off after the grace period,
not after the total). A body that misses either is a 408 ``upload_timeout``, and the connection
closes (the rest of the body is never read). Behind the gateway nginx buffers each upload
before passing it on, so these rules matter when the service is reached directly.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import UploadTimeoutError


class BodyDeadline:
    """``receive`` of one request, with the body's deadlines applied.

    Args:
        receive: the ASGI ``receive`` of the request.
        timeout_s: the most seconds the whole body may take.
        min_rate_bytes_s: the least average rate after ``grace_s`` (0: no rate rule).
        grace_s: seconds at the start during which the rate rule does not apply.
    """

    def __init__(
        self, receive: Receive, timeout_s: float, min_rate_bytes_s: int, grace_s: float
    ) -> None:
        self._receive = receive
        self.timeout_s, self.min_rate_bytes_s, self.grace_s = timeout_s, min_rate_bytes_s, grace_s
        self.received_bytes = 0
        self._started: float | None = None  # loop time of the first read
        self._done = False  # the body is complete (or the client left): no deadline after it

    def deadline(self, started: float) -> float:
        """Loop time by which the next part of the body must arrive."""
        total = started + self.timeout_s
        if self.min_rate_bytes_s <= 0:
            return total
        by_rate = started + max(self.grace_s, self.received_bytes / self.min_rate_bytes_s)
        return min(total, by_rate)

    async def __call__(self) -> Message:
        if self._done:
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._started is None:
            self._started = loop.time()
        try:
            async with asyncio.timeout_at(self.deadline(self._started)):
                message = await self._receive()
        except TimeoutError as e:
            raise self._timeout_error(loop.time() - self._started) from e
        if message["type"] == "http.request":
            self.received_bytes += len(message.get("body", b""))
            self._done = not message.get("more_body", False)
        else:
            self._done = True
        return message

    def _timeout_error(self, elapsed_s: float) -> UploadTimeoutError:
        if elapsed_s >= self.timeout_s:
            rule = f"the whole body must arrive within {self.timeout_s:g} s"
        else:
            rule = (
                f"after {self.grace_s:g} s the body must arrive at {self.min_rate_bytes_s} "
                f"bytes/s or faster on average ({self.received_bytes} bytes in {elapsed_s:.1f} s)"
            )
        return UploadTimeoutError(
            f"the upload was too slow: {rule}; send it again over a faster connection, "
            "compressed (FLAC or Opus), or stream it over the WebSocket /ws/stream"
        )


class UploadDeadlineMiddleware:
    """Apply :class:`BodyDeadline` to every HTTP request (WebSocket and lifespan pass)."""

    def __init__(
        self, app: ASGIApp, timeout_s: float, min_rate_bytes_s: int, grace_s: float
    ) -> None:
        self.app = app
        self.timeout_s, self.min_rate_bytes_s, self.grace_s = timeout_s, min_rate_bytes_s, grace_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = BodyDeadline(receive, self.timeout_s, self.min_rate_bytes_s, self.grace_s)
        await self.app(scope, deadline, send)
