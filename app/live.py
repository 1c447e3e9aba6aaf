"""One live stream over the serving path: raw PCM bytes in, classified windows out.

:class:`LiveStream` is the state machine of a streaming session. It puts a
:class:`app.streaming.StreamSession` (bytes to model windows and their features) in front of a
served model, classifies each speech window through the model's batcher, and keeps a
:class:`PredictionTrack` (smoothing and the session's totals). Its calls block: the WebSocket
route runs them on a worker thread, one at a time per session, so a chunk's resampling,
features and inference take one hand-off from the event loop instead of one per stage. The
route only turns what comes back into messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from app import metrics
from app.contract import top_label
from app.labels import LABELS
from app.registry import ServedModel
from app.streaming import StreamSession, Window, WindowSpan

SMOOTHING_S: Final[float] = 1.5  # time constant of the exponential moving average


class PredictionTrack:
    """Per-session bookkeeping of predictions: an exponential moving average for display and
    the totals for the summary. Silent windows leave both untouched.

    Args:
        hop_s: seconds between predictions; with ``smoothing_s`` it sets the EMA weight
            ``alpha = 1 - exp(-hop_s / smoothing_s)``.
    """

    def __init__(self, hop_s: float, smoothing_s: float = SMOOTHING_S) -> None:
        self.alpha = 1.0 - math.exp(-hop_s / smoothing_s)
        self.reset()

    def reset(self) -> None:
        self.smoothed: np.ndarray | None = None
        self._sum = np.zeros(len(LABELS), dtype=np.float64)
        self.windows = 0
        self.speech_windows = 0

    def add(self, probabilities: np.ndarray | None) -> np.ndarray | None:
        """Record one window (``probabilities`` of shape ``(n_labels,)``, or None for a silent
        window) and return the smoothed probabilities so far (None before the first speech)."""
        self.windows += 1
        if probabilities is None:
            return self.smoothed
        p = np.asarray(probabilities, dtype=np.float64)
        self.speech_windows += 1
        self._sum += p
        self.smoothed = (
            p if self.smoothed is None else self.smoothed + self.alpha * (p - self.smoothed)
        )
        return self.smoothed

    @property
    def mean(self) -> np.ndarray | None:
        """Mean probabilities over the speech windows, shape ``(n_labels,)``; None if none."""
        return self._sum / self.speech_windows if self.speech_windows else None


@dataclass(frozen=True)
class ClassifiedWindow:
    """A window's span with its probabilities (None when it is not speech) and the smoothed
    ones after it (None before the session's first speech window). The window's samples and
    features are not kept: they are dropped once classified."""

    span: WindowSpan
    probabilities: np.ndarray | None
    smoothed: np.ndarray | None


@dataclass(frozen=True)
class StreamTotals:
    """What a session amounted to: audio received, windows, and the mean probabilities over
    its speech windows (None if it had none)."""

    duration_s: float
    windows: int
    speech_windows: int
    probabilities: np.ndarray | None


class LiveStream:
    """A session's windows classified by ``model``. Not thread-safe: one call at a time.

    Errors of the audio (:class:`app.audio.AudioError`) and of the stream
    (:class:`app.streaming.StreamError`) come from the session unchanged; a failed inference
    raises :class:`app.engine.InferenceError`.
    """

    def __init__(self, session: StreamSession, model: ServedModel) -> None:
        self.session = session
        self.model = model
        self.track = PredictionTrack(session.hop_s)

    def push(self, pcm: bytes | bytearray | memoryview) -> list[ClassifiedWindow]:
        """Add a chunk of PCM; return the windows it completed, classified."""
        before_s = self.session.duration_s
        windows = self.session.push(pcm)
        metrics.AUDIO_SECONDS.labels(source="stream").inc(self.session.duration_s - before_s)
        return self._classify(windows)

    def finish(self) -> list[ClassifiedWindow]:
        """End the stream: the remaining windows (see :meth:`StreamSession.flush`), classified."""
        return self._classify(self.session.flush())

    @property
    def totals(self) -> StreamTotals:
        return StreamTotals(
            duration_s=self.session.duration_s,
            windows=self.track.windows,
            speech_windows=self.track.speech_windows,
            probabilities=self.track.mean,
        )

    def _classify(self, windows: list[Window]) -> list[ClassifiedWindow]:
        """Classify the speech windows in one call; silent ones keep no probabilities."""
        speech = [w.features for w in windows if w.speech]
        rows = iter(self.model.predict(np.stack(speech)) if speech else ())
        classified = []
        for window in windows:
            p = next(rows) if window.speech else None
            if p is not None:
                metrics.PREDICTIONS.labels(model=self.model.key, label=top_label(p)[0]).inc()
            classified.append(ClassifiedWindow(window.span, p, self.track.add(p)))
        return classified
