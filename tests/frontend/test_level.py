"""The level stage of the front-end: a window is heard at one speech level, whatever its gain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.contract import ModelMetadata
from app.features import (
    FeatureConfig,
    FeatureConfigError,
    frame_power,
    frames_of,
    log_mel,
    speech_level_db,
)
from app.labels import LABELS
from app.windows import SlidingFeatures, fixed_window
from tests.conftest import synth_speechlike

LEVEL = FeatureConfig(level="window")
NONE = FeatureConfig()


def level_of(wave: np.ndarray, config: FeatureConfig = LEVEL) -> float:
    return speech_level_db(frame_power(frames_of(np.asarray(wave, np.float32), config)))


def speech(seconds: float = 3.5, seed: int = 0) -> np.ndarray:
    return synth_speechlike(seconds, 16_000, seed)


@pytest.mark.parametrize("gain_db", [-30.0, -20.0, -10.0, 6.0])
def test_a_window_and_the_same_window_scaled_give_the_same_features(gain_db: float) -> None:
    wave = speech()
    scaled = wave * np.float32(10 ** (gain_db / 20))
    np.testing.assert_allclose(log_mel(scaled, LEVEL), log_mel(wave, LEVEL), rtol=0, atol=2e-4)


def test_without_the_stage_the_features_follow_the_level() -> None:
    wave = speech()
    shift = log_mel(wave * np.float32(0.1), NONE) - log_mel(wave, NONE)
    assert np.median(shift) == pytest.approx(2 * np.log(0.1), abs=0.05)  # -20 dB: -4.6 in log


def test_the_window_lands_at_the_target_level() -> None:
    for gain in (0.01, 0.3, 3.0):
        wave = speech() * np.float32(gain)
        target_gain = 10 ** ((LEVEL.level_target_dbfs - level_of(wave)) / 20)
        # The features of the window scaled to the target by hand are the stage's features.
        by_hand = log_mel(wave * np.float32(target_gain), NONE)
        np.testing.assert_allclose(log_mel(wave, LEVEL), by_hand, rtol=0, atol=2e-4)


def test_silence_is_not_amplified_into_speech() -> None:
    rng = np.random.default_rng(1)
    hiss = (10 ** (-90 / 20) * rng.standard_normal(56_000)).astype(np.float32)  # -90 dBFS
    lifted = log_mel(hiss, LEVEL)
    # The gain stops at level_max_gain_db: the hiss ends 40 dB up, at -50 dBFS, where a
    # window of speech is put at -25.
    by_hand = log_mel(hiss * np.float32(10 ** (LEVEL.level_max_gain_db / 20)), NONE)
    np.testing.assert_allclose(lifted, by_hand, rtol=0, atol=2e-4)
    assert level_of(hiss) + LEVEL.level_max_gain_db < LEVEL.level_target_dbfs - 20
    zeros = log_mel(np.zeros(56_000, np.float32), LEVEL)
    np.testing.assert_array_equal(zeros, log_mel(np.zeros(56_000, np.float32), NONE))


def test_padding_and_a_click_do_not_set_the_level() -> None:
    short = speech(1.5)
    # Frames of zero padding are left out (one frame straddles the edge: 0.01 dB here).
    assert level_of(fixed_window(short, LEVEL)) == pytest.approx(level_of(short), abs=0.05)
    clicked = speech()
    clicked[30_000] = 1.0  # one full-scale sample: a peak statistic would follow it
    assert level_of(clicked) == pytest.approx(level_of(speech()), abs=0.5)


def test_a_stream_with_changing_gain_gets_each_windows_own_level() -> None:
    wave = speech(9.0)
    wave[: 3 * 16_000] *= np.float32(0.05)  # a quiet first stretch, then the speaker leans in
    sliding = SlidingFeatures(LEVEL)
    for start in range(0, wave.size - LEVEL.window_samples + 1, 8_000):
        np.testing.assert_allclose(
            sliding.window(wave, 0, start),
            log_mel(wave[start : start + LEVEL.window_samples], LEVEL),
            rtol=0,
            atol=2e-4,
        )


def test_old_model_files_have_no_level_stage() -> None:
    before = {k: v for k, v in NONE.to_dict().items() if not k.startswith("level")}
    assert FeatureConfig.from_dict(before) == NONE
    assert FeatureConfig.from_dict(before).level == "none"
    assert FeatureConfig.from_dict(LEVEL.to_dict()) == LEVEL


def test_old_model_files_keep_librosas_trim_floor() -> None:
    before = {k: v for k, v in LEVEL.to_dict().items() if k != "trim_floor"}
    assert FeatureConfig.from_dict(before).trim_floor == "absolute"
    relative = FeatureConfig(level="window", trim_floor="relative")
    assert FeatureConfig.from_dict(relative.to_dict()) == relative
    assert relative.without_level() == NONE


def test_bad_level_settings_are_refused() -> None:
    with pytest.raises(FeatureConfigError, match="level must be one of"):
        FeatureConfig(level="clip")  # type: ignore[arg-type]
    with pytest.raises(FeatureConfigError, match="level_target_dbfs"):
        FeatureConfig(level="window", level_target_dbfs=3.0)
    with pytest.raises(FeatureConfigError, match="trim_floor must be one of"):
        FeatureConfig(trim_floor="peak")  # type: ignore[arg-type]


def test_the_server_serves_a_model_with_its_own_level_stage() -> None:
    mean, std = np.zeros(LEVEL.n_mels), np.ones(LEVEL.n_mels)
    metadata = ModelMetadata(
        name="ser-ce",
        loss="ce",
        architecture="sequential",
        version="0",
        labels=LABELS,
        feature_config=LEVEL.with_stats(mean, std),
    )
    metadata.check_compatible(FeatureConfig())  # no error: the stage travels with the model
    relative = dataclasses.replace(LEVEL, trim_floor="relative").with_stats(mean, std)
    dataclasses.replace(metadata, feature_config=relative).check_compatible(FeatureConfig())
