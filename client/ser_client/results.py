"""Typed results of the service's responses, parsed from their JSON (see docs/api.md).

Every prediction carries ``arousal`` and ``valence``: the eight probabilities placed on
Russell's circumplex, each in [-1, 1] (-1 sleepy or unpleasant, +1 aroused or pleasant; the
service's docs/api.md gives the placement). They are None where there is nothing to score
(a window without speech; the smoothed ones before a stream's first speech) and from a server
that predates them.

Plain frozen dataclasses rather than the server's pydantic models: the client imports nothing
of the server, so it installs and starts without FastAPI or ONNX Runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ServiceError(RuntimeError):
    """The service refused a request or a stream: its HTTP status (or WebSocket close code),
    its error ``code`` and the message saying what to fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def from_body(cls, status: int, body: Any) -> ServiceError:
        """From an HTTP error response's JSON body (``{"error": {"code", "message"}}``)."""
        error = body.get("error", {}) if isinstance(body, dict) else {}
        return cls(
            status,
            str(error.get("code", "http_error")),
            str(error.get("message", body if isinstance(body, str) else "no message")),
        )


def _probabilities(data: dict[str, Any] | None) -> dict[str, float] | None:
    return None if data is None else {str(k): float(v) for k, v in data.items()}


def _score(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Segment:
    """One model window (or utterance) of an upload; ``label`` is None when it held no speech."""

    start_s: float
    end_s: float
    speech: bool
    label: str | None
    confidence: float | None
    probabilities: dict[str, float]
    arousal: float | None
    valence: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Segment:
        label = data.get("label")
        return cls(
            start_s=float(data["start_s"]),
            end_s=float(data["end_s"]),
            speech=bool(data.get("speech", label is not None)),
            label=None if label is None else str(label),
            confidence=_score(data.get("confidence")),
            probabilities=_probabilities(data.get("probabilities")) or {},
            arousal=_score(data.get("arousal")),
            valence=_score(data.get("valence")),
        )


@dataclass(frozen=True)
class Prediction:
    """``POST /predict``: the clip's label and probabilities, and each window's (or each
    utterance's); ``speech_s`` is how much of it the service heard as speech."""

    label: str
    confidence: float
    probabilities: dict[str, float]
    arousal: float | None
    valence: float | None
    model: str
    duration_s: float
    speech_s: float | None
    segments: tuple[Segment, ...]
    raw: dict[str, Any]  # the whole response, for fields not modelled here

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prediction:
        return cls(
            label=str(data["label"]),
            confidence=float(data["confidence"]),
            probabilities=_probabilities(data["probabilities"]) or {},
            arousal=_score(data.get("arousal")),
            valence=_score(data.get("valence")),
            model=str(data["model"]["name"]),
            duration_s=float(data["duration_s"]),
            speech_s=_score(data.get("speech_s")),
            segments=tuple(Segment.from_json(s) for s in data["segments"]),
            raw=data,
        )


@dataclass(frozen=True)
class StreamPrediction:
    """A stream's ``prediction`` message: one window; ``label`` is None when it held no speech."""

    index: int
    start_s: float
    end_s: float
    speech: bool
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    arousal: float | None
    valence: float | None
    smoothed_label: str | None
    smoothed: dict[str, float] | None
    smoothed_arousal: float | None
    smoothed_valence: float | None
    latency_ms: float
    final: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamPrediction:
        return cls(
            index=int(data["index"]),
            start_s=float(data["start_s"]),
            end_s=float(data["end_s"]),
            speech=bool(data["speech"]),
            label=data.get("label"),
            confidence=_score(data.get("confidence")),
            probabilities=_probabilities(data.get("probabilities")),
            arousal=_score(data.get("arousal")),
            valence=_score(data.get("valence")),
            smoothed_label=data.get("smoothed_label"),
            smoothed=_probabilities(data.get("smoothed")),
            smoothed_arousal=_score(data.get("smoothed_arousal")),
            smoothed_valence=_score(data.get("smoothed_valence")),
            latency_ms=float(data.get("latency_ms", 0.0)),
            final=bool(data.get("final", False)),
        )


@dataclass(frozen=True)
class StreamSummary:
    """A stream's last message: the mean over its speech windows (None if there were none)."""

    session_id: str
    model: str
    duration_s: float
    windows: int
    speech_windows: int
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    arousal: float | None
    valence: float | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamSummary:
        return cls(
            session_id=str(data["session_id"]),
            model=str(data["model"]),
            duration_s=float(data["duration_s"]),
            windows=int(data["windows"]),
            speech_windows=int(data["speech_windows"]),
            label=data.get("label"),
            confidence=_score(data.get("confidence")),
            probabilities=_probabilities(data.get("probabilities")),
            arousal=_score(data.get("arousal")),
            valence=_score(data.get("valence")),
        )
