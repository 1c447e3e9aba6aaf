"""The stream protocol's messages as pydantic models: the client's control messages, parsed
with bounds, and what the server sends (ready, prediction, summary, error).

A text frame is checked before ``json.loads`` sees it: at most ``max_bytes`` long and nested at
most :data:`MAX_DEPTH` deep (the C scanner recurses once per ``[``/``{``, so 100,000 brackets
would raise ``RecursionError``). Numbers are bounded while parsing (an integer of 4,300 digits
makes ``int()`` raise; ``1e400`` becomes ``inf``) and the ``start`` message is a pydantic model
with bounded fields, so no number a client sends reaches arithmetic unchecked. Every failure is
a :class:`ProtocolError` with a stable ``code`` and the close code that fits: client input never
ends a session with 1011.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.affect import AROUSAL_HELP, VALENCE_HELP, affect_of
from app.audio import MAX_SOURCE_RATE, MIN_SOURCE_RATE
from app.contract import by_label, top_label
from app.error_codes import close_code
from app.live import ClassifiedWindow, StreamTotals
from app.streaming import MAX_CHANNELS, MIN_HOP_S, MIN_WINDOW_S

MAX_DEPTH: Final[int] = 4  # a control message is one flat object; room for a nested field
MAX_NUMBER_CHARS: Final[int] = 32  # far more digits than any rate, hop or window needs
MAX_SECONDS: Final[float] = 3600.0  # hop_s / window_s beyond this are nonsense, not config
MAX_NAME_CHARS: Final[int] = 64


class ProtocolError(Exception):
    """Ends a session with an ``error`` message, then the close code of ``code`` in
    :data:`app.error_codes.ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message, self.close_code = code, message, close_code(code)


class ErrorMessage(BaseModel):
    type: Literal["error"] = "error"
    code: str
    message: str


class ReadyMessage(BaseModel):
    """Sent once after a valid ``start``: what the session will do."""

    type: Literal["ready"] = "ready"
    session_id: str
    model: str = Field(description="the model's key (?model= value)")
    model_name: str
    model_version: str
    labels: list[str]
    sample_rate: int = Field(description="the client's PCM rate, as declared")
    encoding: str
    channels: int
    model_sample_rate: int = Field(description="the rate windows are cut at (16 kHz)")
    hop_s: float
    window_s: float
    max_frame_bytes: int


class PredictionMessage(BaseModel):
    """One window; ``label``, ``confidence`` and ``probabilities`` are None without speech."""

    type: Literal["prediction"] = "prediction"
    index: int
    start_s: float = Field(description="stream time of the window's real audio")
    end_s: float
    speech: bool
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    arousal: float | None = Field(description=AROUSAL_HELP)
    valence: float | None = Field(description=VALENCE_HELP)
    smoothed: dict[str, float] | None = Field(
        description="moving average over the speech windows (time constant 1.5 s)"
    )
    smoothed_label: str | None
    smoothed_arousal: float | None
    smoothed_valence: float | None
    level_dbfs: float | None = Field(description="window level; None for digital silence")
    active_fraction: float = Field(description="share of 10 ms frames above the speech gate")
    padded: bool
    final: bool = Field(description="produced by stop")
    latency_ms: float = Field(description="from the completing chunk to this message")

    @classmethod
    def of(cls, result: ClassifiedWindow, final: bool, latency_ms: float) -> PredictionMessage:
        window, p, smoothed = result.span, result.probabilities, result.smoothed
        label, confidence = (None, None) if p is None else top_label(p)
        arousal, valence = _affect(p)
        smoothed_arousal, smoothed_valence = _affect(smoothed)
        return cls(
            index=window.index,
            start_s=round(window.start_s, 6),
            end_s=round(window.end_s, 6),
            speech=window.speech,
            label=label,
            confidence=confidence,
            probabilities=_by_label(p),
            arousal=arousal,
            valence=valence,
            smoothed=_by_label(smoothed),
            smoothed_label=None if smoothed is None else top_label(smoothed)[0],
            smoothed_arousal=smoothed_arousal,
            smoothed_valence=smoothed_valence,
            level_dbfs=None if math.isinf(window.level_dbfs) else round(window.level_dbfs, 2),
            active_fraction=round(window.active_fraction, 4),
            padded=window.padded_samples > 0,
            final=final,
            latency_ms=round(latency_ms, 3),
        )


class SummaryMessage(BaseModel):
    """The last message before close 1000: the mean over the speech windows."""

    type: Literal["summary"] = "summary"
    session_id: str
    model: str
    duration_s: float = Field(description="audio received, seconds")
    windows: int
    speech_windows: int
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    arousal: float | None = Field(description=AROUSAL_HELP)
    valence: float | None = Field(description=VALENCE_HELP)

    @classmethod
    def of(cls, session_id: str, model: str, totals: StreamTotals) -> SummaryMessage:
        mean = totals.probabilities
        label, confidence = (None, None) if mean is None else top_label(mean)
        arousal, valence = _affect(mean)
        return cls(
            session_id=session_id,
            model=model,
            duration_s=round(totals.duration_s, 6),
            windows=totals.windows,
            speech_windows=totals.speech_windows,
            label=label,
            confidence=confidence,
            probabilities=_by_label(mean),
            arousal=arousal,
            valence=valence,
        )


def _by_label(p: np.ndarray | None) -> dict[str, float] | None:
    return None if p is None else by_label(p)


def _affect(p: np.ndarray | None) -> tuple[float | None, float | None]:
    return (None, None) if p is None else affect_of(p)


class StartMessage(BaseModel):
    """``{"type": "start", ...}``: the client's PCM format and optional window choices.

    The bounds here keep numbers sane on the wire; :class:`app.streaming.StreamSession` still
    checks what depends on the model (``window_s`` at most the model's window, ``hop_s`` at
    most ``window_s``) and which encodings exist.
    """

    model_config = ConfigDict(frozen=True)

    type: Literal["start"]
    sample_rate: int = Field(ge=MIN_SOURCE_RATE, le=MAX_SOURCE_RATE)
    encoding: str = Field(default="pcm_s16le", max_length=MAX_NAME_CHARS)
    channels: int = Field(default=1, ge=1, le=MAX_CHANNELS)
    model: str | None = Field(
        default=None,
        max_length=MAX_NAME_CHARS,
        description="a model's key (ce) or full name (ser-ce); default: the server's default",
    )
    hop_s: float | None = Field(default=None, ge=MIN_HOP_S, le=MAX_SECONDS, allow_inf_nan=False)
    window_s: float | None = Field(
        default=None, ge=MIN_WINDOW_S, le=MAX_SECONDS, allow_inf_nan=False
    )


def nesting_depth(text: str, limit: int) -> int:
    """How deep the arrays and objects of the JSON ``text`` nest (brackets inside strings do
    not count); stops counting once past ``limit``. Linear in ``len(text)``, no recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif char in "]}":
            depth -= 1
    return deepest


def _bad_json(message: str) -> ProtocolError:
    return ProtocolError("bad_json", message)


def _bounded_int(digits: str) -> int:
    if len(digits) > MAX_NUMBER_CHARS:
        raise _bad_json(f"a number of {len(digits)} characters: at most {MAX_NUMBER_CHARS}")
    return int(digits)


def _finite_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _bad_json(f"a number of {len(text)} characters: at most {MAX_NUMBER_CHARS}")
    value = float(text)
    if math.isinf(value):
        raise _bad_json(f"the number {text} is too large for a float")
    return value


def _no_constant(name: str) -> float:
    raise _bad_json(f"{name} is not JSON: send finite numbers")


def parse_control(text: str, max_bytes: int) -> dict[str, Any]:
    """The JSON object of one control frame.

    Raises:
        ProtocolError: ``frame_too_large`` (1009) over ``max_bytes``; ``bad_json`` (1007) for
            text that is not one JSON object, nests too deep or holds unbounded numbers.
    """
    # UTF-8 takes at least one byte per character: the cheap check first.
    if len(text) > max_bytes or len(text.encode()) > max_bytes:
        raise ProtocolError(
            "frame_too_large",
            f"control messages are at most {max_bytes} bytes: send audio as binary frames",
        )
    if nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise _bad_json(f"JSON nested more than {MAX_DEPTH} levels deep")
    try:
        data = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except json.JSONDecodeError as e:
        raise _bad_json(f"text frames must be JSON objects: {e.msg}") from e
    if not isinstance(data, dict):
        raise _bad_json("text frames must be JSON objects")
    return data


def parse_start(data: dict[str, Any]) -> StartMessage:
    """The start message in ``data`` (its ``type`` is ``"start"``).

    Raises:
        ProtocolError: ``invalid_start`` (1007) naming each field that is missing or out of
            bounds.
    """
    try:
        return StartMessage.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'start'}: {err['msg']}"
            for err in e.errors(include_url=False, include_input=False)
        )
        raise ProtocolError("invalid_start", problems) from e
