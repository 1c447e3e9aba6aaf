"""The HTTP response of ``/v1/predict``, built from the domain result
(:class:`app.prediction.ClipPrediction`).

The route sends :func:`predict_response`'s JSON itself (``response_model`` is for the OpenAPI
schema only), so each response is validated and serialised once, here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from app.affect import AROUSAL_HELP, VALENCE_HELP, affect_of
from app.contract import by_label, top_label
from app.prediction import ClipPrediction


class ModelRef(BaseModel):
    name: str = Field(examples=["ser-ce"])
    loss: str = Field(examples=["ce"])
    version: str


class SegmentResult(BaseModel):
    start_s: float = Field(description="segment start, seconds from the start of the audio")
    end_s: float = Field(description="end of the real audio in the segment (padding excluded)")
    speech: bool = Field(
        description="the speech detector hears a voice in the window; the others are not "
        "classified (label, confidence, probabilities, arousal and valence null)"
    )
    active_fraction: float = Field(description="share of the window's 32 ms frames that are speech")
    label: str | None
    confidence: float | None
    probabilities: dict[str, float] | None
    arousal: float | None = Field(description=AROUSAL_HELP)
    valence: float | None = Field(description=VALENCE_HELP)


class AudioInfo(BaseModel):
    format: str = Field(examples=["WAV"])
    sample_rate: int = Field(description="the upload's sample rate, Hz, before resampling")
    channels: int


class TimingMs(BaseModel):
    decode: float
    vad: float = Field(description="the speech detector over the whole audio")
    features: float
    inference: float
    total: float


class PredictResponse(BaseModel):
    label: str = Field(examples=["happy"])
    confidence: float = Field(description="probability of the label")
    probabilities: dict[str, float] = Field(description="all 8 labels, summing to 1")
    arousal: float = Field(description=AROUSAL_HELP)
    valence: float = Field(description=VALENCE_HELP)
    model: ModelRef
    duration_s: float = Field(description="length of the uploaded audio")
    speech_s: float = Field(description="seconds of the audio the speech detector hears a voice in")
    padded: bool = Field(description="the trimmed clip was shorter than one window")
    segmentation: str = Field(
        description="`windows` (the default) or `utterances` (`?segments=utterances`)",
        examples=["windows"],
    )
    segments: list[SegmentResult] = Field(
        description="one result per model window, or per utterance; the top level is the mean "
        "of those with speech (utterances weighted by their windows)"
    )
    audio: AudioInfo
    timing_ms: TimingMs


def segment_result(
    span_s: tuple[float, float], row: np.ndarray, speech: bool, active_fraction: float
) -> SegmentResult:
    """One segment's result; a segment without speech carries no label and no scores."""
    scores: dict[str, Any] = dict.fromkeys(
        ("label", "confidence", "probabilities", "arousal", "valence")
    )
    if speech:
        label, confidence = top_label(row)
        arousal, valence = affect_of(row)
        scores = {
            "label": label,
            "confidence": confidence,
            "probabilities": by_label(row),
            "arousal": arousal,
            "valence": valence,
        }
    return SegmentResult(
        start_s=round(span_s[0], 4),
        end_s=round(span_s[1], 4),
        speech=speech,
        active_fraction=round(float(active_fraction), 4),
        **scores,
    )


def predict_response(result: ClipPrediction) -> PredictResponse:
    clip = result.clip
    label, confidence = top_label(result.probabilities)
    segments = [
        segment_result(span, row, bool(speech), fraction)
        for span, row, speech, fraction in zip(
            clip.spans_s, clip.rows, clip.speech, clip.active_fractions, strict=True
        )
    ]
    arousal, valence = affect_of(result.probabilities)
    meta, audio = result.metadata, clip.audio
    return PredictResponse(
        label=label,
        confidence=confidence,
        probabilities=by_label(result.probabilities),
        arousal=arousal,
        valence=valence,
        model=ModelRef(name=meta.name, loss=meta.loss, version=meta.version),
        duration_s=round(audio.duration_s, 4),
        speech_s=round(clip.speech_s, 3),
        padded=clip.padded,
        segmentation=clip.segmentation,
        segments=segments,
        audio=AudioInfo(
            format=audio.source_format,
            sample_rate=audio.source_rate,
            channels=audio.source_channels,
        ),
        timing_ms=TimingMs(
            decode=round(clip.decode_ms, 3),
            vad=round(clip.vad_ms, 3),
            features=round(clip.features_ms, 3),
            inference=round(clip.inference_ms, 3),
            total=round(result.total_ms, 3),
        ),
    )
