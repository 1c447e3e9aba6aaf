"""Audio input: decode bytes or a file into 16 kHz mono float32, or say precisely why not.

Decoding is libsndfile's (via soundfile): WAV (PCM 8/16/24/32-bit and float), FLAC and OGG
(Vorbis/Opus). Channels are averaged to mono and the result is resampled with soxr. Every
rejection raises a subclass of :class:`AudioError` whose message tells the caller what to fix.

Memory is bounded by design, whatever the file claims or holds:

1. the header is read first (:func:`probe_audio`) and a file that could decode to more than
   ``max_decoded_samples`` samples (frames x channels, counting at most ``max_duration_s`` of
   frames) is refused before any sample is decoded: a small FLAC of 8 channels at 192 kHz is
   a decompression bomb otherwise;
2. the samples are then decoded :data:`BLOCK_SAMPLES` at a time, each block down-mixed and fed
   to a streaming resampler (``soxr.ResampleStream``, which gives exactly the one-shot
   result), so a request holds its 16 kHz output plus one block, never the whole file at
   its own rate and channel count.

One validity rule (:func:`check_samples`) runs after every step that can create non-finite or
huge values (decoding and resampling; the down-mix of checked samples cannot): samples are
finite and within +-:data:`MAX_SAMPLE_MAGNITUDE`. Integer PCM is always in [-1, 1); float
files may go past full scale, and overs up to +12 dBFS are kept as they are (not clipped);
anything beyond is a scaling error and is refused.
"""

from __future__ import annotations

import io
import math
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
# The longest clip at the highest rate, mono: more channels are fine in a shorter clip.
DEFAULT_MAX_DECODED_SAMPLES: Final[int] = round(DEFAULT_MAX_DURATION_S * MAX_SOURCE_RATE)
SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset({"WAV", "WAVEX", "RF64", "FLAC", "OGG"})
RESAMPLE_QUALITY: Final[str] = "HQ"
BLOCK_SAMPLES: Final[int] = 1 << 20  # interleaved samples decoded at once: 4 MB of float32
# Float overs a mix bus can export; exact in float32, so the bound means the same at any stage.
MAX_SAMPLE_MAGNITUDE: Final[float] = 4.0
MAX_SAMPLE_DBFS: Final[float] = 20.0 * math.log10(MAX_SAMPLE_MAGNITUDE)  # +12 dBFS
# Peak below which a clip holds nothing to classify: librosa's trim floor (amin 1e-5), so a
# clip scaled by 1e-30 is silence exactly as digital zeros are.
SILENCE_FLOOR_DBFS: Final[float] = -100.0
SILENCE_FLOOR: Final[float] = 10.0 ** (SILENCE_FLOOR_DBFS / 20.0)

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


class SampleRangeError(AudioError):
    """Finite samples far past full scale: a float file with a scaling error."""

    code = "sample_out_of_range"


class AudioTooLongError(AudioError):
    code = "audio_too_long"


class AudioTooLargeError(AudioError):
    """More samples (frames x channels) than one request may decode."""

    code = "audio_too_large"


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


@dataclass(frozen=True)
class AudioHeader:
    """What a file's header says, and how much decoding it may cost.

    ``frame_limit`` is the most frames that will be read (one past ``max_duration_s``, so
    that "too long" is detected on what is really there: a header may lie);
    ``decode_samples`` is that bound times the channel count.
    """

    format: str
    sample_rate: int
    channels: int
    frames: int
    frame_limit: int | None

    @property
    def decode_samples(self) -> int:
        frames = self.frames if self.frame_limit is None else min(self.frames, self.frame_limit)
        return max(frames, 0) * self.channels


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
    out = soxr.resample(samples, source_rate, target_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(out, dtype=np.float32)


def check_samples(samples: np.ndarray) -> None:
    """The validity rule for audio at any stage: finite, and within +-MAX_SAMPLE_MAGNITUDE.

    Raises:
        NonFiniteAudioError: a NaN or infinite sample.
        SampleRangeError: a finite sample beyond the range (float audio scaled wrongly).
    """
    if samples.size == 0:
        return
    low, high = float(samples.min()), float(samples.max())  # both propagate NaN
    if not (math.isfinite(low) and math.isfinite(high)):
        raise NonFiniteAudioError("the audio contains NaN or infinite samples")
    peak = max(-low, high)
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise SampleRangeError(
            f"the audio peaks at {peak:.3g}, beyond +-{MAX_SAMPLE_MAGNITUDE:g} "
            f"(+{MAX_SAMPLE_DBFS:.0f} dBFS): scale float samples so that full scale is +-1.0"
        )


def is_silent(samples: np.ndarray) -> bool:
    """Whether no sample of ``samples`` reaches :data:`SILENCE_FLOOR` (-100 dBFS)."""
    # max and min rather than max(abs): no temporary copy of a long clip.
    return samples.size == 0 or max(float(samples.max()), -float(samples.min())) < SILENCE_FLOOR


def _read_header(
    f: sf.SoundFile, max_duration_s: float | None, max_decoded_samples: int | None
) -> AudioHeader:
    if f.format not in SUPPORTED_FORMATS:
        raise UnsupportedAudioError(
            f"{f.format} audio is not supported: send WAV, FLAC or OGG/Opus"
        )
    check_sample_rate(f.samplerate)
    limit = None if max_duration_s is None else int(max_duration_s * f.samplerate) + 1
    header = AudioHeader(f.format, f.samplerate, f.channels, f.frames, limit)
    if max_decoded_samples is not None and header.decode_samples > max_decoded_samples:
        raise AudioTooLargeError(
            f"the audio would decode to {header.decode_samples} samples ({header.channels} "
            f"channels at {header.sample_rate} Hz), more than the {max_decoded_samples} allowed: "
            "send fewer channels, a lower sample rate or a shorter clip"
        )
    return header


def probe_audio(
    source: AudioSource,
    *,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_decoded_samples: int | None = DEFAULT_MAX_DECODED_SAMPLES,
) -> AudioHeader:
    """Read only the header of ``source`` and apply the checks it allows (cheap).

    Raises:
        UnsupportedAudioError, EmptyAudioError, SampleRateError: as :func:`decode_audio`.
        AudioTooLargeError: it could decode to more than ``max_decoded_samples`` samples.
    """
    with _open(source) as f:
        return _read_header(f, max_duration_s, max_decoded_samples)


class _MonoResampler:
    """Mono blocks in, ``target_rate`` blocks out; the concatenated output equals one-shot
    :func:`resample` of the concatenated input."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self._stream = (
            None
            if source_rate == target_rate
            else soxr.ResampleStream(
                source_rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )

    def __call__(self, mono: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return np.array(mono, dtype=np.float32)  # a copy: the block buffer is reused
        out = np.ascontiguousarray(self._stream.resample_chunk(mono, last=last), np.float32)
        check_samples(out)
        return out


def _decode_blocks(
    f: sf.SoundFile, frame_limit: int | None, target_rate: int
) -> tuple[np.ndarray, int]:
    """Decode, check, down-mix and resample ``f`` block by block; ``(samples, frames read)``."""
    block_frames = max(1, BLOCK_SAMPLES // f.channels)
    buffer = np.empty((block_frames, f.channels), dtype=np.float32)
    resampler = _MonoResampler(f.samplerate, target_rate)
    chunks: list[np.ndarray] = []
    frames_read = 0
    while frame_limit is None or frames_read < frame_limit:
        want = block_frames if frame_limit is None else min(block_frames, frame_limit - frames_read)
        try:
            block = f.read(frames=want, dtype="float32", always_2d=True, out=buffer[:want])
        except (sf.LibsndfileError, RuntimeError) as e:
            raise UnsupportedAudioError(f"the audio stream is corrupt: {e}") from e
        if block.shape[0] == 0:
            break
        frames_read += block.shape[0]
        check_samples(block)
        # No check after the down-mix: the mean of finite samples within the range stays
        # finite and within it. Resampling can overshoot, so the resampler checks its output.
        chunks.append(resampler(to_mono(block)))
    if frames_read:
        chunks.append(resampler(np.zeros(0, np.float32), last=True))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), frames_read


def decode_audio(
    source: AudioSource,
    *,
    target_rate: int = TARGET_RATE,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_decoded_samples: int | None = DEFAULT_MAX_DECODED_SAMPLES,
) -> Audio:
    """Decode ``source`` (encoded bytes or a path) to mono float32 at ``target_rate``.

    Peak memory is the output plus one block of :data:`BLOCK_SAMPLES` (see the module
    docstring), whatever the source's rate and channel count.

    Raises:
        UnsupportedAudioError: not a WAV/FLAC/OGG file libsndfile can read.
        EmptyAudioError: no samples.
        SampleRateError: source rate outside 8-192 kHz.
        AudioTooLargeError: it could decode to more than ``max_decoded_samples`` samples
            (frames x channels), judged from the header before decoding.
        AudioTooLongError: longer than ``max_duration_s`` (checked before decoding it all).
        NonFiniteAudioError: NaN or infinite samples (float files).
        SampleRangeError: samples beyond +-MAX_SAMPLE_MAGNITUDE (float files).
    """
    with _open(source) as f:
        header = _read_header(f, max_duration_s, max_decoded_samples)
        samples, frames_read = _decode_blocks(f, header.frame_limit, target_rate)
    if header.frame_limit is not None and frames_read >= header.frame_limit:
        raise AudioTooLongError(
            f"the audio is longer than the {max_duration_s:g} s limit: send a shorter clip "
            "or stream it over the WebSocket"
        )
    if frames_read == 0:
        raise EmptyAudioError("the audio holds no samples")
    return Audio(
        samples=samples,
        sample_rate=target_rate,
        source_rate=header.sample_rate,
        source_channels=header.channels,
        source_format=header.format,
    )
