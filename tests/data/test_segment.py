"""Silence trim and the fixed window: numpy reproduction of librosa.effects.trim.

The bounds are compared for exact equality. Both sides frame the same centre-padded signal and
threshold the same dB values; they could only differ by one hop if a frame's level fell within
float rounding (librosa sums float32 powers, we sum float64) of the -top_db threshold, which
these signals avoid.
"""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np
import pytest

from app.features import FeatureConfig
from app.segment import frame_rms, trim_bounds
from app.windows import fixed_window, training_segment
from tests.conftest import synth_speechlike

CONFIG = FeatureConfig()
RELATIVE = FeatureConfig(trim_floor="relative")
RATE = CONFIG.sample_rate


def _silence(duration_s: float) -> np.ndarray:
    return np.zeros(int(duration_s * RATE), dtype=np.float32)


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    t = np.arange(int(0.8 * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    floor = (1e-4 * rng.standard_normal(int(2.0 * RATE))).astype(np.float32)
    burst_in_floor = floor.copy()
    burst_in_floor[7_001 : 7_001 + tone.size] += tone
    ramp = np.linspace(0.0, 1.0, RATE) ** 4 * np.sin(2 * np.pi * 300 * np.arange(RATE) / RATE)
    return {
        "speech with silence both sides": np.concatenate(
            [_silence(0.37), synth_speechlike(2.1, RATE), _silence(0.61)]
        ),
        "no silence at all": synth_speechlike(4.2, RATE, seed=1),
        "tone in a noise floor, off the hop grid": burst_in_floor,
        "two bursts with a gap": np.concatenate(
            [_silence(0.2), tone, _silence(0.5), tone, _silence(0.05)]
        ),
        "fade-in ramp": ramp.astype(np.float32),
        "shorter than one trim frame": synth_speechlike(0.05, RATE, seed=2),
        "loud click in silence": np.concatenate(
            [_silence(0.3), np.ones(3, np.float32), _silence(0.3)]
        ),
        # Longer than the frames frame_rms squares at a time (512 hops = 16.4 s): the bounds
        # fall in different blocks.
        "long recording, speech across blocks": np.concatenate(
            [_silence(17.3), synth_speechlike(19.0, RATE, seed=4), _silence(6.1)]
        ),
    }


@pytest.mark.parametrize("name", list(_signals()))
@pytest.mark.parametrize("top_db", [60.0, 30.0])
def test_trim_bounds_equal_librosa(name: str, top_db: float) -> None:
    wave = _signals()[name]
    config = dataclasses.replace(CONFIG, trim_top_db=top_db)
    _, expected = librosa.effects.trim(
        wave,
        top_db=top_db,
        frame_length=config.trim_frame_length,
        hop_length=config.trim_hop_length,
    )
    assert trim_bounds(wave, config) == (int(expected[0]), int(expected[1]))


@pytest.mark.parametrize("name", list(_signals()))
def test_relative_floor_equals_librosa_at_normal_levels(name: str) -> None:
    """Every test signal's loudest frame is above -40 dBFS, where librosa's absolute floor
    never decides: the relative floor gives the same bounds."""
    wave = _signals()[name]
    assert trim_bounds(wave, RELATIVE) == trim_bounds(wave, CONFIG)


def _quiet_take() -> np.ndarray:
    """Speech whose loudest trim frame is near -50 dBFS, between digital silences: a quiet
    microphone's take, or a loud one scaled by -30 dB."""
    speech = synth_speechlike(2.4, RATE, seed=5)
    loudest = frame_rms(speech, CONFIG.trim_frame_length, CONFIG.trim_hop_length).max()
    speech = (speech * (10 ** (-50 / 20) / loudest)).astype(np.float32)
    return np.concatenate([_silence(0.6), speech, _silence(0.45)])


@pytest.mark.parametrize("gain_db", [-30.0, -20.0, -10.0, 0.0, 10.0, 30.0])
def test_relative_floor_trims_at_any_level(gain_db: float) -> None:
    quiet = _quiet_take()
    wave = (quiet * np.float32(10 ** (gain_db / 20))).astype(np.float32)
    start, end = trim_bounds(wave, RELATIVE)
    assert (start, end) == trim_bounds(quiet, RELATIVE)
    assert abs(start - 0.6 * RATE) <= CONFIG.trim_frame_length
    assert abs(end - 3.0 * RATE) <= CONFIG.trim_frame_length
    # The window the model hears is the same samples, scaled.
    np.testing.assert_allclose(
        training_segment(wave, RELATIVE)[0],
        training_segment(quiet, RELATIVE)[0] * np.float32(10 ** (gain_db / 20)),
        rtol=1e-6,
    )


def test_absolute_floor_keeps_a_quiet_takes_silence_as_librosa_does() -> None:
    """Why the release moved off librosa's floor: below -40 dBFS nothing is trimmed."""
    quiet = _quiet_take()
    _, expected = librosa.effects.trim(
        quiet, top_db=60.0, frame_length=CONFIG.trim_frame_length, hop_length=512
    )
    assert trim_bounds(quiet, CONFIG) == (int(expected[0]), int(expected[1])) == (0, quiet.size)
    loud = quiet * np.float32(10 ** (30 / 20))
    assert trim_bounds(loud, CONFIG) == trim_bounds(loud, RELATIVE) != (0, loud.size)


def test_trim_actually_cuts_silence() -> None:
    wave = _signals()["speech with silence both sides"]
    start, end = trim_bounds(wave, CONFIG)
    # The speech starts at 0.37 s and lasts 2.1 s; the trim keeps it within one frame's reach.
    assert abs(start - 0.37 * RATE) <= CONFIG.trim_frame_length
    assert abs(end - 2.47 * RATE) <= CONFIG.trim_frame_length
    assert end - start < wave.size - 0.5 * RATE


def test_all_silent_and_empty_give_zero_span() -> None:
    assert trim_bounds(_silence(1.0), CONFIG) == (0, 0)
    assert trim_bounds(np.zeros(0, np.float32), CONFIG) == (0, 0)
    segment, padded = training_segment(_silence(1.0), CONFIG)
    assert padded and segment.shape == (CONFIG.window_samples,) and not segment.any()


def test_trim_rejects_multichannel() -> None:
    with pytest.raises(ValueError, match="mono"):
        trim_bounds(np.zeros((2, 100), np.float32), CONFIG)


def test_fixed_window_pads_and_cuts() -> None:
    short = np.arange(1, 101, dtype=np.float32)
    out = fixed_window(short, CONFIG)
    assert out.shape == (CONFIG.window_samples,) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:100], short)
    assert not out[100:].any()
    long = np.arange(CONFIG.window_samples + 500, dtype=np.float32)
    np.testing.assert_array_equal(fixed_window(long, CONFIG), long[: CONFIG.window_samples])


def test_training_segment_starts_at_trimmed_start() -> None:
    speech = synth_speechlike(4.5, RATE, seed=4)
    wave = np.concatenate([_silence(0.5), speech])
    segment, padded = training_segment(wave, CONFIG)
    start, _ = trim_bounds(wave, CONFIG)
    assert not padded
    np.testing.assert_array_equal(segment, wave[start : start + CONFIG.window_samples])


def test_training_segment_flags_short_clips() -> None:
    wave = np.concatenate([_silence(0.4), synth_speechlike(1.0, RATE), _silence(0.4)])
    segment, padded = training_segment(wave, CONFIG)
    start, end = trim_bounds(wave, CONFIG)
    assert padded
    np.testing.assert_array_equal(segment[: end - start], wave[start:end])
    assert not segment[end - start :].any()


def test_frame_rms_in_blocks_equals_librosa_rms() -> None:
    wave = _signals()["long recording, speech across blocks"]
    ours = frame_rms(wave, CONFIG.trim_frame_length, CONFIG.trim_hop_length)
    theirs = librosa.feature.rms(
        y=wave, frame_length=CONFIG.trim_frame_length, hop_length=CONFIG.trim_hop_length
    )[0]
    assert ours.shape == theirs.shape and ours.shape[0] > 2 * 512
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-9)
