"""Audio input: decode bytes or a file into 16 kHz mono float32, or say precisely why not.

Decoding is libsndfile's (via soundfile) for WAV (PCM 8/16/24/32-bit and float), FLAC, OGG
(Vorbis/Opus) and MP3, and FFmpeg's (via PyAV, :mod:`app.containers`) for M4A/MP4/AAC and
WebM/Matroska. Which of the two reads a file, and with which FFmpeg demuxer, is decided from
its first bytes (:mod:`app.sniff`) before either parser sees it; anything else is refused
unread. Both give the same header and the same interleaved float32 blocks; channels are
averaged to mono and the result is resampled with soxr. Every rejection raises a subclass of
:class:`AudioError` whose message tells the caller what to fix.

Memory is bounded by design, whatever the file claims or holds:

1. the header is read first (:func:`probe_audio`) and a file that could decode to more than
   ``max_decoded_samples`` samples (frames x channels, counting at most ``max_duration_s`` of
   frames) is refused before any sample is decoded: a small FLAC of 8 channels at 192 kHz is
   a decompression bomb otherwise (a container that does not state its length is bounded the
   same way while it decodes);
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
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import soundfile as sf
import soxr

from app.sniff import HEAD_BYTES, OGG, MediaKind, UnknownMediaError, identify, ogg_links

TARGET_RATE: Final[int] = 16_000
MIN_SOURCE_RATE: Final[int] = 8_000
MAX_SOURCE_RATE: Final[int] = 192_000
DEFAULT_MAX_DURATION_S: Final[float] = 600.0
# The longest clip at the highest rate, mono: more channels are fine in a shorter clip.
DEFAULT_MAX_DECODED_SAMPLES: Final[int] = round(DEFAULT_MAX_DURATION_S * MAX_SOURCE_RATE)
SUPPORTED_FORMATS: Final[frozenset[str]] = frozenset(
    {"WAV", "WAVEX", "RF64", "FLAC", "OGG", "MP3"}  # libsndfile's; app.containers adds its own
)
FORMATS_HINT: Final[str] = "send WAV, FLAC, OGG (Vorbis/Opus), MP3, M4A/AAC or WebM"
REENCODE_HINT: Final[str] = "re-encode it (e.g. to WAV or FLAC) and send it again"
RESAMPLE_QUALITY: Final[str] = "HQ"
BLOCK_SAMPLES: Final[int] = 1 << 20  # interleaved samples decoded at once: 4 MB of float32
# How far past its stated length a file may decode before its header is taken to have lied
# (lossy codecs add priming and padding of a few ms).
HEADER_SLACK_S: Final[float] = 1.0
# Float overs a mix bus can export; exact in float32, so the bound means the same at any stage.
MAX_SAMPLE_MAGNITUDE: Final[float] = 4.0
MAX_SAMPLE_DBFS: Final[float] = 20.0 * math.log10(MAX_SAMPLE_MAGNITUDE)  # +12 dBFS
# Peak below which a clip holds nothing to classify: librosa's trim floor (amin 1e-5), so a
# clip scaled by 1e-30 is silence exactly as digital zeros are.
SILENCE_FLOOR_DBFS: Final[float] = -100.0
SILENCE_FLOOR: Final[float] = 10.0 ** (SILENCE_FLOOR_DBFS / 20.0)

AudioSource = bytes | bytearray | memoryview | str | os.PathLike[str]


_HEAP_ADDRESS: Final[re.Pattern[str]] = re.compile(r" at 0x[0-9a-fA-F]+")


class AudioError(ValueError):
    """Audio that cannot be used; ``code`` is a stable machine-readable reason.

    The message says what to do, in the sender's terms; ``detail`` keeps the parser's own
    words (libsndfile's, FFmpeg's) for the server log, never for the client.
    """

    code = "invalid_audio"

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        # libsndfile names the in-memory file by its repr: the heap address says nothing
        # useful and leaks the process's memory layout into the log.
        self.detail = None if detail is None else _HEAP_ADDRESS.sub("", detail)


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


class SlowHeaderError(AudioError):
    """Reading the header alone took longer than its budget: a file padded or built to be slow
    to parse (a WAV of millions of empty chunks, an M4A of millions of ``free`` atoms)."""


class LaneBudgetExceeded(Exception):
    """Not an error of the audio: it decodes to more samples than the caller's lane takes
    (``lane_samples``), judged from the header or from what was decoded; the caller moves the
    job to a lane for long clips."""


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

    ``frames`` is None when the container does not say (then only decoding can tell).
    ``frame_limit`` is the most frames that will be read (one past ``max_duration_s``, so
    that "too long" is detected on what is really there: a header may lie);
    ``decode_samples`` is the most samples (frames x channels) decoding may produce.
    """

    format: str
    sample_rate: int
    channels: int
    frames: int | None
    frame_limit: int | None

    @property
    def decode_samples(self) -> int:
        bounds = [b for b in (self.frames, self.frame_limit) if b is not None]
        frames = min(bounds) if bounds else DEFAULT_MAX_DECODED_SAMPLES
        return max(frames, 0) * self.channels


class _Reader(Protocol):
    format: str
    sample_rate: int
    channels: int
    frames: int | None

    def blocks(self) -> Iterator[np.ndarray]: ...  # interleaved float32 (frames, channels)

    def close(self) -> None: ...


class _SoundFileReader:
    """libsndfile's formats, :data:`BLOCK_SAMPLES` at a time into one reused buffer."""

    def __init__(self, f: sf.SoundFile) -> None:
        self._file = f
        self.format = str(f.format)
        self.sample_rate = int(f.samplerate)
        self.channels = int(f.channels)
        self.frames: int | None = int(f.frames)
        if self.format not in SUPPORTED_FORMATS:
            f.close()
            raise UnsupportedAudioError(f"{self.format} audio is not supported: {FORMATS_HINT}")

    def blocks(self) -> Iterator[np.ndarray]:
        block_frames = max(1, BLOCK_SAMPLES // self.channels)
        buffer = np.empty((block_frames, self.channels), dtype=np.float32)
        while True:
            try:
                block = self._file.read(block_frames, "float32", True, out=buffer)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise UnsupportedAudioError(
                    f"the {self.format} audio is corrupt part-way through: {REENCODE_HINT}",
                    detail=str(e),
                ) from e
            if block.shape[0] == 0:
                return
            yield block

    def close(self) -> None:
        self._file.close()


class _ContainerReader:
    """:class:`app.containers.ContainerReader` with this module's errors."""

    def __init__(self, data: bytes, kind: MediaKind, open_timeout_s: float | None) -> None:
        from app.containers import ContainerError, ContainerReader, TooManyStreamsError

        assert kind.demuxer is not None
        self._error = ContainerError
        try:
            self._reader = ContainerReader(data, kind.demuxer, kind.name, open_timeout_s)
        except TooManyStreamsError as e:
            raise UnsupportedAudioError(str(e)) from e
        except ContainerError as e:
            raise UnsupportedAudioError(f"{e}: {REENCODE_HINT}", detail=e.detail) from e
        self.format = self._reader.format
        self.sample_rate = self._reader.sample_rate
        self.channels = self._reader.channels
        self.frames = self._reader.frames
        if self.channels < 1:
            self.close()
            raise UnsupportedAudioError(f"the audio stream has no channels: {FORMATS_HINT}")

    def blocks(self) -> Iterator[np.ndarray]:
        from app.containers import FormatChangeError

        try:
            yield from self._reader.blocks()
        except FormatChangeError as e:
            raise AudioError(str(e)) from e
        except self._error as e:
            raise UnsupportedAudioError(f"{e}: {REENCODE_HINT}", detail=e.detail) from e

    def close(self) -> None:
        self._reader.close()


def _identify(head: bytes) -> MediaKind:
    try:
        return identify(head)
    except UnknownMediaError as e:
        raise UnsupportedAudioError(f"{e}: {FORMATS_HINT}") from e


def _open(source: AudioSource, open_timeout_s: float | None = None) -> _Reader:
    """A reader of ``source``, chosen by its first bytes (:func:`app.sniff.identify`)."""
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else None
    if data is not None and not data:
        raise EmptyAudioError(f"the upload is empty: {FORMATS_HINT}")
    if data is None:
        with open(os.fspath(source), "rb") as f:  # type: ignore[arg-type]
            kind = _identify(f.read(HEAD_BYTES))
    else:
        kind = _identify(data[:HEAD_BYTES])
        if kind is OGG and ogg_links(data) > 1:
            raise AudioError(
                "a chained Ogg file (streams one after another): only its first would be "
                "heard; join it into one stream (re-encode it) or send each part on its own"
            )
    if kind.demuxer is None:
        try:
            opened = sf.SoundFile(io.BytesIO(data) if data is not None else source)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            raise UnsupportedAudioError(
                f"could not read the {kind.name} file: it is damaged, cut short or not really "
                f"{kind.name}; {REENCODE_HINT}",
                detail=f"{type(e).__name__}: {e}",
            ) from e
        return _SoundFileReader(opened)
    if data is None:
        with open(os.fspath(source), "rb") as f:  # type: ignore[arg-type]
            data = f.read()
    return _ContainerReader(data, kind, open_timeout_s)


def _open_timed(source: AudioSource, max_header_s: float | None) -> _Reader:
    """:func:`_open`, refused when opening (reading the header) took over ``max_header_s``.

    The parsers cannot be stopped from here (libsndfile has no interrupt at all; FFmpeg's is
    asked, but its MP4 atom loop never checks it), so the time is judged once they return: the
    thread was busy, but the file is not decoded.
    """
    started = time.perf_counter()
    reader = _open(source, max_header_s)
    elapsed_s = time.perf_counter() - started
    if max_header_s is not None and elapsed_s > max_header_s:
        reader.close()
        raise SlowHeaderError(
            f"reading the file's header took {elapsed_s:.2f} s, more than the {max_header_s:g} s "
            "allowed: the file is padded or malformed; re-encode it (e.g. to WAV or FLAC)"
        )
    return reader


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
    if samples.shape[1] == 1:  # a view: a mean over one channel is a slow copy
        return samples[:, 0]
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
            f"the audio peaks at {peak:.9g}, beyond +-{MAX_SAMPLE_MAGNITUDE:g} "
            f"(+{MAX_SAMPLE_DBFS:.0f} dBFS): scale float samples so that full scale is +-1.0"
        )


def is_silent(samples: np.ndarray) -> bool:
    """Whether no sample of ``samples`` reaches :data:`SILENCE_FLOOR` (-100 dBFS)."""
    # max and min rather than max(abs): no temporary copy of a long clip.
    return samples.size == 0 or max(float(samples.max()), -float(samples.min())) < SILENCE_FLOOR


def _read_header(
    reader: _Reader,
    max_duration_s: float | None,
    max_decoded_samples: int | None,
    lane_samples: int | None = None,
) -> AudioHeader:
    check_sample_rate(reader.sample_rate)
    limit = None if max_duration_s is None else int(max_duration_s * reader.sample_rate) + 1
    header = AudioHeader(reader.format, reader.sample_rate, reader.channels, reader.frames, limit)
    stated = header.frames is not None or limit is not None
    if max_decoded_samples is not None and stated and header.decode_samples > max_decoded_samples:
        raise _too_large(header, max_decoded_samples, header.decode_samples)
    # Only a stated length moves a job before decoding (a live WebM recording often states
    # none): an unstated or understated one is caught as it decodes.
    known = header.frames is not None
    if lane_samples is not None and known and header.decode_samples > lane_samples:
        raise LaneBudgetExceeded(header.decode_samples)
    return header


def _too_large(
    header: AudioHeader, max_decoded_samples: int, samples: int | None = None
) -> AudioTooLargeError:
    size = f"{samples} samples" if samples is not None else "more samples than that"
    return AudioTooLargeError(
        f"the audio would decode to {size} ({header.channels} channels at "
        f"{header.sample_rate} Hz), more than the {max_decoded_samples} allowed: send fewer "
        "channels, a lower sample rate or a shorter clip"
    )


def probe_audio(
    source: AudioSource,
    *,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_decoded_samples: int | None = DEFAULT_MAX_DECODED_SAMPLES,
    max_header_s: float | None = None,
) -> AudioHeader:
    """Read only the header of ``source`` and apply the checks it allows (cheap).

    Raises:
        UnsupportedAudioError, EmptyAudioError, SampleRateError, SlowHeaderError: as
            :func:`decode_audio`.
        AudioTooLargeError: it could decode to more than ``max_decoded_samples`` samples.
    """
    reader = _open_timed(source, max_header_s)
    try:
        return _read_header(reader, max_duration_s, max_decoded_samples)
    finally:
        reader.close()


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


def _lane_frames(header: AudioHeader, lane_samples: int | None) -> int | None:
    """The most frames a lane of ``lane_samples`` decodes of this file before moving it.

    A file that holds more than its header states has lied about its length: it is moved as
    soon as it passes the stated length (plus :data:`HEADER_SLACK_S` for codec priming and
    padding), so a liar costs the short lane what it claimed, not the whole budget.
    """
    if lane_samples is None:
        return None
    frames = lane_samples // max(header.channels, 1)
    if header.frames is not None:
        frames = min(frames, header.frames + round(HEADER_SLACK_S * header.sample_rate))
    return frames


def _decode_blocks(
    reader: _Reader,
    header: AudioHeader,
    target_rate: int,
    max_decoded_samples: int | None,
    lane_samples: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode, check, down-mix and resample ``reader`` block by block; ``(samples, frames
    read)``. Stops one frame past ``header.frame_limit``; refuses more than
    ``max_decoded_samples`` as it goes (for containers whose header does not say or lies),
    and stops with :class:`LaneBudgetExceeded` past ``lane_samples``."""
    resampler = _MonoResampler(header.sample_rate, target_rate)
    lane_frames = _lane_frames(header, lane_samples)
    chunks: list[np.ndarray] = []
    frames_read = 0
    for block in reader.blocks():
        if header.frame_limit is not None and frames_read + block.shape[0] > header.frame_limit:
            block = block[: header.frame_limit - frames_read]
        frames_read += block.shape[0]
        if max_decoded_samples is not None and frames_read * header.channels > max_decoded_samples:
            raise _too_large(header, max_decoded_samples)
        if lane_frames is not None and frames_read > lane_frames:
            raise LaneBudgetExceeded(frames_read * header.channels)
        check_samples(block)
        # No check after the down-mix: the mean of finite samples within the range stays
        # finite and within it. Resampling can overshoot, so the resampler checks its output.
        chunks.append(resampler(to_mono(block)))
        if header.frame_limit is not None and frames_read >= header.frame_limit:
            break
    if frames_read:
        chunks.append(resampler(np.zeros(0, np.float32), last=True))
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), frames_read


def decode_audio(
    source: AudioSource,
    *,
    target_rate: int = TARGET_RATE,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    max_decoded_samples: int | None = DEFAULT_MAX_DECODED_SAMPLES,
    max_header_s: float | None = None,
    lane_samples: int | None = None,
) -> Audio:
    """Decode ``source`` (encoded bytes or a path) to mono float32 at ``target_rate``.

    Peak memory is the output plus one block of :data:`BLOCK_SAMPLES` (see the module
    docstring), whatever the source's rate and channel count. ``max_header_s`` bounds the
    time to open the file and read its header; ``lane_samples`` is the most samples (frames x
    channels) the caller's work lane takes, by the header or by what is really decoded.

    Raises:
        UnsupportedAudioError: not audio in a format read here (see the module docstring).
        EmptyAudioError: no samples.
        SampleRateError: source rate outside 8-192 kHz.
        AudioTooLargeError: it could decode to more than ``max_decoded_samples`` samples
            (frames x channels), judged from the header before decoding.
        AudioTooLongError: longer than ``max_duration_s`` (checked before decoding it all).
        NonFiniteAudioError: NaN or infinite samples (float files).
        SampleRangeError: samples beyond +-MAX_SAMPLE_MAGNITUDE (float files).
        SlowHeaderError: opening the file took longer than ``max_header_s``.
        AudioError: (``invalid_audio``) the stream changes rate or channels part-way.
        LaneBudgetExceeded: more than ``lane_samples`` (not an error of the audio).
    """
    reader = _open_timed(source, max_header_s)
    try:
        header = _read_header(reader, max_duration_s, max_decoded_samples, lane_samples)
        samples, frames_read = _decode_blocks(
            reader, header, target_rate, max_decoded_samples, lane_samples
        )
    finally:
        reader.close()
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
