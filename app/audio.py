"""Audio input: decode bytes or a file into 16 kHz mono float32, or say precisely why not.

Decoding is libsndfile's (via soundfile): WAV (PCM 8/16/24/32-bit and float), FLAC and OGG
(Vorbis/Opus). Channels are averaged to mono and the result is resampled with soxr. Every
rejection raises a subclass of :class:`AudioError` whose message tells the caller what to fix.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Final

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE: Final[int] = 16_000
MIN_SOURCE_RATE: Final[int] = 8_000
MAX_SOURCE_RATE: Final[int] = 192_000
DEFAULT_MAX_DURATION_S: Final[float] = 600.0
SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG"})

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str]


class AudioError(ValueError):
    """Audio that cannot be used; ``code`` is a stable machine-readable reason."""

    code = "invalid_audio"


class UnsupportedAudioError(AudioError):
    """Not audio, or a container/codec this service does not read."""

    code = "unsupported_audio"


class EmptyAudioError(AudioError):
    code = "empty_audio"


class NonFiniteAudioError(AudioError):
    code = "non_finite_samples"


class AudioTooLongError(AudioError):
    code = "audio_too_long"


class SampleRateError(AudioError):
    code = "unsupported_sample_rate"


@dataclass(frozen=True)
class Audio:
    """Decoded audio: mono float32 ``samples`` at ``sample_rate``."""

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    source_channels: int
    source_format: str

    @property
    def duration_s(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def _open(source: AudioSource) -> sf.SoundFile:
    handle = (
        io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else source
    )
    if isinstance(handle, io.BytesIO) and handle.getbuffer().nbytes == 0:
        raise EmptyAudioError("the upload is empty: send a WAV, FLAC or OGG file")
    try:
        return sf.SoundFile(handle)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise UnsupportedAudioError(
            "could not decode the audio: send WAV (PCM or float), FLAC or OGG/Opus"
        ) from e


def check_sample_rate(rate: int) -> None:
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise SampleRateError(
            f"sample rate {rate} Hz is outside the supported "
            f"{MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} Hz range"
        )


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average the channels of a (frames, channels) array; a 1-D array is returned as is."""
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, source_rate: int, target_rate: int = TARGET_RATE) -> np.ndarray:
    """Resample a whole mono signal with soxr (HQ); streams use ``soxr.ResampleStream``."""
    if source_rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    out = soxr.resample(samples, source_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def check_finite(samples: np.ndarray) -> None:
    if not np.isfinite(samples).all():
        raise NonFiniteAudioError("the audio contains NaN or infinite samples")


def decode_audio(
    source: AudioSource,
    *,
    target_rate: int = TARGET_RATE,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
) -> Audio:
    """Decode ``source`` (encoded bytes or a path) to mono float32 at ``target_rate``.

    Raises:
        UnsupportedAudioError: not a WAV/FLAC/OGG file libsndfile can read.
        EmptyAudioError: no samples.
        SampleRateError: source rate outside 8-192 kHz.
        AudioTooLongError: longer than ``max_duration_s`` (checked before decoding it all).
        NonFiniteAudioError: NaN or infinite samples (float files).
    """
    with _open(source) as f:
        if f.format not in SUPPORTED_FORMATS:
            raise UnsupportedAudioError(
                f"{f.format} audio is not supported: send WAV, FLAC or OGG/Opus"
            )
        check_sample_rate(f.samplerate)
        # Read at most one frame past the limit, so a lying header cannot make us decode hours.
        limit = None if max_duration_s is None else int(max_duration_s * f.samplerate) + 1
        try:
            data = f.read(frames=-1 if limit is None else limit, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise UnsupportedAudioError(f"the audio stream is corrupt: {e}") from e
        rate, channels, fmt = f.samplerate, f.channels, f.format
    if limit is not None and data.shape[0] >= limit:
        raise AudioTooLongError(
            f"the audio is longer than the {max_duration_s:g} s limit: send a shorter clip "
            "or stream it over the WebSocket"
        )
    if data.shape[0] == 0:
        raise EmptyAudioError("the audio holds no samples")
    mono = to_mono(data)
    check_finite(mono)
    return Audio(
        samples=resample(mono, rate, target_rate),
        sample_rate=target_rate,
        source_rate=rate,
        source_channels=channels,
        source_format=fmt,
    )
