"""Audio to stream: a file (paced at real time or as fast as possible) or the microphone.

A source declares its sample rate and channel count (the stream's ``start`` message) and yields
little-endian PCM16 chunks, interleaved, of about ``chunk_s`` seconds each. Files are read with
soundfile (WAV, FLAC, OGG, MP3: what libsndfile decodes); M4A/MP4 and WebM/Matroska, which
libsndfile does not read, with PyAV (FFmpeg) when it is installed (``pip install av``; the
server's own install has it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile as sf


class AudioSource(Protocol):
    sample_rate: int
    channels: int

    def chunks(self) -> AsyncIterator[bytes]: ...


class MicrophoneError(RuntimeError):
    """No microphone to record from: the optional ``sounddevice`` package or an input device
    is missing."""


@dataclass
class FileSource:
    """A recording read block by block with soundfile (anything libsndfile decodes)."""

    path: str | os.PathLike[str]
    chunk_s: float = 0.1
    realtime: bool = True  # send each chunk when its audio would have been spoken
    sample_rate: int = 0
    channels: int = 0

    def __post_init__(self) -> None:
        info = sf.info(str(self.path))
        self.sample_rate, self.channels = int(info.samplerate), int(info.channels)

    async def chunks(self) -> AsyncIterator[bytes]:
        frames = max(1, round(self.chunk_s * self.sample_rate))
        with sf.SoundFile(str(self.path)) as f:

            def blocks() -> Iterator[bytes]:
                while (block := f.read(frames, "int16", True)).shape[0]:
                    yield np.ascontiguousarray(block, dtype="<i2").tobytes()

            async for chunk in _paced(blocks(), self.sample_rate * self.channels, self.realtime):
                yield chunk


@dataclass
class ContainerSource:
    """An M4A/MP4 or WebM/Matroska recording decoded with PyAV, its first audio stream."""

    path: str | os.PathLike[str]
    chunk_s: float = 0.1
    realtime: bool = True
    sample_rate: int = 0
    channels: int = 0

    def __post_init__(self) -> None:
        av = _av()
        with av.open(str(self.path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{self.path} holds no audio stream")
            codec = container.streams.audio[0].codec_context
            self.sample_rate, self.channels = int(codec.sample_rate), int(codec.channels)

    async def chunks(self) -> AsyncIterator[bytes]:
        av = _av()
        frame_bytes = 2 * self.channels
        chunk_bytes = max(1, round(self.chunk_s * self.sample_rate)) * frame_bytes

        def blocks() -> Iterator[bytes]:
            with av.open(str(self.path)) as container:
                stream = container.streams.audio[0]
                layout = stream.codec_context.layout
                to_s16 = av.AudioResampler(format="s16", layout=layout, rate=self.sample_rate)
                pending = bytearray()
                for frame in container.decode(stream):
                    for converted in to_s16.resample(frame):
                        pending += converted.to_ndarray().astype("<i2").tobytes()
                    while len(pending) >= chunk_bytes:
                        yield bytes(pending[:chunk_bytes])
                        del pending[:chunk_bytes]
                for converted in to_s16.resample(None):
                    pending += converted.to_ndarray().astype("<i2").tobytes()
                if pending:
                    yield bytes(pending)

        async for chunk in _paced(blocks(), self.sample_rate * self.channels, self.realtime):
            yield chunk


async def _paced(
    blocks: Iterator[bytes], samples_per_s: int, realtime: bool
) -> AsyncIterator[bytes]:
    """``blocks`` (PCM16 chunks, read in a thread), each sent when its audio would have been
    spoken when ``realtime``, else at once."""
    started = time.monotonic()
    sent_s = 0.0
    while (block := await asyncio.to_thread(next, blocks, None)) is not None:
        if realtime:
            await asyncio.sleep(max(0.0, started + sent_s - time.monotonic()))
        sent_s += len(block) / 2 / samples_per_s
        yield block


def _av() -> Any:
    try:
        import av
    except ImportError as e:
        raise UnreadableFileError(
            "M4A/MP4 and WebM need PyAV (pip install av): soundfile reads WAV, FLAC, OGG and "
            "MP3; ser predict sends any of them as they are"
        ) from e
    return av


class UnreadableFileError(RuntimeError):
    """A file ``ser stream`` cannot decode (or that is not there); the message says why."""


CONTAINER_MAGIC = {b"ftyp": 4, b"\x1aE\xdf\xa3": 0}  # MP4 at byte 4, Matroska/WebM at 0


def file_source(
    path: str | os.PathLike[str], chunk_s: float = 0.1, realtime: bool = True
) -> FileSource | ContainerSource:
    """The source for a recording on disk: soundfile's formats, else M4A/MP4 or WebM.

    Raises:
        UnreadableFileError: no such file, or not audio either reader decodes.
    """
    where = Path(path)
    if not where.is_file():
        raise UnreadableFileError(f"no such file: {path}")
    with where.open("rb") as f:
        head = f.read(12)
    if any(head[at : at + len(magic)] == magic for magic, at in CONTAINER_MAGIC.items()):
        try:
            return ContainerSource(path, chunk_s, realtime)
        except UnreadableFileError:
            raise
        except Exception as e:  # PyAV's errors: a damaged or cut file
            raise UnreadableFileError(f"cannot decode {path}: {e}") from e
    try:
        return FileSource(path, chunk_s, realtime)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise UnreadableFileError(
            f"cannot decode {path} as audio (WAV, FLAC, OGG, MP3, M4A or WebM): {e}"
        ) from e


@dataclass
class MicrophoneSource:
    """The default input device, mono PCM16, for ``seconds`` (None: until cancelled)."""

    sample_rate: int = 16_000
    chunk_s: float = 0.1
    seconds: float | None = None
    channels: int = 1

    def __post_init__(self) -> None:
        self._sounddevice = _sounddevice()

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def on_audio(data: Any, frames: int, when: Any, status: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

        frames = max(1, round(self.chunk_s * self.sample_rate))
        total = None if self.seconds is None else round(self.seconds * self.sample_rate)
        sent = 0
        stream = self._sounddevice.RawInputStream(
            samplerate=self.sample_rate,
            channels=1,
            dtype="int16",
            blocksize=frames,
            callback=on_audio,
        )
        with stream:
            while total is None or sent < total:
                chunk = await queue.get()
                sent += len(chunk) // 2
                yield chunk


def _sounddevice() -> Any:
    try:
        import sounddevice  # type: ignore[import-not-found]
    except ImportError as e:
        raise MicrophoneError(
            "recording needs the sounddevice package: pip install sounddevice (from a clone "
            "of the service: pip install './client[mic]')"
        ) from e
    except OSError as e:  # the package is there, its PortAudio library is not
        raise MicrophoneError(
            "the PortAudio library is missing: apt-get install libportaudio2 (Debian, "
            "Ubuntu), brew install portaudio (macOS)"
        ) from e
    try:
        sounddevice.query_devices(kind="input")
    except Exception as e:  # sounddevice raises PortAudioError or ValueError here
        raise MicrophoneError(f"no microphone (input device) found: {e}") from e
    return sounddevice
