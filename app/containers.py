"""Audio in the containers libsndfile does not read, through PyAV (FFmpeg's libraries, shipped in
the ``av`` wheel): M4A / MP4 / AAC (what phones record) and WebM / Matroska (what browsers'
MediaRecorder makes, usually Opus).

:class:`ContainerReader` gives :mod:`app.audio` the same two things libsndfile does: a header
(format, rate, channels, frames when the container says) and interleaved float32 blocks, so the
same limits, validity rule, down-mix and resampler apply to every format. FFmpeg is asked to
convert each decoded frame to packed float32 at the stream's own rate and channel layout, nothing
more: mixing to mono and resampling stay :mod:`app.audio`'s, identical for all formats.

FFmpeg sees only what is accepted: :mod:`app.sniff` has already named the container from its
magic bytes, and it is opened with that one demuxer (no probing over FFmpeg's whole list), no
protocol for anything the media names inside it (:data:`OPEN_OPTIONS`), a bounded probe, and
at most :data:`MAX_STREAMS` streams: FFmpeg opens a decoder per stream while it probes, and its
own cap is 1,000 (a 0.4 MB Matroska file of 1,000 Opus tracks cost 220 MB).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Final

import av
import numpy as np

MAX_STREAMS: Final[int] = 8  # audio, cover art, subtitles...: more is not a recording
PROBE_BYTES: Final[int] = 1 << 20  # what FFmpeg may read to fill in the streams' parameters
PROBE_US: Final[int] = 2_000_000  # and how much of the media it may look at, in microseconds
OPEN_OPTIONS: Final[dict[str, str]] = {
    # The input is an in-memory buffer, which needs no protocol; a whitelist naming none makes
    # every nested open (MP4 external references, playlists) fail without touching a file or
    # a socket.
    "protocol_whitelist": "none",
    "probesize": str(PROBE_BYTES),
    "analyzeduration": str(PROBE_US),
    # FFmpeg stops adding streams at this count (Matroska silently, MP4 with ENOMEM): one past
    # the limit, so that a file over it is seen and refused.
    "max_streams": str(MAX_STREAMS + 1),
}


class ContainerError(ValueError):
    """Not a container this reader takes, or no audio stream in it, or a corrupt stream.

    The message is for the sender; ``detail`` is FFmpeg's own text, for the server log.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class TooManyStreamsError(ContainerError):
    """More streams than :data:`MAX_STREAMS`."""


class FormatChangeError(ContainerError):
    """The audio stream changes its sample rate or channel layout part-way through."""


def _too_many_streams() -> TooManyStreamsError:
    return TooManyStreamsError(
        f"the file holds more than {MAX_STREAMS} streams: send a file with one audio stream"
    )


class ContainerReader:
    """The first audio stream of an M4A/MP4/AAC or WebM/Matroska file held in memory.

    Args:
        data: the whole file.
        demuxer: FFmpeg's name of the demuxer that reads it (from :mod:`app.sniff`).
        format_name: the format name reported to clients.
        open_timeout_s: FFmpeg gives up opening after this long, where it checks (PyAV's
            interrupt callback; the caller still times the open as a whole).
    """

    def __init__(
        self, data: bytes, demuxer: str, format_name: str, open_timeout_s: float | None = None
    ) -> None:
        try:
            self._container: Any = av.open(
                io.BytesIO(data),
                mode="r",
                format=demuxer,
                container_options=OPEN_OPTIONS,
                metadata_errors="ignore",
                timeout=(open_timeout_s, None),
            )
        except MemoryError as e:  # av.error.MemoryError: the max_streams cap (see OPEN_OPTIONS)
            raise _too_many_streams() from e
        except (av.FFmpegError, ValueError, OSError) as e:
            raise ContainerError(
                f"could not read the {format_name} file: it is damaged, cut short or not really "
                f"{format_name}",
                detail=str(e),
            ) from e
        try:
            if len(self._container.streams) > MAX_STREAMS:
                raise _too_many_streams()
            if not self._container.streams.audio:
                raise ContainerError("the file has no audio stream")
            self._stream = self._container.streams.audio[0]
            context = self._stream.codec_context
            self.format = format_name
            self.sample_rate = int(context.sample_rate or 0)
            self.channels = int(context.layout.nb_channels if context.layout else 0)
            self.frames = self._frames()
        except BaseException:
            self._container.close()
            raise
        self._converter = av.AudioResampler(
            format="flt", layout=context.layout, rate=self.sample_rate
        )

    def _frames(self) -> int | None:
        """Frames the header announces (duration x rate), or None when it does not say (a live
        WebM recording often has no duration)."""
        if self._stream.duration is not None and self._stream.time_base is not None:
            seconds = float(self._stream.duration * self._stream.time_base)
        elif self._container.duration is not None:
            seconds = self._container.duration / av.time_base
        else:
            return None
        return max(0, round(seconds * self.sample_rate))

    def blocks(self) -> Iterator[np.ndarray]:
        """Interleaved float32 ``(frames, channels)`` arrays, one per decoded frame.

        Raises:
            ContainerError: the stream is corrupt.
            FormatChangeError: its rate or channels change part-way (ADTS streams can).
        """
        try:
            for frame in self._container.decode(self._stream):
                for converted in self._converter.resample(frame):
                    yield self._interleaved(converted)
            for converted in self._converter.resample(None):
                yield self._interleaved(converted)
        except av.FFmpegError as e:
            raise ContainerError("the audio is corrupt part-way through", detail=str(e)) from e
        except ValueError as e:  # PyAV: "Frame does not match AudioResampler setup"
            raise FormatChangeError(
                "the audio changes its sample rate or channel count part-way through: "
                "send one recording per file, or re-encode it (e.g. to WAV or FLAC)"
            ) from e

    def _interleaved(self, frame: Any) -> np.ndarray:
        packed = frame.to_ndarray()  # packed float32: (1, frames x channels)
        return np.asarray(packed, dtype=np.float32).reshape(-1, self.channels)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
