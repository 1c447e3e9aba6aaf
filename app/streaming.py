"""Live audio to model windows: the state of one streaming session, with no I/O in it.

A client declares its raw PCM format once (sample rate, encoding, channels), then pushes bytes
in chunks of any size. :class:`StreamSession` keeps the bytes of a split sample for the next
chunk, down-mixes to mono, resamples statefully to the model rate with ``soxr.ResampleStream``
(so the chunking never changes the result), keeps the last window of audio and hands back a
:class:`Window` every ``hop_s`` once a full window is available. Window ``k`` covers the model-rate
samples ``[k * hop, k * hop + window)`` of the stream: exactly the span a file cut would give.
Each window comes with its model features (:mod:`app.windows`): a window on the 10 ms frame
grid reuses the frames it shares with the previous one, so a 0.5 s hop computes 50 frames, not
348.

Each window is gated by the trained voice-activity detector (:mod:`app.vad`), which hears the
model-rate samples as they arrive, before any level stage, with its state kept in the session:
a window is speech when at least :data:`app.vad.SPEECH_FRACTION` of its 32 ms frames are
(``active_fraction``); other windows are marked ``speech=False`` and are not classified. Steady
noise, hum and music are not speech at any level; a quiet voice is.
:class:`app.live.LiveStream` classifies the windows; the WebSocket route only moves bytes and
messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final, Literal, get_args

import numpy as np
import soxr

from app.audio import RESAMPLE_QUALITY, check_sample_rate, check_samples, to_mono
from app.features import FeatureConfig
from app.vad import (
    DEFAULT_THRESHOLD,
    FRAME_SAMPLES,
    SPEECH_FRACTION,
    VAD_RATE,
    SpeechDetector,
    default_detector,
    speech_fraction,
)
from app.windows import SlidingFeatures, featurise

Encoding = Literal["pcm_s16le", "pcm_f32le"]
ENCODINGS: Final[tuple[str, ...]] = get_args(Encoding)
BYTES_PER_SAMPLE: Final[dict[str, int]] = {"pcm_s16le": 2, "pcm_f32le": 4}
MAX_CHANNELS: Final[int] = 32
MIN_HOP_S: Final[float] = 0.1
MIN_WINDOW_S: Final[float] = 1.0

# stop() emits a last window when at least this much audio was never inside a window.
MIN_FINAL_S: Final[float] = 0.25
# The most windows one frame of audio may complete: a frame's work (windows cut, featurised
# and classified before the next frame is read) and memory are bounded whatever the client's
# rate, hop and frame size (:attr:`StreamSession.max_frame_bytes`).
MAX_FRAME_WINDOWS: Final[int] = 32


class StreamError(ValueError):
    """A stream that cannot go on; ``code`` is a stable machine-readable reason."""

    code = "stream_error"


class StreamConfigError(StreamError):
    """A start request with a value this server cannot stream (rate, channels, hop, window)."""

    code = "invalid_start"


class UnsupportedEncodingError(StreamConfigError):
    code = "unsupported_encoding"


class PartialFrameError(StreamError):
    """The stream ended inside a sample frame: its byte count never lined up."""

    code = "partial_frame"


class StreamTooLongError(StreamError):
    code = "session_too_long"


@dataclass(frozen=True)
class WindowSpan:
    """Where a window lies in the stream and what the gate heard in it: a :class:`Window`
    without its audio and features, what outlives its classification."""

    index: int
    start_s: float
    end_s: float
    padded_samples: int
    speech: bool
    active_fraction: float
    level_dbfs: float


@dataclass(frozen=True)
class Window(WindowSpan):
    """One model window of the stream: its span, with its audio and features.

    ``samples`` is float32 mono at the model rate, shape ``(window_samples,)``: real audio
    followed by ``padded_samples`` zeros (only the final window of a stream shorter than one
    window is padded). ``start_s``/``end_s`` give the span of real audio in stream time.
    ``features`` are the model's input for it, ``(n_mels, frames)``: those of
    :func:`app.windows.featurise` (the samples zero-padded to the model's window).
    """

    samples: np.ndarray
    features: np.ndarray

    @property
    def span(self) -> WindowSpan:
        """The window without its samples and features."""
        return WindowSpan(**{f.name: getattr(self, f.name) for f in fields(WindowSpan)})


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level of ``samples`` (any shape) in dB relative to full scale; -inf for silence."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


class StreamSession:
    """Raw PCM bytes in, model windows out. Parameters in seconds and Hz, converted once.

    Args:
        config: the model's front-end; its ``sample_rate`` is the rate windows are cut at.
        hop_s: seconds between window starts.
        window_s: window length in seconds, at most the model's ``config.window_s``.
        sample_rate: the client's PCM rate in Hz (8-192 kHz).
        encoding: ``pcm_s16le`` (int16) or ``pcm_f32le`` (float32), little-endian, interleaved.
        channels: interleaved channels, averaged to mono.
        max_duration_s: the most audio one session may carry (None: unlimited).
        detector: the voice-activity detector (default: the process's one).
        vad_threshold: a 32 ms frame is speech from this probability on.
    """

    def __init__(
        self,
        config: FeatureConfig,
        hop_s: float,
        window_s: float,
        sample_rate: int,
        encoding: str,
        channels: int,
        max_duration_s: float | None = None,
        detector: SpeechDetector | None = None,
        vad_threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        _validate(config, hop_s, window_s, sample_rate, encoding, channels)
        self._detector = detector or default_detector()
        self.vad_threshold = float(vad_threshold)
        self.config = config
        self.sample_rate = int(sample_rate)
        self.encoding = encoding
        self.channels = int(channels)
        self.hop_s = float(hop_s)
        self.window_s = float(window_s)
        self.max_duration_s = max_duration_s
        self.model_rate = config.sample_rate
        self.hop_samples = round(self.hop_s * self.model_rate)
        self.window_samples = round(self.window_s * self.model_rate)
        self.frame_bytes = BYTES_PER_SAMPLE[encoding] * self.channels
        self._dtype = np.dtype("<i2" if encoding == "pcm_s16le" else "<f4")
        self._min_final_samples = round(MIN_FINAL_S * self.model_rate)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and start a fresh stream with the same format."""
        self._resampler = (
            None
            if self.sample_rate == self.model_rate
            else soxr.ResampleStream(
                self.sample_rate, self.model_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )
        self._pending = b""  # bytes of a sample frame split across chunks
        self._buffer = np.zeros(0, dtype=np.float32)  # model-rate samples from _buffer_start on
        self._buffer_start = 0  # absolute model-rate index of _buffer[0]
        self._next_start = 0  # absolute start of the next window
        self._covered_until = 0  # absolute end of the last window handed out
        self._windows = 0
        self._input_frames = 0
        self._finished = False
        self._features = SlidingFeatures(self.config)
        self._vad = self._detector.stream()
        self._speech = np.zeros(0, dtype=np.float32)  # frame probabilities from _speech_first
        self._speech_first = 0  # absolute index of the frame _speech[0] judges

    @property
    def duration_s(self) -> float:
        """Seconds of audio received so far (whole sample frames at the client's rate)."""
        return self._input_frames / self.sample_rate

    @property
    def windows(self) -> int:
        return self._windows

    @property
    def max_frame_bytes(self) -> int:
        """The most bytes one frame may carry: audio that completes at most
        :data:`MAX_FRAME_WINDOWS` windows (a frame spanning ``n`` hops completes ``n + 1`` at
        most), in whole sample frames."""
        hops = MAX_FRAME_WINDOWS - 1
        return math.floor(hops * self.hop_s * self.sample_rate) * self.frame_bytes

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample frame waiting for the next chunk."""
        return len(self._pending)

    def push(self, pcm: bytes | bytearray | memoryview) -> list[Window]:
        """Add raw PCM bytes; return the windows completed by them (possibly none).

        Raises:
            app.audio.NonFiniteAudioError, app.audio.SampleRangeError: float samples that are
                NaN, infinite or far past full scale (the rule uploads follow, with their codes).
            StreamTooLongError: the session passed ``max_duration_s``.
        """
        if self._finished:
            raise StreamError("the stream was flushed: call reset() before pushing more audio")
        data = self._pending + bytes(pcm)
        usable = len(data) - len(data) % self.frame_bytes
        self._pending = data[usable:]
        if usable == 0:
            return []
        frames = np.frombuffer(data[:usable], dtype=self._dtype).reshape(-1, self.channels)
        self._input_frames += frames.shape[0]
        if self.max_duration_s is not None and self.duration_s > self.max_duration_s:
            raise StreamTooLongError(
                f"the session passed its {self.max_duration_s:g} s limit: start a new one"
            )
        mono = self._to_float_mono(frames)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
            check_samples(mono)
        self._append(mono)
        return self._take_windows()

    def flush(self) -> list[Window]:
        """End the stream: drain the resampler and return the remaining windows, plus a final
        one when at least ``MIN_FINAL_S`` of audio was never inside a window. That final window
        ends at the last sample (zero-padded at the end only if the stream is shorter than one
        window). After ``flush`` the session accepts no audio until ``reset``.

        Raises:
            PartialFrameError: the bytes received do not end on a whole sample frame.
        """
        if self._finished:
            return []
        self._finished = True
        if self._pending:
            raise PartialFrameError(
                f"the stream ended {len(self._pending)} bytes into a sample frame: send whole "
                f"frames of {self.frame_bytes} bytes ({self.channels} channel(s) x "
                f"{BYTES_PER_SAMPLE[self.encoding]} bytes)"
            )
        if self._resampler is not None:
            self._append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        windows = self._take_windows()
        total = self._buffer_start + self._buffer.shape[0]
        if total - self._covered_until >= self._min_final_samples:
            start = max(total - self.window_samples, 0)
            windows.append(self._make_window(start, total))
        return windows

    def _to_float_mono(self, frames: np.ndarray) -> np.ndarray:
        samples = frames.astype(np.float32)
        if self.encoding == "pcm_s16le":
            samples *= np.float32(1.0 / 32768.0)  # int16 is always finite and in range
        else:
            check_samples(samples)  # the mean of valid channels is valid too
        return np.ascontiguousarray(to_mono(samples), dtype=np.float32)

    def _append(self, samples: np.ndarray) -> None:
        if samples.shape[0]:
            self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
            self._speech = np.concatenate([self._speech, self._vad.push(samples)])

    def _take_windows(self) -> list[Window]:
        """Cut every complete window, then drop the samples no later window needs."""
        windows = []
        total = self._buffer_start + self._buffer.shape[0]
        while self._next_start + self.window_samples <= total:
            windows.append(
                self._make_window(self._next_start, self._next_start + self.window_samples)
            )
            self._next_start += self.hop_samples
        keep_from = min(self._next_start, max(total - self.window_samples, 0))
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :].copy()
            self._buffer_start = keep_from
        first_needed = max(0, keep_from // FRAME_SAMPLES - 1)  # a frame centred at keep_from on
        if first_needed > self._speech_first:
            self._speech = self._speech[first_needed - self._speech_first :].copy()
            self._speech_first = first_needed
        return windows

    def _make_window(self, start: int, end: int) -> Window:
        real = self._buffer[start - self._buffer_start : end - self._buffer_start]
        samples = np.zeros(self.window_samples, dtype=np.float32)
        samples[: real.shape[0]] = real
        offset = self._speech_first * FRAME_SAMPLES
        activity = speech_fraction(self._speech, start - offset, end - offset, self.vad_threshold)
        if self._features.usable(start, real.shape[0]):
            features = self._features.window(self._buffer, self._buffer_start, start)
        else:  # a client-chosen shorter window, or the final one: off the frame grid or padded
            features = featurise([samples], self.config)[0]
        window = Window(
            index=self._windows,
            samples=samples,
            features=features,
            start_s=start / self.model_rate,
            end_s=end / self.model_rate,
            padded_samples=self.window_samples - real.shape[0],
            speech=activity >= SPEECH_FRACTION,
            active_fraction=activity,
            level_dbfs=level_dbfs(real) if real.shape[0] else -math.inf,
        )
        self._windows += 1
        self._covered_until = max(self._covered_until, end)
        return window


def _validate(
    config: FeatureConfig,
    hop_s: float,
    window_s: float,
    sample_rate: int,
    encoding: str,
    channels: int,
) -> None:
    if config.sample_rate != VAD_RATE:
        raise StreamConfigError(
            f"the model's rate is {config.sample_rate} Hz; the speech detector needs {VAD_RATE}"
        )
    if encoding not in ENCODINGS:
        raise UnsupportedEncodingError(
            f"encoding {encoding!r} is not supported: use one of {', '.join(ENCODINGS)}"
        )
    if not _is_number(sample_rate) or not float(sample_rate).is_integer():
        raise StreamConfigError(f"sample_rate must be an integer in Hz, got {sample_rate!r}")
    try:
        check_sample_rate(int(sample_rate))
    except ValueError as e:
        raise StreamConfigError(str(e)) from e
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise StreamConfigError(f"channels must be an integer, got {channels!r}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise StreamConfigError(f"channels must be between 1 and {MAX_CHANNELS}, got {channels}")
    model_window_s = config.window_samples / config.sample_rate
    if not _is_number(window_s) or not MIN_WINDOW_S <= window_s <= model_window_s:
        raise StreamConfigError(
            f"window_s must be between {MIN_WINDOW_S:g} and the model's {model_window_s:g} s, "
            f"got {window_s!r}"
        )
    if not _is_number(hop_s) or not MIN_HOP_S <= hop_s <= window_s:
        raise StreamConfigError(
            f"hop_s must be between {MIN_HOP_S:g} s and window_s ({window_s:g} s), got {hop_s!r}"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
