"""Channel and speaker augmentation: what each one does to a clip, and the chain's contract."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import synth_speechlike
from training.augment import noisy_copies, through_channel
from training.channel import (
    AUGMENTATIONS,
    RATE,
    apply_chain,
    room_impulse_response,
)
from training.config import TrainConfig, TrainConfigError


def band_energy(x: np.ndarray, low_hz: float, high_hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / RATE)
    return float(spectrum[(freqs >= low_hz) & (freqs < high_hz)].sum())


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_each_augmentation_gives_finite_float32_audio_and_is_seeded(name: str) -> None:
    x = synth_speechlike(2.0, RATE, seed=1)
    fn = AUGMENTATIONS[name]
    y = fn(x, rng(3))
    assert y.dtype == np.float32 and np.isfinite(y).all() and np.abs(y).max() <= 1.5
    np.testing.assert_array_equal(y, fn(x, rng(3)))
    if name != "speed":
        assert y.shape == x.shape
    assert not np.array_equal(y, x)


def test_speed_changes_the_duration_by_the_drawn_factor() -> None:
    x = synth_speechlike(2.0, RATE)
    lengths = [AUGMENTATIONS["speed"](x, rng(s)).size for s in range(20)]
    assert min(lengths) >= x.size / 1.1 - 2 and max(lengths) <= x.size / 0.9 + 2
    assert min(lengths) < x.size < max(lengths)  # faster and slower both drawn


def test_telephone_removes_everything_above_4_khz() -> None:
    noise = rng(1).standard_normal(RATE).astype(np.float32) * 0.1
    y = AUGMENTATIONS["telephone"](noise, rng())
    assert band_energy(y, 4_200, 8_000) < 1e-3 * band_energy(noise, 4_200, 8_000)
    assert band_energy(y, 300, 3_400) > 0.9 * band_energy(noise, 300, 3_400)


def test_eq_and_reverb_colour_the_clip_but_keep_its_level() -> None:
    x = synth_speechlike(2.0, RATE, seed=2)
    for name in ("eq", "reverb"):
        y = AUGMENTATIONS[name](x, rng(5))
        assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
        assert np.corrcoef(x, y)[0, 1] < 0.999


def test_room_impulse_response_decays_by_60_db_over_its_length() -> None:
    rir = room_impulse_response(rng(2))
    assert rir[0] == 1.0 and 0.2 * RATE <= rir.size <= 0.8 * RATE
    tail = rir[1:] ** 2
    quarter = tail.size // 4
    # Energy falls about 15 dB per quarter of RT60.
    assert tail[:quarter].sum() > 10 * tail[-quarter:].sum()


def test_gain_stays_within_6_db_and_clips_at_full_scale() -> None:
    x = synth_speechlike(1.0, RATE)
    for seed in range(10):
        ratio = np.abs(AUGMENTATIONS["gain"](x, rng(seed))).max() / np.abs(x).max()
        assert 10 ** (-6 / 20) - 1e-4 <= ratio <= 10 ** (6 / 20) + 1e-4
    loud = np.full(100, 0.9, np.float32)
    assert np.abs(AUGMENTATIONS["gain"](loud, np.random.default_rng(7))).max() <= 1.0


def test_codec_round_trip_keeps_the_clip_recognisable() -> None:
    x = synth_speechlike(2.0, RATE, seed=3)
    y = AUGMENTATIONS["codec"](x, rng())
    assert np.corrcoef(x, y)[0, 1] > 0.8


def test_the_chain_keeps_padding_zero_and_the_window_length() -> None:
    window = np.zeros(3 * RATE, np.float32)
    window[:RATE] = synth_speechlike(1.0, RATE, seed=4)
    out = through_channel(window, (tuple(AUGMENTATIONS), 1.0), rng(1))
    assert out.shape == window.shape and out.dtype == np.float32
    assert not out[int(1.2 * RATE) :].any()  # at most 1.1x longer (speed), then zeros
    assert out[: RATE // 2].any()
    silent = np.zeros(RATE, np.float32)
    np.testing.assert_array_equal(through_channel(silent, (("gain",), 1.0), rng()), silent)


def test_probability_zero_or_no_names_leave_the_clip_alone() -> None:
    x = synth_speechlike(1.0, RATE)
    np.testing.assert_array_equal(apply_chain(x, tuple(AUGMENTATIONS), 0.0, rng()), x)
    np.testing.assert_array_equal(through_channel(x, ((), 1.0), rng()), x)


def test_noisy_copies_go_through_the_chain_and_stay_reproducible() -> None:
    segments = np.stack([synth_speechlike(1.0, RATE, seed=s) for s in range(3)])
    plain = noisy_copies(segments, rng(9), copies=2)
    chained = noisy_copies(segments, rng(9), copies=2, chain=(("telephone",), 1.0))
    again = noisy_copies(segments, rng(9), copies=2, chain=(("telephone",), 1.0))
    np.testing.assert_array_equal(chained, again)
    assert chained.shape == plain.shape
    # Telephone band first, then white noise: the copies have far less high band than before.
    high = [sum(band_energy(row, 4_200, 8_000) for row in rows) for rows in (chained, plain)]
    assert high[0] < 0.5 * high[1]


def test_config_names_the_chain_and_rejects_unknown_names() -> None:
    config = TrainConfig(channel_augment=("speed", "codec"), channel_prob=0.3)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TrainConfigError, match="unknown channel augmentation"):
        TrainConfig(channel_augment=("underwater",))
    with pytest.raises(TrainConfigError, match="channel_prob"):
        TrainConfig(channel_prob=1.5)
