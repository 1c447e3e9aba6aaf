"""Channel and speaker augmentation of the training pool's noisy copies.

A deployed model hears other voices, through other microphones, rooms and codecs, than the
corpora's studio recordings. With ``TrainConfig.channel_augment`` set, every noisy copy of a
training clip (:mod:`training.augment`) first goes through a random chain of the named
augmentations, each applied with probability ``TrainConfig.channel_prob``, in this order:

- ``speed``: resampled by a factor drawn from [0.9, 1.1], tempo and pitch together (the
  "speed perturbation" of Ko et al., 2015); the window keeps its length (cut, or zero-padded);
- ``eq``: a random smooth gain curve, +-6 dB at 6 points spaced evenly in log frequency from
  100 Hz to 8 kHz, interpolated between them (microphone and room colouring);
- ``reverb``: convolution with a synthetic room impulse response: a direct path, then
  exponentially decaying Gaussian noise with RT60 drawn from [0.2, 0.8] s, at a
  direct-to-reverberant ratio drawn from [0, 10] dB;
- ``telephone``: a round trip through 8 kHz (nothing above 4 kHz survives);
- ``codec``: a round trip through Ogg Opus (libsndfile, via soundfile) at a random compression
  level, i.e. a random bitrate;
- ``gain``: a level change drawn from [-6, +6] dB, clipped to +-1 as an ADC would;
- ``level``: the same over [-20, +20] dB, what a quiet or a hot microphone, its gain setting and
  the distance to it make of one voice; loud clips pushed up clip hard at +-1;
- ``clip``: the peaks limited as broadcast and phone audio have them: everything above a
  threshold drawn 1-12 dB below the clip's peak is hard-clipped (half the time) or soft-limited
  (``t * tanh(x / t)``, the other half).

Each works on the clip's audio only and leaves its zero padding zero, as at serving time; eq and
reverb keep the clip's RMS level (level is ``gain``'s job). Then the Gaussian noise is added at
the drawn SNR, as without the chain. Validation and test clips are never augmented.

Synthetic impulse responses rather than a room-acoustics package: an exponentially decaying
noise tail is the standard statistical room model, takes a line of numpy, and needs no compiled
dependency; no packaged recording of real background noise is available here.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import soundfile as sf
import soxr

RATE: Final[int] = 16_000
SPEED_RANGE: Final = (0.9, 1.1)
EQ_DB: Final[float] = 6.0
EQ_POINTS: Final[int] = 6
RT60_RANGE_S: Final = (0.2, 0.8)
DRR_RANGE_DB: Final = (0.0, 10.0)
GAIN_DB: Final[float] = 6.0
LEVEL_DB: Final[float] = 20.0
CLIP_BELOW_PEAK_DB: Final = (1.0, 12.0)
TELEPHONE_RATE: Final[int] = 8_000

Augmentation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _same_level(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    level, target = _rms(y), _rms(like)
    return y if level == 0.0 else y * np.float32(target / level)


def speed(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = rng.uniform(*SPEED_RANGE)
    # Played ``factor`` times faster: read as if recorded at RATE * factor, then back to RATE.
    return soxr.resample(x, round(RATE * factor), RATE, quality="HQ").astype(np.float32)


def eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / RATE)
    points = np.geomspace(100.0, RATE / 2, EQ_POINTS)
    gains_db = rng.uniform(-EQ_DB, EQ_DB, EQ_POINTS)
    curve_db = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(points), gains_db)
    y = np.fft.irfft(spectrum * 10.0 ** (curve_db / 20.0), n=x.size).astype(np.float32)
    return _same_level(y, x)


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """A synthetic RIR at RATE: 1 at t = 0, then noise decaying by 60 dB in RT60 seconds."""
    rt60 = rng.uniform(*RT60_RANGE_S)
    t = np.arange(int(rt60 * RATE)) / RATE
    tail = rng.standard_normal(t.size) * 10.0 ** (-3.0 * t / rt60)  # -60 dB at t = rt60
    tail[0] = 0.0
    drr_db = rng.uniform(*DRR_RANGE_DB)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))  # tail energy vs direct's 1
    tail[0] = 1.0
    return tail


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve  # 1.4 s to import: not for `python -m training --help`

    y = fftconvolve(x, room_impulse_response(rng))[: x.size].astype(np.float32)
    return _same_level(y, x)


def telephone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low = soxr.resample(x, RATE, TELEPHONE_RATE, quality="HQ")
    return soxr.resample(low, TELEPHONE_RATE, RATE, quality="HQ")[: x.size].astype(np.float32)


def codec(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    level = float(rng.uniform(0.0, 1.0))  # libsndfile: 0 = highest bitrate, 1 = lowest
    sf.write(buffer, x, RATE, format="OGG", subtype="OPUS", compression_level=level)
    buffer.seek(0)
    y, _ = sf.read(buffer, dtype="float32")
    out = np.zeros_like(x)
    out[: min(x.size, y.size)] = y[: x.size]
    return out


def _scaled(x: np.ndarray, rng: np.random.Generator, range_db: float) -> np.ndarray:
    factor = np.float32(10.0 ** (rng.uniform(-range_db, range_db) / 20.0))
    return np.clip(x * factor, -1.0, 1.0).astype(np.float32)


def gain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _scaled(x, rng, GAIN_DB)


def level(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _scaled(x, rng, LEVEL_DB)


def clip(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    threshold = np.float32(peak * 10.0 ** (-rng.uniform(*CLIP_BELOW_PEAK_DB) / 20.0))
    if rng.random() < 0.5:
        return np.clip(x, -threshold, threshold).astype(np.float32)
    return (threshold * np.tanh(x / threshold)).astype(np.float32)


AUGMENTATIONS: Final[dict[str, Augmentation]] = {
    "speed": speed,
    "eq": eq,
    "reverb": reverb,
    "telephone": telephone,
    "codec": codec,
    "gain": gain,
    "level": level,
    "clip": clip,
}


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"unknown channel augmentation(s) {unknown}: choose from {list(AUGMENTATIONS)}"
        )


def apply_chain(
    audio: np.ndarray, names: Sequence[str], prob: float, rng: np.random.Generator
) -> np.ndarray:
    """``audio`` (a clip without its padding) after each augmentation in ``names``, applied in
    :data:`AUGMENTATIONS` order, each with probability ``prob``. Its length changes only
    under ``speed``."""
    check_names(names)
    out = np.asarray(audio, dtype=np.float32)
    for name, fn in AUGMENTATIONS.items():
        if name in names and rng.random() < prob:
            out = fn(out, rng)
    return out
