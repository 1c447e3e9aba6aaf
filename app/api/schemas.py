"""The HTTP response of ``/v1/predict``, built from the domain result
(:class:`app.prediction.ClipPrediction`).

The route sends :func:`predict_response`'s JSON itself (``response_model`` is for the OpenAPI
schema only), so each response is validated and serialised once, here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.affect import AROUSAL_HELP, VALENCE_HELP, affect_of
from app.contract import by_label, top_label
from app.prediction import ClipPrediction


class ModelRef(BaseModel):
    name: str = Field(examples=["ser-ce"])
    loss: str = Field(examples=["ce"])
    version: str


class SegmentResult(BaseModel):
    start_s: float = Field(description="window start, seconds from the start of the audio")
    end_s: float = Field(description="end of the real audio in the window (padding excluded)")
    label: str
    confidence: float
    probabilities: dict[str, float]
    arousal: float = Field(description=AROUSAL_HELP)
    valence: float = Field(description=VALENCE_HELP)


class AudioInfo(BaseModel):
    format: str = Field(examples=["WAV"])
    sample_rate: int = Field(description="the upload's sample rate, Hz, before resampling")
    channels: int


class TimingMs(BaseModel):
    decode: float
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
    padded: bool = Field(description="the trimmed clip was shorter than one window")
    segments: list[SegmentResult] = Field(description="one result per model window")
    audio: AudioInfo
    timing_ms: TimingMs


def predict_response(result: ClipPrediction) -> PredictResponse:
    clip = result.clip
    label, confidence = top_label(result.probabilities)
    segments = [
        SegmentResult(
            start_s=round(start_s, 4),
            end_s=round(end_s, 4),
            label=row_label,
            confidence=row_confidence,
            probabilities=by_label(row),
            arousal=arousal,
            valence=valence,
        )
        for (start_s, end_s), row in zip(clip.spans_s, clip.rows, strict=True)
        for (row_label, row_confidence), (arousal, valence) in [(top_label(row), affect_of(row))]
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
        padded=clip.padded,
        segments=segments,
        audio=AudioInfo(
            format=audio.source_format,
            sample_rate=audio.source_rate,
            channels=audio.source_channels,
        ),
        timing_ms=TimingMs(
            decode=round(clip.decode_ms, 3),
            features=round(clip.features_ms, 3),
            inference=round(clip.inference_ms, 3),
            total=round(result.total_ms, 3),
        ),
    )
