"""Structured logging: one JSON object per line, and one line per HTTP request.

Fields passed as ``extra={...}`` to a logging call become top-level JSON keys, e.g.
``log.warning("model skipped", extra={"event": "model_skipped", "reason": "..."})`` ->
``{"ts": "...", "level": "warning", "logger": "app.registry", "message": "model skipped",
"event": "model_skipped", "reason": "..."}``.

:class:`RequestLogMiddleware` (pure ASGI, so streaming responses and WebSockets pass through
untouched) logs each HTTP request with method, path, status, duration_ms, client and request
id, and records it in the Prometheus request metrics under its route template. The request id
is the gateway's ``X-Request-ID`` when it sends a sane one, else a new one; it is kept in
``request.state.request_id`` (so an error handler can log a refusal's details under it) and
sent back in the response's ``X-Request-ID``, for a user to quote.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics

_RESERVED: Final[frozenset[str]] = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "color_message"}  # color_message: uvicorn's ANSI copy
)
_HANDLER_NAME: Final[str] = "ser-service"
REQUEST_ID_HEADER: Final[bytes] = b"x-request-id"
_SANE_REQUEST_ID: Final[re.Pattern[bytes]] = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
access_log = logging.getLogger("app.access")
warnings_log = logging.getLogger("py.warnings")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line; ``extra`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A ``warnings.showwarning`` that writes one log record instead of text on stderr."""
    warnings_log.warning(
        str(message),
        extra={"event": "warning", "category": category.__name__, "at": f"{filename}:{lineno}"},
    )


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Send ``app`` and ``uvicorn`` logs to stderr, as JSON lines or plain text.

    Idempotent: it replaces only the handler it installed, so handlers that others (pytest's
    caplog, an embedding application) put on the root logger stay.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python warnings (numpy's RuntimeWarnings among them) go through logging, so they are JSON
    # lines like the rest instead of bare text in the middle of the log.
    warnings.showwarning = _log_warning
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by app.access lines
    multipart_log = logging.getLogger(MULTIPART_LOGGER)
    if not any(isinstance(f, ClientFaultFilter) for f in multipart_log.filters):
        multipart_log.addFilter(ClientFaultFilter())


# The multipart parser warns about what clients send (data after the last boundary, a missing
# Content-Type): the request is answered 400 and logged under its id; not the server's fault.
MULTIPART_LOGGER: Final[str] = "python_multipart.multipart"


class ClientFaultFilter(logging.Filter):
    """Log a library's warnings about a client's input at info level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    if isinstance(scope.get("endpoint"), StaticFiles):  # a mount's file: the mount, not the file
        return f"{scope.get('root_path', '')}/{{path}}"
    return "unmatched"  # never the raw path: cardinality


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _request_id(scope: Scope) -> str:
    """The gateway's X-Request-ID if it is a short token (never a client's log injection),
    else a new random one."""
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _SANE_REQUEST_ID.fullmatch(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The id :class:`RequestLogMiddleware` gave this request (None outside it)."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


MAX_LOGGED_PATH: Final[int] = 200


def _clipped_path(path: str) -> str:
    """A request path as logged: a client's 60 KB path would otherwise be a 60 KB log line."""
    return path if len(path) <= MAX_LOGGED_PATH else f"{path[:MAX_LOGGED_PATH]}...({len(path)})"


class RequestLogMiddleware:
    """Log and measure every HTTP request (WebSocket and lifespan scopes pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app dies before sending a response start
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - started
            route = _route_template(scope)
            metrics.observe_request(route, scope["method"], status, seconds)
            access_log.info(
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": _clipped_path(scope["path"]),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1e3, 2),
                    "client": _client(scope),
                    "request_id": request_id,
                },
            )
