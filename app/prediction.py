"""One clip to one result: decode -> windows -> features -> probabilities.

The clip is silence-trimmed as in training (:func:`app.segment.trim_bounds`) and cut into model
windows by :class:`app.windows.ClipWindows`: the first is exactly the training segment, so
posting a test clip gives the offline evaluation's probabilities; a longer clip gets a window
every ``hop_s`` wholly inside the trimmed speech.

Every window is gated by the speech detector (:mod:`app.vad`) run over the whole decoded clip:
a window is speech when :data:`app.vad.SPEECH_FRACTION` of its 32 ms frames are. Windows without
speech are not classified and carry no probabilities; a clip with no speech window is refused
(422 ``no_speech``). The silence trim and the window cut stay exactly training's: the detector
decides which windows are heard, not where they start.

With ``segmentation="utterances"`` the segments are the utterances the detector finds instead
(speech between pauses, :func:`app.vad.utterances`), each the mean of the windows cut from it
as from a trimmed clip: what a caller sounded like in each turn.

The clip's probabilities are the mean of its speech windows' (which still sums to 1; with
utterances, each utterance weighs as many windows as it has). Times are seconds from the start
of the uploaded audio. The HTTP response is built from the result in
:mod:`app.api.schemas`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

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
from app.errors import NoSpeechError, UnusableAudioError
from app.labels import LABELS
from app.registry import ServedModel
from app.segment import trim_bounds
from app.settings import Settings
from app.vad import (
    DEFAULT_THRESHOLD,
    FRAME_SAMPLES,
    SPEECH_FRACTION,
    default_detector,
    speech_fraction,
    utterances,
)
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
    vad_threshold: float = DEFAULT_THRESHOLD  # a 32 ms frame is speech from this probability

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipLimits:
        return cls(
            settings.max_audio_s,
            settings.min_audio_s,
            settings.max_decoded_samples,
            settings.max_header_s,
            settings.vad_threshold,
        )


Segmentation = Literal["windows", "utterances"]


@dataclass(frozen=True)
class ClassifiedClip:
    """What the lane thread hands back: the decoded clip's segments and their probabilities.

    A segment is a model window (``windows``) or an utterance (``utterances``: the mean of the
    windows cut from it, ``weights`` their number)."""

    audio: Audio
    segmentation: Segmentation
    spans_s: list[tuple[float, float]]  # (start_s, end_s) of each segment's real audio
    padded: bool
    rows: np.ndarray  # (n_segments, 8); NaN rows for the segments without speech
    speech: np.ndarray  # (n_segments,) bool: the segments the detector hears a voice in
    active_fractions: np.ndarray  # (n_segments,) each segment's share of speech frames
    weights: np.ndarray  # (n_segments,) each segment's weight in the clip's mean
    speech_s: float  # seconds of the whole clip's frames that are speech
    decode_ms: float
    vad_ms: float
    features_ms: float
    inference_ms: float

    @property
    def probabilities(self) -> np.ndarray:
        """The weighted mean of the speech segments' rows ``(8,)``, summing to 1."""
        heard = self.speech
        mean = np.average(self.rows[heard].astype(np.float64), axis=0, weights=self.weights[heard])
        return mean / mean.sum()


@dataclass(frozen=True)
class ClipPrediction:
    """The result of one upload: the classified clip, the mean of its segments' probabilities,
    the model that made them and the request's total time."""

    clip: ClassifiedClip
    probabilities: np.ndarray  # (8,), the clip's weighted mean, summing to 1
    metadata: ModelMetadata
    total_ms: float


@dataclass
class _Clock:
    features_ms: float = 0.0
    inference_ms: float = 0.0


@dataclass(frozen=True)
class _Segments:
    spans_s: list[tuple[float, float]]
    rows: np.ndarray
    speech: np.ndarray
    fractions: np.ndarray
    weights: np.ndarray


def classify_clip(
    data: bytes,
    model: ServedModel,
    hop_s: float,
    limits: ClipLimits,
    lane_samples: int | None = None,
    segmentation: Segmentation = "windows",
) -> ClassifiedClip:
    """Decode ``data``, hear where the speech is, cut it into segments and classify them; runs
    on a lane thread.

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
        NoSpeechError: sound, but no segment with speech in it.
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
            f"the audio lasts {audio.duration_s:.6g} s; send at least {limits.min_audio_s:g} s",
        )
    start, end = trim_bounds(audio.samples, config)
    if end <= start or is_silent(audio.samples):
        raise UnusableAudioError("the audio is silent: there is no sound to classify")
    frames = default_detector().probabilities(audio.samples)
    heard = time.perf_counter()
    speech_s = float(np.count_nonzero(frames >= limits.vad_threshold)) * FRAME_SAMPLES
    speech_s /= config.sample_rate
    clock = _Clock()
    if segmentation == "utterances":
        spans = utterances(frames, limits.vad_threshold)
        segments = _by_utterances(audio, spans, frames, model, hop_s, limits, clock)
    else:
        windows = ClipWindows.of(audio.samples, start, end, config, hop_s)
        segments = _by_windows(windows, frames, model, limits, clock)
    if not segments.speech.any():
        raise NoSpeechError(
            f"no voice in the audio: the speech detector heard {speech_s:.2f} s of speech and "
            f"no {segmentation[:-1]} with {SPEECH_FRACTION:.0%} of it speech; send a "
            "recording of someone speaking"
        )
    return ClassifiedClip(
        audio=audio,
        segmentation=segmentation,
        spans_s=segments.spans_s,
        padded=end - start < config.window_samples,
        rows=segments.rows,
        speech=segments.speech,
        active_fractions=segments.fractions,
        weights=segments.weights,
        speech_s=speech_s,
        decode_ms=(decoded - started) * 1e3,
        vad_ms=(heard - decoded) * 1e3,
        features_ms=clock.features_ms,
        inference_ms=clock.inference_ms,
    )


def _by_windows(
    windows: ClipWindows,
    frames: np.ndarray,
    model: ServedModel,
    limits: ClipLimits,
    clock: _Clock,
) -> _Segments:
    """The clip's model windows (the first is the training segment), speech ones classified."""
    fractions = np.array(
        [speech_fraction(frames, a, b, limits.vad_threshold) for a, b in windows.spans]
    )
    speech = fractions >= SPEECH_FRACTION
    rows = np.full((len(windows), len(LABELS)), np.nan, dtype=np.float32)
    heard = np.flatnonzero(speech)
    rows[heard] = _classify(model, windows, heard, clock)
    return _Segments(windows.spans_s, rows, speech, fractions, speech.astype(np.float64))


def _by_utterances(
    audio: Audio,
    spans: list[tuple[int, int]],
    frames: np.ndarray,
    model: ServedModel,
    hop_s: float,
    limits: ClipLimits,
    clock: _Clock,
) -> _Segments:
    """One segment per utterance: the mean of the windows cut from it as from a trimmed clip
    (one window, zero-padded, for an utterance shorter than a window)."""
    config = model.feature_config
    rows = np.empty((len(spans), len(LABELS)), dtype=np.float32)
    weights = np.empty(len(spans), dtype=np.float64)
    for k, (a, b) in enumerate(spans):
        windows = ClipWindows.of(audio.samples, a, b, config, hop_s)
        rows[k] = _classify(model, windows, np.arange(len(windows)), clock).mean(axis=0)
        weights[k] = len(windows)
    fractions = np.array([speech_fraction(frames, a, b, limits.vad_threshold) for a, b in spans])
    rate = config.sample_rate
    spans_s = [(a / rate, b / rate) for a, b in spans]
    return _Segments(spans_s, rows, np.ones(len(spans), dtype=bool), fractions, weights)


def _classify(
    model: ServedModel, windows: ClipWindows, indices: np.ndarray, clock: _Clock
) -> np.ndarray:
    """Probabilities ``(len(indices), 8)`` of ``windows[indices]``, a batch at a time."""
    rows = np.empty((len(indices), len(LABELS)), dtype=np.float32)
    step = model.batcher.max_batch_size
    for i in range(0, len(indices), step):
        chunk_started = time.perf_counter()
        features = windows.features_of(indices[i : i + step])
        chunk_featurised = time.perf_counter()
        rows[i : i + features.shape[0]] = model.predict(features)
        clock.features_ms += (chunk_featurised - chunk_started) * 1e3
        clock.inference_ms += (time.perf_counter() - chunk_featurised) * 1e3
    return rows


async def predict_clip(
    data: bytes,
    model: ServedModel,
    hop_s: float,
    limits: ClipLimits,
    pools: WorkPools,
    started: float | None = None,
    segmentation: Segmentation = "windows",
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
            classify_clip, data, model, hop_s, limits, pools.long_lane_samples, segmentation
        )
    except LaneBudgetExceeded:
        metrics.LANE_MOVES.inc()
        clip = await pools.long.run(classify_clip, data, model, hop_s, limits, None, segmentation)
    mean = clip.probabilities
    metrics.PREDICTIONS.labels(model.key, LABELS[int(np.argmax(mean))]).inc()
    metrics.AUDIO_SECONDS.labels("upload").inc(clip.audio.duration_s)
    return ClipPrediction(
        clip, mean, model.metadata, total_ms=(time.perf_counter() - started) * 1e3
    )
