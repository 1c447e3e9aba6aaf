"""The one error shape of the API, and the handlers that turn every failure into it.

Every error response, including FastAPI's own validation errors and unknown routes, has the
body ``{"error": {"code": "...", "message": "..."}}``: ``code`` is stable and machine-readable,
``message`` tells the client what to fix. Nothing a client sends produces a 500; an unexpected
server fault is a 500 ``internal_error`` without internals in the body (they go to the log).
A message never quotes a library (FFmpeg's or libsndfile's words on a file they cannot read go
to the log under the request's id, :mod:`app.logs`, which the response's X-Request-ID names).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.audio import AudioError
from app.engine import InferenceError
from app.error_codes import http_status
from app.logs import request_id_of
from app.registry import ModelsNotReady, UnknownModelError
from app.workpool import LaneFullError

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ServiceError(Exception):
    """A request the service refuses, with its stable code (its HTTP status comes from
    :data:`app.error_codes.ERROR_CODES`)."""

    code = "bad_request"
    status_code = http_status(code)
    close_connection = False  # answer with Connection: close (the request was not read whole)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = http_status(cls.code)

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class UploadTooLargeError(ServiceError):
    code = "upload_too_large"


class UnsupportedMediaTypeError(ServiceError):
    code = "unsupported_media_type"


class MissingAudioError(ServiceError):
    code = "missing_audio"


class UnusableAudioError(ServiceError):
    code = "unusable_audio"


class NoSpeechError(UnusableAudioError):
    """Sound, but no window the speech detector hears a voice in (app/vad.py)."""

    code = "no_speech"


class UploadTimeoutError(ServiceError):
    """The body did not arrive in time (see :mod:`app.api.upload`)."""

    code = "upload_timeout"
    close_connection = True


class NotReadyError(ServiceError):
    code = "not_ready"


class EngineFailedError(ServiceError):
    """A model's inference engine keeps failing (app.engine.MicroBatcher.broken)."""

    code = "engine_failed"


class ServerBusyError(ServiceError):
    """Refused for now, before its body was read (:mod:`app.api.upload_budget`)."""

    code = "server_busy"
    close_connection = True

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def error_response(
    status_code: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code)


def code_response(code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    """:func:`error_response` with the status of ``code`` in the one table."""
    return error_response(http_status(code), code, message, details)


def error_docs(*status_codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting ``status_codes`` with the error body."""
    return {
        code: {"model": ErrorResponse, "description": HTTPStatus(code).phrase}
        for code in status_codes
    }


ECHO_CHARS = 200  # the most of a client's string (a path, a header) quoted back or logged


def clipped(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` as quoted back to a client or into a log line: at most ``limit`` characters."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class UpgradeRequiredError(ServiceError):
    """A plain request to a WebSocket endpoint."""

    code = "upgrade_required"


def _http_code(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    response = error_response(exc.status_code, exc.code, exc.message, exc.details)
    if exc.close_connection:
        response.headers["connection"] = "close"
    if isinstance(exc, ServerBusyError):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _audio_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AudioError)
    if exc.detail is not None:  # the parser's own words: for whoever reads the log
        log.info(
            "audio refused",
            extra={
                "event": "audio_refused",
                "code": exc.code,
                "detail": exc.detail,
                "path": request.url.path,
                "request_id": request_id_of(request.scope),
            },
        )
    return code_response(exc.code, str(exc))


async def _not_ready(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ModelsNotReady)
    return code_response("not_ready", str(exc), {"skipped": exc.skipped})


async def _lane_full(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LaneFullError)
    response = code_response("server_busy", str(exc))
    response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def _unknown_model(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownModelError)
    details = {"available": list(exc.available), "full_names": list(exc.full_names)}
    return code_response("unknown_model", str(exc), details)


async def _inference_error(request: Request, exc: Exception) -> JSONResponse:
    # A server fault, not the client's: logged by the batcher with its traceback.
    return code_response("inference_failed", str(exc))


async def _client_disconnect(request: Request, exc: Exception) -> JSONResponse:
    # The client went away mid-upload: nobody reads this answer; it keeps the logs and the
    # metrics free of false server errors.
    return code_response("client_disconnected", "the client closed the connection")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
        for err in exc.errors()
    ]
    return code_response("invalid_request", "; ".join(problems) or "invalid request")


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    details = None
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {clipped(request.url.path)}; see /docs"
    elif exc.status_code == 405:
        message, details = _wrong_method(request, (exc.headers or {}).get("Allow", ""))
    response = error_response(exc.status_code, _http_code(exc.status_code), message, details)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _api_routes(request: Request) -> list[str]:
    """``METHOD /path`` of every documented HTTP route, and the stream's WebSocket."""
    paths: dict[str, dict[str, Any]] = request.app.openapi().get("paths", {})
    routes = [f"{m.upper()} {path}" for path, ops in paths.items() for m in ops]
    return [*routes, "WebSocket /ws/stream"]


def _wrong_method(request: Request, allow: str) -> tuple[str, dict[str, Any]]:
    """A 405's message: which methods the route takes, what to send, and the whole API."""
    path = request.url.path
    allowed = [m.strip() for m in allow.split(",") if m.strip()]
    message = f"{request.method} {path} is not allowed: {path} takes {' or '.join(allowed)}"
    if "POST" in allowed and path.rstrip("/").endswith("/predict"):
        message += " (POST the audio to it as a multipart field 'file' or as a raw audio body)"
    routes = _api_routes(request)
    message += f". The API: {', '.join(routes)}; see /docs"
    return message, {"allow": allowed, "routes": routes}


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "unhandled error",
        exc_info=exc,
        extra={
            "event": "internal_error",
            "path": request.url.path,
            "request_id": request_id_of(request.scope),
        },
    )
    response = code_response("internal_error", "the server failed; this is logged and is a bug")
    # Starlette re-raises the exception after sending this, and uvicorn then closes the
    # connection: say so, or a keep-alive client finds a dead socket on its next request.
    response.headers["connection"] = "close"
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(AudioError, _audio_error)
    app.add_exception_handler(UnknownModelError, _unknown_model)
    app.add_exception_handler(ModelsNotReady, _not_ready)
    app.add_exception_handler(InferenceError, _inference_error)
    app.add_exception_handler(LaneFullError, _lane_full)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)
