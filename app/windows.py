"""Model windows: where they lie in a clip or a stream, and their features.

Every path that feeds the model goes through here, so that a span of audio gets the same
window, and the same features, whether it came from training, an upload or a stream:

- :func:`fixed_window`: the model's window of samples from the start of a wave, zero-padded at
  the end when the wave is shorter (the paper's 3.5 s segment);
- :func:`training_segment`: a clip's one training window, from its silence-trimmed start;
- :class:`ClipWindows`: the windows of a silence-trimmed upload: the first is exactly the
  training segment; a longer clip gets more every ``hop_s``, plus one ending at the trim end;
- :func:`featurise`: features of a batch of windows, a few at a time into one array;
- :class:`SlidingFeatures`: the features of a stream's overlapping windows, computing each
  10 ms frame once instead of once per window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from app.features import (
    FeatureConfig,
    analysis_window,
    emphasise,
    frame_mel,
    frame_power,
    frames_of,
    level_gain,
    log_mel,
    mel_features,
)
from app.segment import trim_bounds

FEATURE_CHUNK_WINDOWS: Final[int] = 4  # windows featurised at a time: about 18 MB transient


def fixed_window(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The first ``config.window_samples`` samples of ``wave``, zero-padded at the end if shorter.

    Args:
        wave: mono audio, shape ``(samples,)``.

    Returns:
        float32 array of shape ``(config.window_samples,)``.
    """
    out = np.zeros(config.window_samples, dtype=np.float32)
    head = np.asarray(wave, dtype=np.float32)[: config.window_samples]
    out[: head.shape[0]] = head
    return out


def training_segment(wave: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, bool]:
    """The model input for a clip: silence-trimmed, then one fixed window from the new start.

    Args:
        wave: mono audio at ``config.sample_rate``, shape ``(samples,)``.

    Returns:
        ``(segment, padded)``: float32 ``(config.window_samples,)`` and whether the trimmed clip
        was shorter than the window (so the segment ends in zero padding).
    """
    start, end = trim_bounds(wave, config)
    trimmed = np.asarray(wave)[start:end]
    return fixed_window(trimmed, config), trimmed.shape[0] < config.window_samples


def window_starts(n_samples: int, window_samples: int, hop_samples: int) -> list[int]:
    """Offsets of the windows over ``n_samples`` of trimmed audio: 0, then every
    ``hop_samples`` while a whole window fits, then one window ending at the last sample when
    the hops do not reach it. A clip no longer than one window has the one window at 0."""
    if n_samples <= window_samples:
        return [0]
    starts = list(range(0, n_samples - window_samples + 1, hop_samples))
    if starts[-1] + window_samples < n_samples:
        starts.append(n_samples - window_samples)
    return starts


def featurise(waves: Sequence[np.ndarray] | np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Features ``(len(waves), n_mels, frames)`` of the :func:`fixed_window` of each wave.

    Computed :data:`FEATURE_CHUNK_WINDOWS` windows at a time into one preallocated array, so a
    long clip's windows never exist as samples all at once (a window's samples take as much
    memory as its features).
    """
    out = np.empty((len(waves), config.n_mels, config.window_frames), dtype=np.float32)
    for i in range(0, len(waves), FEATURE_CHUNK_WINDOWS):
        chunk = waves[i : i + FEATURE_CHUNK_WINDOWS]
        out[i : i + len(chunk)] = log_mel(
            np.stack([fixed_window(w, config) for w in chunk]), config
        )
    return out


@dataclass(frozen=True)
class ClipWindows:
    """The windows of one clip, from its silence trim ``[trim_start, trim_start + len(trimmed))``.

    Window ``k`` is ``fixed_window(trimmed[offsets[k]:])``; the first is the clip's
    :func:`training_segment`, so an uploaded test clip gets the offline evaluation's
    probabilities. Every window after the first lies wholly inside the trimmed audio.
    """

    trimmed: np.ndarray
    trim_start: int
    offsets: list[int]
    config: FeatureConfig

    @classmethod
    def of(
        cls, wave: np.ndarray, start: int, end: int, config: FeatureConfig, hop_s: float
    ) -> ClipWindows:
        """The windows of ``wave[start:end]`` (its trim bounds), a window every ``hop_s``."""
        trimmed = wave[start:end]
        hop = max(1, round(hop_s * config.sample_rate))
        return cls(
            trimmed, start, window_starts(trimmed.shape[0], config.window_samples, hop), config
        )

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def padded(self) -> bool:
        """The trimmed clip is shorter than one window: its one window ends in zeros."""
        return self.trimmed.shape[0] < self.config.window_samples

    @property
    def spans(self) -> list[tuple[int, int]]:
        """(start, end) of each window's real audio, samples from the start of the clip."""
        n, size, first = self.trimmed.shape[0], self.config.window_samples, self.trim_start
        return [(first + o, first + min(o + size, n)) for o in self.offsets]

    @property
    def spans_s(self) -> list[tuple[float, float]]:
        """(start_s, end_s) of each window's real audio, seconds from the start of the clip."""
        rate = self.config.sample_rate
        return [(start / rate, end / rate) for start, end in self.spans]

    def features(self, begin: int = 0, end: int | None = None) -> np.ndarray:
        """Features of windows ``begin:end``: ``(n, n_mels, frames)``."""
        return self.features_of(range(len(self.offsets))[begin:end])

    def features_of(self, indices: Sequence[int] | range | np.ndarray) -> np.ndarray:
        """Features of the windows ``indices``: ``(len(indices), n_mels, frames)``."""
        return featurise([self.trimmed[self.offsets[int(k)] :] for k in indices], self.config)


class SlidingFeatures:
    """The features of a stream's full windows, each 10 ms frame computed once.

    The front-end has no centre padding, so frame ``f`` of the stream (samples
    ``[f * hop_length, f * hop_length + win_length)``) has the same mel power in every window
    that contains it. Pre-emphasis restarts at a window's first sample (``y[0] = x[0]`` instead
    of ``x[0] - preemphasis * x[-1]``), but that sample is the first of the window's first frame,
    where the periodic Hann window is exactly 0, so it changes nothing. Windows that start on
    the frame grid therefore need only their new frames: 50 of 348 for the default 0.5 s hop.
    The cache holds each frame's mel power and raw power, so the window's own level gain (the
    level stage) and log come after, per window. The result equals
    :func:`app.features.log_mel` of the window up to float32 rounding (tested).

    Only full, unpadded windows whose start is a multiple of ``hop_length`` go through the cache
    (:meth:`usable`); anything else is featurised whole.
    """

    def __init__(self, config: FeatureConfig) -> None:
        if analysis_window(config.win_length)[0] != 0.0:
            raise ValueError("frame reuse needs an analysis window that starts at 0")
        self.config = config
        self._mel = np.empty((0, config.n_mels), dtype=np.float32)  # (frames, n_mels)
        self._power = np.empty(0, dtype=np.float64)  # (frames,) raw mean square
        self._first = 0  # stream frame index of _mel[0]

    def usable(self, start: int, length: int) -> bool:
        return start % self.config.hop_length == 0 and length == self.config.window_samples

    @property
    def cached_frames(self) -> int:
        return self._mel.shape[0]

    def window(self, audio: np.ndarray, audio_start: int, start: int) -> np.ndarray:
        """Features ``(n_mels, frames)`` of the full window at stream sample ``start``.

        Args:
            audio: the stream's samples from stream sample ``audio_start`` on; they cover the
                window, and the sample before each frame not yet computed (but the window's
                first).
            audio_start: the stream index of ``audio[0]``.
            start: the window's first sample; :meth:`usable` must hold.
        """
        c = self.config
        if not self.usable(start, c.window_samples):
            raise ValueError(f"window at {start} is not on the {c.hop_length}-sample frame grid")
        first = start // c.hop_length
        end = first + c.window_frames
        cached_end = self._first + self._mel.shape[0]
        if first >= cached_end or first < self._first:  # nothing to reuse: start afresh
            self._mel, self._power = self._mel[:0], self._power[:0]
            self._first = cached_end = first
        drop = first - self._first
        self._mel, self._power, self._first = self._mel[drop:], self._power[drop:], first
        if end > cached_end:
            # Frames cached_end..end-1, pre-emphasised as one stretch of the stream. The sample
            # before the stretch is there unless the stretch starts at the window's first
            # frame, whose first sample the Hann window ignores (see the class docstring).
            lo = cached_end * c.hop_length - audio_start
            hi = (end - 1) * c.hop_length + c.win_length - audio_start
            stretch = audio[max(lo - 1, 0) : hi]
            emphasised = emphasise(stretch, c)[1:] if lo > 0 else emphasise(stretch, c)
            raw = audio[lo:hi]
            self._mel = np.concatenate([self._mel, frame_mel(frames_of(emphasised, c), c)])
            self._power = np.concatenate([self._power, frame_power(frames_of(raw, c))])
        mel, power = self._mel[: c.window_frames], self._power[: c.window_frames]
        return mel_features(mel, c, level_gain(power, c) if c.level != "none" else 1.0)
