"""One clip to one result: decode -> windows -> features -> probabilities.

The clip is silence-trimmed as in training (:func:`app.segment.trim_bounds`) and cut into model
windows by :class:`app.windows.ClipWindows`: the first is exactly the training segment, so
posting a test clip gives the offline evaluation's probabilities; a longer clip gets a window
every ``hop_s`` wholly inside the trimmed speech.

The clip's probabilities are the mean of the windows' (which still sums to 1). Times are seconds
from the start of the uploaded audio. The HTTP response is built from the result in
:mod:`app.api.schemas`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from app import metrics
from app.audio import (
    DEFAULT_MAX_DECODED_SAMPLES,
    Audio,
    LaneBudgetExceeded,
    decode_audio,
    is_silent,
)
from app.contract import ModelMetadata
from app.errors import UnusableAudioError
from app.labels import LABELS
from app.registry import ServedModel
from app.segment import trim_bounds
from app.settings import Settings
from app.windows import ClipWindows
from app.workpool import WorkPools


@dataclass(frozen=True)
class ClipLimits:
    """What one upload may be: seconds of audio, samples (frames x channels) to decode, and
    seconds to read its header."""

    max_audio_s: float
    min_audio_s: float
    max_decoded_samples: int = DEFAULT_MAX_DECODED_SAMPLES
    max_header_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipLimits:
        return cls(
            settings.max_audio_s,
            settings.min_audio_s,
            settings.max_decoded_samples,
            settings.max_header_s,
        )


@dataclass(frozen=True)
class ClassifiedClip:
    """What the lane thread hands back: the decoded clip's windows and their probabilities."""

    audio: Audio
    spans_s: list[tuple[float, float]]  # (start_s, end_s) of each window's real audio
    padded: bool
    rows: np.ndarray  # (n_windows, 8)
    decode_ms: float
    features_ms: float
    inference_ms: float


@dataclass(frozen=True)
class ClipPrediction:
    """The result of one upload: the classified clip, the mean of its windows' probabilities,
    the model that made them and the request's total time."""

    clip: ClassifiedClip
    probabilities: np.ndarray  # (8,), the mean of clip.rows, summing to 1
    metadata: ModelMetadata
    total_ms: float


def classify_clip(
    data: bytes,
    model: ServedModel,
    hop_s: float,
    limits: ClipLimits,
    lane_samples: int | None = None,
) -> ClassifiedClip:
    """Decode ``data``, cut it into windows and classify them; runs on a lane thread.

    Everything that parses the client's bytes, the header included, happens here, never on
    the event loop. ``lane_samples`` is the most samples (frames x channels) the calling lane
    takes: the header is read first, and decoding stops as soon as either the header or the
    samples really decoded pass it (a header may lie about the length).

    The windows go to the model's batcher one batch at a time (so a long clip's features are
    never all held: 10 minutes would be 60 MB) and this thread waits for each batch; other
    requests' windows join the same runs.

    Raises:
        app.audio.AudioError: the bytes are not usable audio (see :func:`decode_audio`).
        UnusableAudioError: shorter than ``limits.min_audio_s``, or silent.
        app.engine.InferenceError: the model failed on the clip's windows.
        app.audio.LaneBudgetExceeded: longer than ``lane_samples``; nothing was classified.
    """
    config = model.feature_config
    started = time.perf_counter()
    audio = decode_audio(
        data,
        target_rate=config.sample_rate,
        max_duration_s=limits.max_audio_s,
        max_decoded_samples=limits.max_decoded_samples,
        max_header_s=limits.max_header_s,
        lane_samples=lane_samples,
    )
    decoded = time.perf_counter()
    if audio.duration_s < limits.min_audio_s:
        raise UnusableAudioError(
            f"the audio lasts {audio.duration_s:.3f} s; send at least {limits.min_audio_s:g} s",
        )
    start, end = trim_bounds(audio.samples, config)
    if end <= start or is_silent(audio.samples):
        raise UnusableAudioError("the audio is silent: there is no sound to classify")
    windows = ClipWindows.of(audio.samples, start, end, config, hop_s)
    rows = np.empty((len(windows), len(LABELS)), dtype=np.float32)
    features_ms = inference_ms = 0.0
    step = model.batcher.max_batch_size
    for i in range(0, len(windows), step):
        chunk_started = time.perf_counter()
        features = windows.features(i, i + step)
        chunk_featurised = time.perf_counter()
        rows[i : i + features.shape[0]] = model.predict(features)
        features_ms += (chunk_featurised - chunk_started) * 1e3
        inference_ms += (time.perf_counter() - chunk_featurised) * 1e3
    return ClassifiedClip(
        audio,
        windows.spans_s,
        windows.padded,
        rows,
        (decoded - started) * 1e3,
        features_ms,
        inference_ms,
    )


async def predict_clip(
    data: bytes,
    model: ServedModel,
    hop_s: float,
    limits: ClipLimits,
    pools: WorkPools,
    started: float | None = None,
) -> ClipPrediction:
    """The full ``/predict`` computation for one upload; no client byte is parsed on the loop.

    Every upload starts in the short lane, where :func:`classify_clip` reads the header and
    decodes at most ``pools.long_lane_samples``; one that turns out longer, by its header or
    by what it really decodes to, is moved to the long lane and decoded there from the start
    (the short lane's work on it is bounded by that budget), so neither a long clip nor a
    header that lies about its length can hold the short lane's threads.
    ``started`` (a ``time.perf_counter()`` value) is when the request arrived, so that the
    reported total includes reading the upload.

    Raises:
        app.workpool.LaneFullError: the lane's threads and queue are full.
    """
    started = time.perf_counter() if started is None else started
    try:
        clip = await pools.short.run(
            classify_clip, data, model, hop_s, limits, pools.long_lane_samples
        )
    except LaneBudgetExceeded:
        metrics.LANE_MOVES.inc()
        clip = await pools.long.run(classify_clip, data, model, hop_s, limits, None)
    mean = clip.rows.mean(axis=0, dtype=np.float64)
    mean /= mean.sum()
    metrics.PREDICTIONS.labels(model.key, LABELS[int(np.argmax(mean))]).inc()
    metrics.AUDIO_SECONDS.labels("upload").inc(clip.audio.duration_s)
    return ClipPrediction(
        clip, mean, model.metadata, total_ms=(time.perf_counter() - started) * 1e3
    )
