"""Audio to stream: a file (paced at real time or as fast as possible) or the microphone.

A source declares its sample rate and channel count (the stream's ``start`` message) and yields
little-endian PCM16 chunks, interleaved, of about ``chunk_s`` seconds each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
        started = time.monotonic()
        sent_s = 0.0
        with sf.SoundFile(str(self.path)) as f:
            while True:
                block = await asyncio.to_thread(f.read, frames, "int16", True)
                if block.shape[0] == 0:
                    return
                if self.realtime:
                    await asyncio.sleep(max(0.0, started + sent_s - time.monotonic()))
                sent_s += block.shape[0] / self.sample_rate
                yield np.ascontiguousarray(block, dtype="<i2").tobytes()


def file_source(
    path: str | os.PathLike[str], chunk_s: float = 0.1, realtime: bool = True
) -> FileSource:
    return FileSource(path, chunk_s, realtime)


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
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise MicrophoneError(
            "recording needs the sounddevice package and PortAudio: "
            "pip install 'ser-client[mic]' (and apt-get install libportaudio2)"
        ) from e
    try:
        sounddevice.query_devices(kind="input")
    except Exception as e:  # sounddevice raises PortAudioError or ValueError here
        raise MicrophoneError(f"no microphone (input device) found: {e}") from e
    return sounddevice
