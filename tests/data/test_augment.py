"""Noise augmentation: the drawn SNR is the measured SNR, and held-out clips are never copied."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import synth_speechlike
from training.augment import add_noise, noisy_copies, training_set, valid_samples

RATE = 16_000
WINDOW = 8_000


def _segments() -> np.ndarray:
    """Six 0.5 s segments; the odd ones are short clips ending in zero padding."""
    out = np.zeros((6, WINDOW), dtype=np.float32)
    for i in range(6):
        length = WINDOW if i % 2 == 0 else 3_000 + 500 * i
        out[i, :length] = synth_speechlike(length / RATE, RATE, seed=i)[:length] * (0.2 + 0.3 * i)
    return out


def _measured_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    n = valid_samples(clean)
    signal = np.mean(clean[:n].astype(np.float64) ** 2)
    noise = np.mean((noisy[:n].astype(np.float64) - clean[:n]) ** 2)
    return float(10 * np.log10(signal / noise))


@pytest.mark.parametrize("snr_db", [0.0, 15.0, 22.5, 30.0])
def test_add_noise_hits_the_requested_snr(snr_db: float) -> None:
    for segment in _segments():
        noisy = add_noise(segment, snr_db, np.random.default_rng(1))
        assert _measured_snr_db(segment, noisy) == pytest.approx(snr_db, abs=0.01)


def test_noisy_copies_measured_snr_equals_the_draws() -> None:
    segments = _segments()
    copies = noisy_copies(segments, np.random.default_rng(7), copies=2, snr_db=(15.0, 30.0))
    assert copies.shape == (12, WINDOW) and copies.dtype == np.float32
    # noisy_copies draws all SNRs first, (copies, n), then the noise.
    drawn = np.random.default_rng(7).uniform(15.0, 30.0, size=(2, 6))
    for c in range(2):
        for i, clean in enumerate(segments):
            measured = _measured_snr_db(clean, copies[c * 6 + i])
            assert measured == pytest.approx(drawn[c, i], abs=0.01)
    assert np.ptp(drawn) > 3.0  # the draws really vary per copy


def test_padding_stays_silent_and_copies_differ() -> None:
    segments = _segments()
    copies = noisy_copies(segments, np.random.default_rng(0), copies=2)
    for i in (1, 3, 5):
        n = valid_samples(segments[i])
        assert n < WINDOW
        assert not copies[i, n:].any() and not copies[6 + i, n:].any()
    assert not np.array_equal(copies[:6], copies[6:])
    silent = np.zeros((1, WINDOW), dtype=np.float32)
    assert not noisy_copies(silent, np.random.default_rng(0)).any()


def test_only_training_rows_are_augmented() -> None:
    segments = _segments()
    labels = np.arange(6)
    splits = ["train", "val", "train", "test", "val", "train"]
    result = training_set(segments, labels, splits, np.random.default_rng(3), copies=2)
    train_rows = [0, 2, 5]
    assert result.waves.shape == (9, WINDOW)
    assert result.source.tolist() == train_rows * 3
    assert result.labels.tolist() == train_rows * 3
    assert result.noisy.tolist() == [False] * 3 + [True] * 6
    np.testing.assert_array_equal(result.waves[:3], segments[train_rows])
    # No row of the training array is, or is a noisy copy of, a validation/test clip: each
    # noisy row's difference from its claimed source is small noise, far from any other clip.
    for row, src in zip(result.waves[3:], result.source[3:], strict=True):
        distances = [np.mean((row - s) ** 2) for s in segments]
        assert int(np.argmin(distances)) == src
    held_out = {1, 3, 4}
    assert held_out.isdisjoint(result.source.tolist())


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        noisy_copies(_segments(), np.random.default_rng(0), snr_db=(30.0, 15.0))
    with pytest.raises(ValueError, match=r"\(n, samples\)"):
        noisy_copies(np.zeros(10, np.float32), np.random.default_rng(0))
