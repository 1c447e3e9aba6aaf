"""The speech detector (app/vad.py): streamed in any chunking as at once, and utterances."""

from __future__ import annotations

import numpy as np
import pytest

from app.vad import FRAME_SAMPLES, default_detector, frame_span, speech_fraction, utterances
from tests.conftest import synth_speechlike

RATE = 16_000


def test_a_stream_in_any_chunking_hears_what_the_whole_clip_does() -> None:
    wave = np.concatenate([np.zeros(RATE // 3, np.float32), synth_speechlike(3.0, RATE)])
    detector = default_detector()
    whole = detector.probabilities(wave)
    assert whole.shape == (wave.size // FRAME_SAMPLES,)
    for chunk in (1, 100, 511, 513, 4000):
        stream = detector.stream()
        parts = [stream.push(wave[i : i + chunk]) for i in range(0, wave.size, chunk)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    # Silence first, then a voice: the detector says so frame by frame.
    assert whole[:8].max() < 0.1 and np.mean(whole[16:] >= 0.5) > 0.7


def test_frames_count_by_their_centre() -> None:
    assert frame_span(0, 512) == (0, 1)
    assert frame_span(256, 768) == (0, 1)  # frame 0's centre is sample 256
    assert frame_span(257, 1024) == (1, 2)
    p = np.array([0.9, 0.1, 0.9, 0.9], dtype=np.float32)
    assert speech_fraction(p, 0, 4 * FRAME_SAMPLES) == 0.75
    assert speech_fraction(p, 0, 4 * FRAME_SAMPLES, threshold=0.95) == 0.0
    assert speech_fraction(p, 10 * FRAME_SAMPLES, 12 * FRAME_SAMPLES) == 0.0  # past the end


def frames(pattern: str) -> np.ndarray:
    """One frame per character: ``#`` speech (0.9), ``-`` a weak frame (0.4), ``.`` none."""
    return np.array([{"#": 0.9, "-": 0.4, ".": 0.05}[c] for c in pattern], dtype=np.float32)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("." * 5 + "#" * 20 + "." * 30 + "#" * 20, [(5, 25), (55, 75)]),  # a 0.96 s pause splits
        ("#" * 20 + "." * 10 + "#" * 20, [(0, 50)]),  # a 0.32 s breath does not
        ("#" * 20 + "-" * 30 + "#" * 5, [(0, 55)]),  # weak frames keep an utterance going
        ("." * 10 + "####" + "." * 40, []),  # 0.13 s: a click, not an utterance
    ],
)
def test_utterances(pattern: str, expected: list[tuple[int, int]]) -> None:
    spans = utterances(frames(pattern))
    assert spans == [(a * FRAME_SAMPLES, b * FRAME_SAMPLES) for a, b in expected]
