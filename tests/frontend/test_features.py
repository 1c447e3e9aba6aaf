"""The shared front-end: one FeatureConfig, one log_mel, identical wherever it runs."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from app.features import FeatureConfig, FeatureConfigError, log_mel, mel_filters
from tests.conftest import synth_speechlike
from training.melbank import design_mel_filters

CONFIG = FeatureConfig()


def test_frozen_filterbank_equals_librosa_design() -> None:
    np.testing.assert_allclose(mel_filters(CONFIG), design_mel_filters(CONFIG), atol=1e-8)


def test_shape_and_frame_count() -> None:
    wave = synth_speechlike(CONFIG.window_s, CONFIG.sample_rate)
    features = log_mel(wave, CONFIG)
    assert features.shape == (CONFIG.n_mels, CONFIG.window_frames)
    assert features.dtype == np.float32
    assert CONFIG.window_frames == 1 + (56_000 - 400) // 160


def test_matches_librosa_power_mel() -> None:
    """Our framing puts the 400-sample frame first in the 512-point FFT; librosa centres it.

    The power spectrum is the same, so shifting the signal by the 56-sample offset lines the two up.
    """
    wave = synth_speechlike(1.0, CONFIG.sample_rate)
    ours = log_mel(wave, CONFIG)
    emphasised = np.concatenate([wave[:1], wave[1:] - 0.97 * wave[:-1]])
    offset = (CONFIG.n_fft - CONFIG.win_length) // 2
    reference = librosa.feature.melspectrogram(
        y=np.concatenate([np.zeros(offset, np.float32), emphasised]),
        sr=CONFIG.sample_rate,
        n_fft=CONFIG.n_fft,
        win_length=CONFIG.win_length,
        hop_length=CONFIG.hop_length,
        center=False,
        n_mels=CONFIG.n_mels,
        fmin=CONFIG.f_min,
        fmax=CONFIG.f_max,
        window="hann",
        power=2.0,
    )
    reference_log = np.log(np.maximum(reference, CONFIG.log_floor))
    np.testing.assert_allclose(ours[:, : reference.shape[1]], reference_log, atol=1e-3)


def test_batch_path_equals_single_path() -> None:
    """Training computes features in batches, serving one window at a time: same numbers."""
    waves = np.stack([synth_speechlike(CONFIG.window_s, 16_000, seed=s) for s in range(3)])
    batched = log_mel(waves, CONFIG)
    for i, wave in enumerate(waves):
        np.testing.assert_allclose(batched[i], log_mel(wave, CONFIG), atol=1e-5)


def test_window_cut_from_a_file_equals_the_same_frames_of_the_whole_file() -> None:
    """No centre padding and no per-clip statistics: a span's features depend on it alone.

    A window starting on the file's frame grid reproduces the whole file's frames; only its
    frame 0 differs, because its pre-emphasis has no previous sample to look at.
    """
    long_wave = synth_speechlike(8.0, 16_000, seed=3)
    first_frame = 217
    start = first_frame * CONFIG.hop_length
    window = long_wave[start : start + CONFIG.window_samples]
    whole = log_mel(long_wave, CONFIG)
    cut = log_mel(window, CONFIG)
    assert cut.shape == (CONFIG.n_mels, CONFIG.window_frames)
    np.testing.assert_allclose(
        cut[:, 1:], whole[:, first_frame + 1 : first_frame + CONFIG.window_frames], atol=1e-4
    )


def test_normalisation_uses_stored_statistics() -> None:
    wave = synth_speechlike(2.0, 16_000)
    raw = log_mel(wave, CONFIG)
    mean, std = raw.mean(axis=1), raw.std(axis=1) + 1e-3
    normalised = log_mel(wave, CONFIG.with_stats(mean, std))
    np.testing.assert_allclose(normalised, (raw - mean[:, None]) / std[:, None], atol=1e-4)


def test_silence_hits_the_fixed_floor_not_a_clip_statistic() -> None:
    features = log_mel(np.zeros(16_000, np.float32), CONFIG)
    np.testing.assert_allclose(features, np.log(CONFIG.log_floor), rtol=1e-6)


def test_config_round_trips_through_dict() -> None:
    config = CONFIG.with_stats(np.arange(128.0), np.ones(128))
    again = FeatureConfig.from_dict(config.to_dict())
    assert again == config
    assert again.same_transform(CONFIG)
    assert not FeatureConfig(n_mels=64).same_transform(CONFIG)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"win_length": 1024},
        {"f_max": 9_000.0},
        {"log_floor": 0.0},
        {"mean": (0.0,) * 128},
        {"mean": (0.0,) * 3, "std": (1.0,) * 3},
    ],
)
def test_invalid_configs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(FeatureConfigError):
        FeatureConfig(**kwargs)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(FeatureConfigError, match="unknown"):
        FeatureConfig.from_dict({**CONFIG.to_dict(), "n_mfcc": 13})


def test_unfrozen_filterbank_says_how_to_fix() -> None:
    with pytest.raises(FeatureConfigError, match="freeze-mel"):
        log_mel(np.zeros(16_000, np.float32), FeatureConfig(n_mels=80))


def test_too_short_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 400 samples"):
        log_mel(np.zeros(100, np.float32), CONFIG)
