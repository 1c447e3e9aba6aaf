"""Audio input: real decoding of every accepted format, and a specific error for each rejection."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from app.audio import (
    AudioTooLongError,
    EmptyAudioError,
    NonFiniteAudioError,
    SampleRateError,
    UnsupportedAudioError,
    decode_audio,
    resample,
)
from tests.conftest import synth_speechlike, wav_bytes


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("WAV", "FLOAT"),
        ("WAV", "DOUBLE"),
        ("FLAC", "PCM_16"),
        ("OGG", "VORBIS"),
        ("OGG", "OPUS"),
    ],
)
def test_decodes_every_supported_format(fmt: str, subtype: str) -> None:
    wave = synth_speechlike(1.0, 48_000)
    audio = decode_audio(wav_bytes(wave, 48_000, subtype=subtype, fmt=fmt))
    assert audio.sample_rate == 16_000 and audio.source_rate == 48_000
    assert audio.samples.dtype == np.float32
    assert abs(audio.duration_s - 1.0) < 0.01
    reference = resample(wave, 48_000)
    n = min(len(reference), len(audio.samples))
    # Lossy codecs add delay and noise; PCM paths must be close to the reference.
    if fmt != "OGG":
        assert np.abs(audio.samples[:n] - reference[:n]).max() < 0.02


def test_reads_a_path(tmp_path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, synth_speechlike(0.5, 16_000), 16_000)
    assert decode_audio(str(path)).samples.shape == (8_000,)


def test_downmixes_channels_to_mono() -> None:
    left = synth_speechlike(0.5, 16_000)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)
    audio = decode_audio(wav_bytes(stereo, 16_000, subtype="FLOAT"))
    assert audio.source_channels == 2
    np.testing.assert_allclose(audio.samples, left / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 96_000, 192_000])
def test_resamples_any_supported_rate_to_16k(rate: int) -> None:
    audio = decode_audio(wav_bytes(synth_speechlike(0.5, rate), rate))
    assert audio.samples.shape[0] == 8_000


def test_resampled_tone_keeps_its_pitch() -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    audio = decode_audio(wav_bytes((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate))
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert abs(np.argmax(spectrum) * 16_000 / len(audio.samples) - 440) < 2


def test_empty_upload() -> None:
    with pytest.raises(EmptyAudioError, match="empty"):
        decode_audio(b"")


def test_header_without_samples() -> None:
    with pytest.raises(EmptyAudioError, match="no samples"):
        decode_audio(wav_bytes(np.zeros(0, np.float32), 16_000))


@pytest.mark.parametrize(
    "payload",
    [b"this is not audio at all", b"\x00" * 4096, b"%PDF-1.7\n" + b"x" * 500, b"RIFF\x10\x00"],
)
def test_not_audio(payload: bytes) -> None:
    with pytest.raises(UnsupportedAudioError, match="WAV"):
        decode_audio(payload)


def test_unsupported_container() -> None:
    buf = io.BytesIO()
    sf.write(buf, synth_speechlike(0.2, 16_000), 16_000, format="AIFF")
    with pytest.raises(UnsupportedAudioError, match="AIFF"):
        decode_audio(buf.getvalue())


def test_nan_and_inf_samples() -> None:
    wave = synth_speechlike(0.5, 16_000)
    wave[100] = np.nan
    with pytest.raises(NonFiniteAudioError, match="NaN"):
        decode_audio(wav_bytes(wave, 16_000, subtype="FLOAT"))
    wave[100] = np.inf
    with pytest.raises(NonFiniteAudioError):
        decode_audio(wav_bytes(wave, 16_000, subtype="FLOAT"))


def test_too_long_is_refused_before_decoding_everything() -> None:
    with pytest.raises(AudioTooLongError, match="2 s limit"):
        decode_audio(wav_bytes(np.zeros(16_000 * 3, np.float32), 16_000), max_duration_s=2.0)


def test_sample_rate_out_of_range() -> None:
    with pytest.raises(SampleRateError, match="4000 Hz"):
        decode_audio(wav_bytes(synth_speechlike(0.5, 4_000), 4_000))


def test_truncated_wav_decodes_what_is_there() -> None:
    """A WAV cut short in transit keeps its header's size; libsndfile reads what arrived."""
    data = wav_bytes(synth_speechlike(1.0, 16_000), 16_000)
    audio = decode_audio(data[: len(data) // 2])
    assert 0.4 < audio.duration_s < 0.6


def test_lying_header_cannot_force_a_huge_decode() -> None:
    """A WAV header claiming hours of audio: the limit is enforced on what is actually read."""
    data = bytearray(wav_bytes(synth_speechlike(3.0, 16_000), 16_000))
    struct.pack_into("<I", data, 40, 0x7FFF_FFF0)  # the data chunk's size field
    with pytest.raises(AudioTooLongError):
        decode_audio(bytes(data), max_duration_s=2.0)
    assert decode_audio(bytes(data), max_duration_s=10.0).duration_s == pytest.approx(3.0, abs=0.01)
