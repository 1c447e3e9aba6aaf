"""The audio front-end shared by training and serving: one config, one transform.

For a mono float32 waveform ``x`` at ``sample_rate``:

1. pre-emphasis   ``y[n] = x[n] - preemphasis * x[n - 1]``, with ``y[0] = x[0]``
2. framing        ``win_length``-sample frames every ``hop_length`` samples, *no centre padding*:
                  a window's features depend on that window's samples alone, so a window cut
                  from a live stream gives exactly the features of the same span of a file
3. window         periodic Hann
4. FFT            ``n_fft``-point real FFT, power spectrum
5. mel            Slaney-style filterbank (as ``librosa.filters.mel``), frozen once into
                  ``assets/mel_filters.npz`` so serving needs numpy only
6. level          with ``level="window"``, the window's mel power scaled by one gain that puts
                  its active-speech level at ``level_target_dbfs`` (see below); ``"none"`` (the
                  default, and every model file from before the stage) leaves it as recorded
7. log            ``log(max(mel, log_floor))``: a fixed floor, never a per-clip statistic
8. normalise      ``(log_mel - mean[band]) / std[band]`` with statistics measured on the
                  training set and stored in the config that travels with each model

The config also fixes the clip-level preprocessing shared by training and ``/predict``: the
silence trim (:mod:`app.segment`: its threshold and, with ``trim_floor``, whether it follows the
clip's own level) and the model's window length (the paper's 3.5 s segment).

The level stage. A recording's level says as much about the microphone, its gain and the
distance to it as about the speaker, and the training corpora tie level to the label (RAVDESS
angry sits ~18 dB above its neutral; SAVEE sits 15-25 dB above RAVDESS). With
``level="window"`` every model window is heard at one speech level:

- the window's *active-speech level* is the mean power of its loudest quarter of 25 ms analysis
  frames (the frames of step 2, on the samples before pre-emphasis), frames of digital zeros
  (a short clip's padding) left out, in dB relative to a full-scale square wave (dBFS);
- the gain is ``level_target_dbfs - level``, but never more than ``level_max_gain_db``: a window
  of room noise or near-silence is lifted at most that much, so it stays far below speech (the
  stream's silence gate decides on the unscaled samples, before this stage);
- the gain multiplies the mel power (step 5) before the log floor: exactly what scaling the
  window's samples by the same gain would give, so a window and the same window x 0.1 get the
  same features (up to float rounding), quiet detail below the floor included.

A robust statistic of the louder frames and never the peak: one click does not set the level,
and a clip's pauses do not lower it. Every window is scaled on its own (not by the level of the
whole file or stream), because the model is trained on single windows scaled so: a window of a
long upload or a stream is then heard exactly as training heard its clips.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, Literal, get_args

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MEL_ASSET = "mel_filters.npz"
LevelMode = Literal["none", "window"]
LEVEL_MODES: Final[tuple[str, ...]] = get_args(LevelMode)
TrimFloor = Literal["absolute", "relative"]
TRIM_FLOORS: Final[tuple[str, ...]] = get_args(TrimFloor)
LEVEL_QUANTILE: Final[float] = 0.25  # the loudest quarter of a window's frames sets its level


class FeatureConfigError(ValueError):
    """A FeatureConfig that cannot be used (bad values, unknown keys, no frozen filterbank)."""


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16_000
    n_fft: int = 512
    win_length: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8_000.0
    preemphasis: float = 0.97
    log_floor: float = 1e-6
    window_s: float = 3.5  # the model's input span (the paper's segment length)
    trim_top_db: float = 60.0  # librosa.effects.trim defaults
    trim_frame_length: int = 2048
    trim_hop_length: int = 512
    # app/segment.py: "absolute" (librosa's, and every model file from before 2026-12-05) or
    # "relative" (the same trim at any recording level).
    trim_floor: TrimFloor = "absolute"
    # The level stage (module docstring). "none": the features follow the recording's level.
    level: LevelMode = "none"
    level_target_dbfs: float = -25.0
    level_max_gain_db: float = 40.0
    # Per-band normalisation statistics from the training set; None until measured.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.win_length <= self.n_fft:
            raise FeatureConfigError("win_length must be in (0, n_fft]")
        if self.hop_length <= 0 or self.n_mels <= 0 or self.sample_rate <= 0:
            raise FeatureConfigError("hop_length, n_mels and sample_rate must be positive")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise FeatureConfigError("need 0 <= f_min < f_max <= sample_rate / 2")
        if self.log_floor <= 0:
            raise FeatureConfigError("log_floor must be positive")
        if self.window_samples < self.win_length:
            raise FeatureConfigError("window_s is shorter than one analysis frame")
        if self.level not in LEVEL_MODES:
            raise FeatureConfigError(f"level must be one of {LEVEL_MODES}, got {self.level!r}")
        if self.trim_floor not in TRIM_FLOORS:
            raise FeatureConfigError(
                f"trim_floor must be one of {TRIM_FLOORS}, got {self.trim_floor!r}"
            )
        if not -80.0 <= self.level_target_dbfs <= 0.0 or not 0 <= self.level_max_gain_db <= 80:
            raise FeatureConfigError(
                "need -80 <= level_target_dbfs <= 0 and 0 <= level_max_gain_db <= 80"
            )
        if (self.mean is None) != (self.std is None):
            raise FeatureConfigError("mean and std must be given together")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != self.n_mels or len(self.std) != self.n_mels:
                raise FeatureConfigError(f"mean and std need {self.n_mels} values each")
            if min(self.std) <= 0:
                raise FeatureConfigError("std values must be positive")

    # Derived sizes: computed here, never typed twice.
    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def window_frames(self) -> int:
        return self.n_frames(self.window_samples)

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` of audio (0 if shorter than one frame)."""
        return (
            0
            if n_samples < self.win_length
            else 1 + (n_samples - self.win_length) // self.hop_length
        )

    @property
    def normalised(self) -> bool:
        return self.mean is not None

    def with_stats(self, mean: np.ndarray, std: np.ndarray) -> FeatureConfig:
        return dataclasses.replace(
            self,
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
        )

    def without_stats(self) -> FeatureConfig:
        return dataclasses.replace(self, mean=None, std=None)

    def same_transform(self, other: FeatureConfig) -> bool:
        """True when both compute the same features up to the normalisation statistics."""
        return self.without_stats() == other.without_stats()

    def without_level(self) -> FeatureConfig:
        """This config with the level handling at its defaults: the level stage off and the
        trim floor absolute (the same frames, filterbank and windows). Those two are each
        model's own; the rest a server's models share."""
        defaults = FeatureConfig()
        return dataclasses.replace(
            self,
            level="none",
            level_target_dbfs=defaults.level_target_dbfs,
            level_max_gain_db=defaults.level_max_gain_db,
            trim_floor=defaults.trim_floor,
        )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("mean", "std"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise FeatureConfigError(f"unknown FeatureConfig keys: {sorted(unknown)}")
        values = dict(data)
        for key in ("mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        try:
            return cls(**values)
        except TypeError as e:
            raise FeatureConfigError(f"bad FeatureConfig: {e}") from e


def mel_asset_key(config: FeatureConfig) -> str:
    return (
        f"sr{config.sample_rate}_nfft{config.n_fft}_mels{config.n_mels}"
        f"_fmin{config.f_min:g}_fmax{config.f_max:g}"
    )


@functools.lru_cache(maxsize=8)
def _load_mel_filters(key: str) -> np.ndarray:
    with resources.files("app.assets").joinpath(MEL_ASSET).open("rb") as f, np.load(f) as bank:
        if key not in bank.files:
            raise FeatureConfigError(
                f"no frozen mel filterbank for {key}; run `python -m training freeze-mel` "
                "with this FeatureConfig to add it"
            )
        filters = bank[key].astype(np.float32)
    filters.setflags(write=False)
    return filters


def mel_filters(config: FeatureConfig) -> np.ndarray:
    """The frozen (n_mels, n_fft // 2 + 1) mel filterbank for ``config``."""
    return _load_mel_filters(mel_asset_key(config))


@functools.lru_cache(maxsize=8)
def analysis_window(length: int) -> np.ndarray:
    # Periodic Hann, as scipy.signal.get_window("hann", length) and librosa use.
    n = np.arange(length, dtype=np.float64)
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)
    window.setflags(write=False)
    return window


def emphasise(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Step 1, pre-emphasis along the last axis: ``y[n] = x[n] - preemphasis * x[n - 1]`` and
    ``y[0] = x[0]``."""
    x = np.asarray(wave, dtype=np.float32)
    return np.concatenate(
        [x[..., :1], x[..., 1:] - np.float32(config.preemphasis) * x[..., :-1]], axis=-1
    )


def frame_mel(frames: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Steps 3-5 on pre-emphasised frames ``(..., frames, win_length)``: the mel power
    ``(..., frames, n_mels)``, float32, before any level gain or log. A frame's mel power depends
    on its own samples only, which is what lets a stream compute each frame once
    (:class:`app.windows.SlidingFeatures`)."""
    spectrum = np.fft.rfft(frames * analysis_window(config.win_length), n=config.n_fft, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return power @ mel_filters(config).T


def frame_power(frames: np.ndarray) -> np.ndarray:
    """Mean square of each frame ``(..., frames, win_length)`` -> ``(..., frames)``, float64:
    the raw samples' power, which :func:`level_gain` reads."""
    return np.mean(np.square(frames, dtype=np.float64), axis=-1)


def speech_level_db(powers: np.ndarray) -> float:
    """Active-speech level, dBFS, of one window's frame powers ``(frames,)``: the mean power of
    its loudest :data:`LEVEL_QUANTILE` of frames, digital-zero frames left out; -inf if all are.
    0 dBFS is a full-scale square wave (mean square 1)."""
    active = powers[powers > 0.0]
    if active.size == 0:
        return -np.inf
    k = max(1, int(np.ceil(LEVEL_QUANTILE * active.size)))
    loudest = np.partition(active, active.size - k)[active.size - k :]
    return float(10.0 * np.log10(np.mean(loudest)))


def level_gain(powers: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The power gain of the level stage for each window's frame powers ``(..., frames)``:
    float32 ``(...)``, 1 where ``config.level`` is "none" or a window is digital silence."""
    powers = np.asarray(powers)
    flat = powers.reshape(-1, powers.shape[-1])
    gains = np.ones(flat.shape[0], dtype=np.float32)
    if config.level == "window":
        for i, row in enumerate(flat):
            level = speech_level_db(row)
            if np.isfinite(level):
                gain_db = min(config.level_target_dbfs - level, config.level_max_gain_db)
                gains[i] = 10.0 ** (gain_db / 10.0)
    return gains.reshape(powers.shape[:-1])


def mel_features(
    mel: np.ndarray, config: FeatureConfig, gain: np.ndarray | float = 1.0
) -> np.ndarray:
    """Steps 6-8 on mel power ``(..., frames, n_mels)``: times the power ``gain`` (one per
    window, shape ``(...)``), the floored log, then the config's normalisation: float32 features
    ``(..., n_mels, frames)``."""
    gain = np.asarray(gain, dtype=np.float32)
    if gain.ndim or gain != 1.0:
        mel = mel * gain[..., None, None]
    features = np.swapaxes(np.log(np.maximum(mel, np.float32(config.log_floor))), -1, -2)
    if config.mean is not None and config.std is not None:
        mean = np.asarray(config.mean, dtype=np.float32)[:, None]
        std = np.asarray(config.std, dtype=np.float32)[:, None]
        features = (features - mean) / std
    return np.ascontiguousarray(features, dtype=np.float32)


def frames_of(emphasised: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Step 2, a view: ``(..., samples)`` -> ``(..., n_frames(samples), win_length)``."""
    return sliding_window_view(emphasised, config.win_length, axis=-1)[..., :: config.hop_length, :]


def log_mel(wave: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Log-mel features of ``wave``.

    Args:
        wave: float audio at ``config.sample_rate``, shape ``(samples,)`` or ``(batch, samples)``.
        config: the front-end settings; normalised when it carries statistics.

    Returns:
        float32 array of shape ``(n_mels, frames)`` or ``(batch, n_mels, frames)``, with
        ``frames == config.n_frames(samples)``.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"wave must be 1-D or 2-D (batch, samples), got shape {x.shape}")
    if x.shape[-1] < config.win_length:
        raise ValueError(
            f"need at least {config.win_length} samples for one frame, got {x.shape[-1]}"
        )
    mel = frame_mel(frames_of(emphasise(x, config), config), config)
    gain = level_gain(frame_power(frames_of(x, config)), config) if config.level != "none" else 1.0
    return mel_features(mel, config, gain)
