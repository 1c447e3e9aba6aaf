"""Decoding under hostile input: the size check before decoding, block decoding that equals the
one-shot path, the one sample-validity rule, the silence floor, and a fuzzed WAV header."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import audio as audio_module
from app.audio import (
    MAX_SAMPLE_MAGNITUDE,
    AudioError,
    AudioTooLargeError,
    NonFiniteAudioError,
    SampleRangeError,
    check_samples,
    decode_audio,
    is_silent,
    probe_audio,
    resample,
    to_mono,
)
from app.features import FeatureConfig
from app.streaming import StreamSession
from tests.conftest import synth_speechlike, wav_bytes


def one_shot(data: bytes) -> np.ndarray:
    """The earlier decoder: the whole file at once, then down-mix, then one-shot resampling."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return resample(to_mono(samples), rate)


def multichannel(duration_s: float, rate: int, channels: int) -> np.ndarray:
    return np.stack(
        [
            synth_speechlike(duration_s, rate, seed=c) * (1 - c / (2 * channels))
            for c in range(channels)
        ],
        axis=1,
    )


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "fmt"),
    [
        (16_000, 1, "PCM_16", "WAV"),
        (48_000, 2, "FLOAT", "WAV"),
        (44_100, 1, "PCM_24", "WAV"),
        (22_050, 6, "PCM_16", "FLAC"),
        (192_000, 8, "PCM_24", "FLAC"),
        (8_000, 3, "PCM_U8", "WAV"),
    ],
)
@pytest.mark.parametrize("block_samples", [4_093, 1 << 20])  # many odd-sized blocks; one block
def test_block_decoding_equals_the_one_shot_path(
    monkeypatch, rate: int, channels: int, subtype: str, fmt: str, block_samples: int
) -> None:
    monkeypatch.setattr(audio_module, "BLOCK_SAMPLES", block_samples)
    data = wav_bytes(multichannel(1.3, rate, channels), rate, subtype=subtype, fmt=fmt)
    decoded = decode_audio(data).samples
    reference = one_shot(data)
    assert decoded.shape == reference.shape
    np.testing.assert_allclose(decoded, reference, rtol=0, atol=1e-6)


def test_size_is_refused_from_the_header_before_decoding(monkeypatch) -> None:
    data = wav_bytes(multichannel(0.5, 48_000, 4), 48_000)  # 24,000 frames x 4 channels

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the header already told the size")

    monkeypatch.setattr(audio_module, "_decode_blocks", no_decoding)
    with pytest.raises(AudioTooLargeError, match="96000 samples"):
        decode_audio(data, max_decoded_samples=95_999)
    assert probe_audio(data, max_decoded_samples=None).decode_samples == 96_000


def test_decoded_size_counts_at_most_the_duration_limit() -> None:
    """Frames past the duration limit are never decoded, so they do not count."""
    data = wav_bytes(np.stack([synth_speechlike(3.0, 16_000)] * 2, axis=1), 16_000)
    assert probe_audio(data, max_duration_s=None, max_decoded_samples=None).decode_samples == 96_000
    limited = probe_audio(data, max_duration_s=1.0, max_decoded_samples=None)
    assert limited.frames == 48_000 and limited.decode_samples == 2 * 16_001


@pytest.mark.parametrize(
    ("samples", "error"),
    [
        (np.array([0.0, np.nan], np.float32), NonFiniteAudioError),
        (np.array([np.inf, 0.0], np.float32), NonFiniteAudioError),
        (np.array([-np.inf], np.float32), NonFiniteAudioError),
        (np.array([[0.1, 3e38]], np.float32), SampleRangeError),
        (np.array([-4.5], np.float32), SampleRangeError),
    ],
)
def test_the_validity_rule_refuses(samples: np.ndarray, error: type[AudioError]) -> None:
    with pytest.raises(error):
        check_samples(samples)


def test_the_validity_rule_keeps_overs_up_to_12_dbfs() -> None:
    check_samples(np.array([-MAX_SAMPLE_MAGNITUDE, 1.5, MAX_SAMPLE_MAGNITUDE], np.float32))
    check_samples(np.zeros((0, 2), np.float32))


def square_3e38() -> np.ndarray:
    """The issue's 500: 0.2 s at 48 kHz of +-3e38, finite, which resampling overshot to inf."""
    return np.where(np.arange(9_600) % 96 < 48, 3e38, -3e38).astype(np.float32)


@pytest.mark.parametrize(
    ("wave", "error"),
    [
        (square_3e38(), SampleRangeError),
        (synth_speechlike(0.2, 48_000) * np.float32(1e20), SampleRangeError),
        (synth_speechlike(0.2, 48_000), None),
        (synth_speechlike(0.2, 48_000) * np.float32(3.5 / 0.35), None),  # overs, kept
    ],
)
def test_float_files_beyond_the_range_are_refused(wave: np.ndarray, error: type | None) -> None:
    data = wav_bytes(wave, 48_000, subtype="FLOAT")
    if error is None:
        assert np.isfinite(decode_audio(data).samples).all()
    else:
        with pytest.raises(error, match="full scale"):
            decode_audio(data)


def test_silence_floor() -> None:
    assert is_silent(np.zeros(100, np.float32))
    assert is_silent(synth_speechlike(0.1, 16_000) * np.float32(1e-30))
    assert not is_silent(synth_speechlike(0.1, 16_000))
    one_lsb = np.full(100, 1 / 32768, np.float32)  # 16-bit dither is audio, not silence
    assert not is_silent(one_lsb)


# A valid 0.1 s WAV header to mutate: RIFF size, fmt fields, data size and the bytes after it.
_SEED_WAV = wav_bytes(synth_speechlike(0.1, 16_000), 16_000)
_FLOAT_WAV = wav_bytes(synth_speechlike(0.1, 48_000), 48_000, subtype="FLOAT")
_HEADER_FIELDS = [  # (offset, struct format) of the canonical 44-byte header's fields
    (4, "<I"),  # RIFF size
    (20, "<H"),  # format tag
    (22, "<H"),  # channels
    (24, "<I"),  # sample rate
    (28, "<I"),  # byte rate
    (32, "<H"),  # block align
    (34, "<H"),  # bits per sample
    (40, "<I"),  # data size
]


@st.composite
def mutated_wav(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([_SEED_WAV, _FLOAT_WAV])))
    for offset, fmt in draw(st.lists(st.sampled_from(_HEADER_FIELDS), max_size=4)):
        bits = 8 * struct.calcsize(fmt)
        value = draw(
            st.one_of(
                st.sampled_from([0, 1, 2, 3, 8, 255, 1024, 2**bits - 1]),
                st.integers(0, 2**bits - 1),
            )
        )
        struct.pack_into(fmt, data, offset, value)
    for _ in range(draw(st.integers(0, 6))):  # raw byte flips anywhere, samples included
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_wav())
def test_fuzzed_wav_headers_decode_or_raise_audio_errors(data: bytes) -> None:
    try:
        audio = decode_audio(data, max_duration_s=30.0)
    except AudioError:
        return
    assert audio.samples.dtype == np.float32
    assert np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max(initial=0.0) <= MAX_SAMPLE_MAGNITUDE


@pytest.mark.parametrize(
    ("scale", "error"), [(1e20, SampleRangeError), (np.nan, NonFiniteAudioError)]
)
def test_streams_apply_the_same_rule(scale: float, error: type[Exception]) -> None:
    """The same float audio over a pcm_f32le stream: refused, never NaN on the wire."""
    session = StreamSession(FeatureConfig(), 0.5, 3.5, 48_000, "pcm_f32le", 2)
    speech = synth_speechlike(0.5, 48_000)
    wave = np.stack([speech, speech], axis=1) * np.float32(scale)
    with pytest.raises(error):
        session.push(wave.astype("<f4").tobytes())
