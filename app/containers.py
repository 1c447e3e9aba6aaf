"""Audio in the containers libsndfile does not read, through PyAV (FFmpeg's libraries, shipped in
the ``av`` wheel): M4A / MP4 / AAC (what phones record) and WebM / Matroska (what browsers'
MediaRecorder makes, usually Opus).

:class:`ContainerReader` gives :mod:`app.audio` the same two things libsndfile does: a header
(format, rate, channels, frames when the container says) and interleaved float32 blocks, so the
same limits, validity rule, down-mix and resampler apply to every format. FFmpeg is asked to
convert each decoded frame to packed float32 at the stream's own rate and channel layout, nothing
more: mixing to mono and resampling stay :mod:`app.audio`'s, identical for all formats.

Only audio containers are accepted (:data:`CONTAINERS`): FFmpeg would open almost anything, and
a service has no reason to parse video game formats from strangers.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, Final

import av
import numpy as np

# FFmpeg demuxer names -> the format name reported to clients.
CONTAINERS: Final[dict[str, str]] = {
    "mov,mp4,m4a,3gp,3g2,mj2": "MP4",
    "matroska,webm": "WEBM",
    "aac": "AAC",
}
_PROBE_BYTES: Final[int] = 1 << 16


class ContainerError(ValueError):
    """Not a container this reader takes, or no audio stream in it, or a corrupt stream."""


class ContainerReader:
    """The first audio stream of an M4A/MP4/AAC or WebM/Matroska file held in memory."""

    def __init__(self, data: bytes) -> None:
        try:
            self._container: Any = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore")
        except (av.FFmpegError, ValueError, OSError) as e:
            raise ContainerError(f"not a readable container: {e}") from e
        try:
            name = self._container.format.name
            if name not in CONTAINERS:
                raise ContainerError(f"{name} files are not accepted")
            if not self._container.streams.audio:
                raise ContainerError("the file has no audio stream")
            self._stream = self._container.streams.audio[0]
            context = self._stream.codec_context
            self.format = CONTAINERS[name]
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
        """
        try:
            for frame in self._container.decode(self._stream):
                for converted in self._converter.resample(frame):
                    yield self._interleaved(converted)
            for converted in self._converter.resample(None):
                yield self._interleaved(converted)
        except av.FFmpegError as e:
            raise ContainerError(f"the audio stream is corrupt: {e}") from e

    def _interleaved(self, frame: Any) -> np.ndarray:
        packed = frame.to_ndarray()  # packed float32: (1, frames x channels)
        return np.asarray(packed, dtype=np.float32).reshape(-1, self.channels)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
