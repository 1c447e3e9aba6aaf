"""``POST /v1/predict`` (alias ``/predict``): classify one uploaded clip.

The audio comes either as a multipart form field ``file`` or as the raw request body with an
audio content type. The body is read here, not by FastAPI, so that its size is checked against
``Content-Length`` first and then counted while it streams in: nothing past the limit is ever
buffered. Before a byte is read, the bytes the body may hold are reserved from the process's
upload budget (:mod:`app.api.upload_budget`) until the answer is made; a raw body is read into
one growing buffer whose bytes become the upload without a copy.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.api.deps import ReadyRegistryDep, SettingsDep, UploadBudgetDep, WorkPoolsDep
from app.api.schemas import PredictResponse, predict_response
from app.errors import (
    MissingAudioError,
    ServiceError,
    UnsupportedMediaTypeError,
    UploadTooLargeError,
    clipped,
    error_docs,
)
from app.logs import request_id_of
from app.prediction import ClipLimits, Segmentation, predict_clip
from app.settings import MULTIPART_OVERHEAD_BYTES

log = logging.getLogger(__name__)
router = APIRouter(tags=["predict"])

AUDIO_TYPES: Final[frozenset[str]] = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "application/ogg",
        "audio/mpeg",
        "audio/mp3",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
        "audio/aac",
        "audio/webm",
        "video/webm",  # what some browsers label a MediaRecorder blob with
        "application/octet-stream",
    }
)
MULTIPART: Final[str] = "multipart/form-data"
FILE_FIELD: Final[str] = "file"

_BODY_SCHEMA: Final[dict[str, Any]] = {"type": "string", "format": "binary"}
OPENAPI_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "WAV (PCM 8/16/24/32-bit or float), FLAC, OGG (Vorbis/Opus), MP3, "
        "M4A/MP4 (AAC) or WebM (Opus); any rate 8-192 kHz, any channel count. Either a "
        "multipart field `file` or the raw body.",
        "content": {
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: _BODY_SCHEMA},
                    "required": [FILE_FIELD],
                }
            },
            **{t: {"schema": _BODY_SCHEMA} for t in sorted(AUDIO_TYPES)},
        },
    }
}


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ServiceError(
            f"Content-Length {value[:32]!r} is not a byte count: send the body's size in "
            "bytes, or leave the header out"
        )
    return int(value)


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may be: its bytes, and (checked once decoded) its length."""

    max_bytes: int
    max_audio_s: float

    def too_large(self) -> UploadTooLargeError:
        """The 413 for an upload over ``max_bytes``, with the ways around it, the length
        limit first (a long recording compressed under the byte limit would be refused
        next for its length)."""
        return UploadTooLargeError(
            f"the upload is larger than the {self.max_bytes / 1e6:g} MB limit "
            f"({self.max_bytes} bytes); audio may also last at most {self.max_audio_s:g} s: "
            f"send a clip shorter than {self.max_audio_s:g} s, compressed to FLAC (lossless) "
            "or Opus if it is still too large, stream longer audio over the WebSocket "
            "/ws/stream, or, on a server you run, raise SER_MAX_UPLOAD_BYTES"
        )


async def _limited(
    stream: AsyncIterator[bytes], cap_bytes: int, limits: UploadLimits
) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > cap_bytes:
            raise limits.too_large()
        yield chunk


async def _read_multipart(request: Request, limits: UploadLimits) -> bytes:
    cap = limits.max_bytes + MULTIPART_OVERHEAD_BYTES
    parser = MultiPartParser(
        request.headers, _limited(request.stream(), cap, limits), max_files=1, max_fields=16
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        extra = {"event": "bad_multipart", "detail": e.message}
        log.info("multipart refused", extra={**extra, "request_id": request_id_of(request.scope)})
        raise ServiceError(
            f"{_multipart_fault(e.message)}: send the audio as the multipart field "
            f"'{FILE_FIELD}' (curl -F file=@clip.wav) or as a raw audio body with an audio "
            "Content-Type"
        ) from e
    try:
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            if not form:
                raise MissingAudioError(
                    "the multipart body holds no complete part: it must hold the audio as the "
                    f"file field '{FILE_FIELD}' and end with its closing boundary (--BOUNDARY--)"
                )
            sent = ", ".join(clipped(name, 40) for name in sorted(form.keys())[:16])
            raise MissingAudioError(
                f"send the audio as a file in the multipart field '{FILE_FIELD}' "
                f"(fields received: {sent})"
            )
        data = await upload.read(limits.max_bytes + 1)
    finally:
        await form.close()
    if len(data) > limits.max_bytes:
        raise limits.too_large()
    return data


def body_hold_bytes(request: Request, limits: UploadLimits) -> int:
    """The bytes the request's body may hold in memory, from its headers alone: its
    ``Content-Length``, or the most the limit lets through when it declares none.

    Raises:
        UploadTooLargeError: (413) Content-Length exceeds the limit.
        UnsupportedMediaTypeError: (415) neither multipart nor an audio content type.
        MissingAudioError: (400) nothing sent.
    """
    media_type = _media_type(request)
    length = _content_length(request)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaTypeError(
            f"Content-Encoding {clipped(encoding, 40)!r} is not accepted: send the audio "
            "unencoded (FLAC or Opus compress audio far better than gzip)"
        )
    if media_type == MULTIPART:
        cap = limits.max_bytes + MULTIPART_OVERHEAD_BYTES
    elif media_type in AUDIO_TYPES:
        cap = limits.max_bytes
    elif not media_type and not length:
        raise MissingAudioError(
            f"no audio sent: POST a multipart field '{FILE_FIELD}' or a raw audio/wav body"
        )
    else:
        raise UnsupportedMediaTypeError(
            f"content type {clipped(media_type, 100) or 'none'!r} is not accepted: send "
            f"{MULTIPART} with a '{FILE_FIELD}' field, or a raw body as one of "
            f"{', '.join(sorted(AUDIO_TYPES))}"
        )
    if length is not None and length > cap:
        raise limits.too_large()
    return cap if length is None else length


def _multipart_fault(library_message: str) -> str:
    """What is wrong with a multipart body, from the parser's refusal (never its words)."""
    if library_message.startswith("Too many files"):
        return f"more than one file in the multipart body: send one, as '{FILE_FIELD}'"
    if library_message.startswith("Too many fields"):
        return "more than 16 fields in the multipart body"
    if "name" in library_message and "must be provided" in library_message:
        return "a multipart part has no name in its Content-Disposition header"
    if library_message.startswith("Missing boundary"):
        return "the multipart Content-Type names no boundary"
    return "malformed multipart body"


async def read_audio_body(request: Request, limits: UploadLimits) -> bytes:
    """The uploaded audio bytes, from a multipart ``file`` field or a raw audio body (whose
    headers :func:`body_hold_bytes` accepted).

    Raises:
        UploadTooLargeError: (413) the bytes received exceed the limit.
        MissingAudioError: (400) no ``file`` field.
    """
    if _media_type(request) == MULTIPART:
        return await _read_multipart(request, limits)
    body = io.BytesIO()
    async for chunk in _limited(request.stream(), limits.max_bytes, limits):
        body.write(chunk)
    return body.getvalue()  # the buffer's own bytes object, not a copy (CPython)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


ModelQuery = Annotated[
    str | None,
    Query(
        description="the model to use, by key (ce, bce, smoothl1, l1) or full name (ser-ce, ...; "
        "see GET /v1/models); default: the best released model by validation score",
        examples=["ce"],
    ),
]


SegmentsQuery = Annotated[
    Segmentation,
    Query(
        description="what `segments` holds: the model windows (the first is the training "
        "segment), or the utterances the speech detector finds (speech between pauses of "
        "0.5 s or more), each the mean of the windows cut from it",
    ),
]


async def predict(
    request: Request,
    registry: ReadyRegistryDep,
    settings: SettingsDep,
    pools: WorkPoolsDep,
    budget: UploadBudgetDep,
    model: ModelQuery = None,
    segments: SegmentsQuery = "windows",
) -> Response:
    """Classify the emotion in one clip: per window or per utterance for longer audio; windows
    without speech are reported and not classified."""
    started = time.perf_counter()
    served = registry.get(model)
    upload = UploadLimits(settings.max_upload_bytes, settings.max_audio_s)
    hold_bytes = body_hold_bytes(request, upload)
    hop_s = settings.segment_hop_s or served.feature_config.window_s / 2
    limits = ClipLimits.from_settings(settings)
    with budget.reserve(hold_bytes):
        data = await read_audio_body(request, upload)
        result = await predict_clip(
            data, served, hop_s, limits, pools, started=started, segmentation=segments
        )
        del data
    return Response(predict_response(result).model_dump_json(), media_type="application/json")


_ROUTE: Final[dict[str, Any]] = {
    "methods": ["POST"],
    "response_model": PredictResponse,
    "responses": error_docs(400, 404, 413, 415, 422, 500, 503),
    "openapi_extra": OPENAPI_BODY,
}
router.add_api_route("/v1/predict", predict, name="predict", **_ROUTE)
router.add_api_route(
    "/predict", predict, name="predict_alias", summary="Predict (alias of /v1/predict)", **_ROUTE
)
