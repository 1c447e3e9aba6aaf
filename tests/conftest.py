"""Fixtures shared by every test area: small synthetic audio, never the real corpora."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf


def synth_speechlike(duration_s: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A voiced-ish test signal: a gliding harmonic tone with an amplitude envelope plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    f0 = 140.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    wave = 0.2 * envelope * tone + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


def wav_bytes(
    wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16", fmt: str = "WAV"
) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sample_rate, subtype=subtype, format=fmt)
    return buf.getvalue()


@pytest.fixture
def speech_16k() -> np.ndarray:
    """4 s of speech-like audio at 16 kHz, with 0.3 s of silence on each side."""
    pad = np.zeros(int(0.3 * 16_000), dtype=np.float32)
    return np.concatenate([pad, synth_speechlike(3.4, 16_000), pad])
