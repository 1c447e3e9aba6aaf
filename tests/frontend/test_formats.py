"""The formats people have: MP3 (libsndfile), M4A/AAC and WebM/Opus (PyAV), each through the
same bounded decode, limits and errors as WAV; files made here with the same libraries."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from app.audio import (
    AudioTooLargeError,
    AudioTooLongError,
    UnsupportedAudioError,
    decode_audio,
    probe_audio,
)
from tests.conftest import av_bytes, synth_speechlike

RATE = 16_000


def stereo(seconds: float, rate: int) -> np.ndarray:
    left = synth_speechlike(seconds, rate, seed=1)
    return np.stack([left, 0.5 * left], axis=1)


def mp3_bytes(wave: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="MP3")
    return buffer.getvalue()


FORMATS = {
    "MP3": lambda seconds: mp3_bytes(stereo(seconds, 44_100), 44_100),
    "MP4": lambda seconds: av_bytes(stereo(seconds, 44_100), 44_100, "mp4", "aac"),
    "WEBM": lambda seconds: av_bytes(stereo(seconds, 48_000), 48_000, "webm", "libopus"),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_decodes_to_16k_mono_close_to_the_original(name: str) -> None:
    audio = decode_audio(FORMATS[name](2.0))
    assert audio.source_format == name and audio.source_channels == 2
    assert audio.sample_rate == RATE and audio.samples.dtype == np.float32
    # Lossy codecs add a few ms of priming or padding, never more than a tenth of a second.
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    reference = (synth_speechlike(2.0, RATE, seed=1) * 0.75)[: audio.samples.size]
    level = np.sqrt(np.mean(audio.samples**2)) / np.sqrt(np.mean(reference**2))
    assert 0.8 < level < 1.25


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_same_limits_apply(name: str) -> None:
    data = FORMATS[name](2.0)
    with pytest.raises(AudioTooLongError):
        decode_audio(data, max_duration_s=1.0)
    with pytest.raises(AudioTooLargeError, match="more than the 1000 allowed"):
        decode_audio(data, max_decoded_samples=1_000)
    header = probe_audio(data)
    assert header.channels == 2 and header.frames is not None
    assert header.decode_samples == pytest.approx(2 * 2.0 * header.sample_rate, rel=0.06)


@pytest.mark.parametrize("name", ["MP4", "WEBM"])
def test_a_truncated_container_is_refused_not_crashed(name: str) -> None:
    data = FORMATS[name](2.0)
    for cut in (16, len(data) // 3):
        try:
            audio = decode_audio(data[:cut])
        except UnsupportedAudioError:
            continue  # refused with the format hint
        assert np.isfinite(audio.samples).all()  # or decoded as far as it goes


def test_other_ffmpeg_containers_are_not_accepted() -> None:
    flv = av_bytes(synth_speechlike(1.0, 44_100), 44_100, "flv", "aac")
    with pytest.raises(UnsupportedAudioError, match="FLV files are not accepted"):
        decode_audio(flv)
