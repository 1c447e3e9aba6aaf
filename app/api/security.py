"""Who may use the service from a browser, and what a browser may do with its pages.

* **Origins.** A web page on any site may open a WebSocket to any address its visitor can
  reach (``localhost``, an intranet host) and read what comes back: browsers apply no
  same-origin rule to WebSockets, and the page asks for the microphone. So ``/ws/stream``
  accepts a handshake whose ``Origin`` is the service's own (the ``Host`` it was reached at)
  or one of ``SER_ALLOWED_ORIGINS``; a handshake without ``Origin`` is not from a browser
  (``ser stream``, curl, the websockets library) and is accepted. A refused one gets 403 with
  the JSON error body.
* **Hosts.** ``SER_ALLOWED_HOSTS`` (default ``*``: any) lists the host names the service
  answers to; another ``Host`` gets 400 ``invalid_host``, which defeats DNS rebinding (a
  foreign name that resolves to the service cannot read ``/v1/models`` or ``/metrics``).
* **Headers.** Every response says ``X-Content-Type-Options: nosniff``; HTML ones forbid
  framing (``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``) and carry a content
  security policy: the page's loads scripts, styles and the audio worklet from the service
  only and connects to it only; the API docs' also allow the one inline script FastAPI writes
  (by its hash) and the inline styles and workers of Swagger UI and ReDoc.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from app.errors import clipped, code_response

PAGE_POLICY: Final[str] = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DEFAULT_PORTS: Final[dict[str, int]] = {"http": 80, "https": 443}
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def docs_policy(html: bytes) -> str:
    """The policy of an API docs page: its own inline scripts allowed by their hashes."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    """``host[:port]`` as (lower-case host, port), the scheme's default port filled in."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        return "", None
    return (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether a browser's ``Origin`` names the host and port the request was sent to."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    origin_host = _host_port(parts.netloc, parts.scheme)
    # The Host header has no scheme: its port is the origin scheme's default when left out.
    return origin_host == _host_port(host_header, parts.scheme) and origin_host[0] != ""


def origin_allowed(origin: str | None, host_header: str, allowed: Iterable[str]) -> bool:
    """Whether a WebSocket handshake with these headers may stream (see the module doc)."""
    if origin is None:
        return True  # not a browser
    origin = origin.strip().lower().rstrip("/")
    return same_origin(origin, host_header) or origin in allowed


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    if "*" in allowed:
        return True
    host, _ = _host_port(host_header, "http")
    return host in allowed


class SecurityMiddleware:
    """The ``Host`` check on every request and the security headers on every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str]) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        if not host_allowed(host, self.allowed_hosts):
            await self._refuse_host(scope, receive, send, host)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("x-content-type-options", "nosniff")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("x-frame-options", "DENY")
                    headers.setdefault("content-security-policy", PAGE_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _refuse_host(self, scope: Scope, receive: Receive, send: Send, host: str) -> None:
        refusal = code_response(
            "invalid_host",
            f"this server does not answer to the host {clipped(host, 100)!r}: use one of its "
            "names (SER_ALLOWED_HOSTS)",
        )
        if scope["type"] == "websocket":  # before the upgrade: an HTTP answer
            await WebSocket(scope, receive, send).send_denial_response(refusal)
        else:
            await refusal(scope, receive, send)
