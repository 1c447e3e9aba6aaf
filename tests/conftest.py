"""Fixtures shared by every test area: small synthetic audio, never the real corpora."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# RECORD_TEST_RUN=1 make test writes benchmarks/results/tests.json, which the docs quote.
pytest_plugins = ("benchmarks.pytest_record",)


# Vowel formants (F1, F2, F3 in Hz) of an adult voice: /a/, /i/, /u/, /e/, /ae/, /er/.
FORMANTS_HZ = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480],
     [660, 1720, 2410], [490, 1350, 1690]],
    dtype=np.float64,
)  # fmt: skip
SYLLABLES_PER_S = 5.0


def synth_speechlike(duration_s: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A voice the speech detector (app/vad.py) hears as speech: a gliding glottal pitch through
    vowel formants that move from syllable to syllable, each syllable voiced for 80 % of its
    length and closed by a short fricative burst, peak 0.3. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    f0 = 120.0 * (1.0 + 0.15 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0.0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    position = t * SYLLABLES_PER_S
    syllable = position.astype(int)
    within = position - syllable
    vowels = FORMANTS_HZ[rng.integers(0, len(FORMANTS_HZ), int(syllable.max(initial=0)) + 2)]
    glide = np.clip((within - 0.7) / 0.3, 0.0, 1.0)[:, None]
    formants = vowels[syllable] * (1 - glide) + vowels[syllable + 1] * glide
    wave = np.zeros(n)
    top_hz = min(4000.0, sample_rate / 2 - 200.0)
    for k in range(1, int(top_hz / 138.0) + 1):  # harmonics below top_hz at the highest f0
        gain = sum(
            1 / (1 + ((k * f0 - formants[:, j]) / bw) ** 2)
            for j, bw in ((0, 90), (1, 110), (2, 150))
        )
        wave += gain * np.sin(k * phase)
    wave *= np.sin(np.pi * np.clip(within / 0.8, 0.0, 1.0)) ** 0.6
    burst = rng.standard_normal(n) * ((within > 0.82) & (within < 0.95))
    wave += 0.15 * np.abs(wave).max(initial=0.0) * np.convolve(burst, [1.0, -0.9], "same")
    wave *= 0.3 / max(float(np.abs(wave).max(initial=0.0)), 1e-9)
    return (wave + 0.002 * rng.standard_normal(n)).astype(np.float32)


def wav_bytes(
    wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16", fmt: str = "WAV"
) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wave, sample_rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def av_bytes(wave: np.ndarray, sample_rate: int, container: str, codec: str) -> bytes:
    """``wave`` (``(samples,)`` or ``(samples, channels)``) encoded with PyAV (FFmpeg), e.g.
    ``("mp4", "aac")`` for M4A or ``("webm", "libopus")`` as a browser's MediaRecorder makes."""
    import av

    planar = np.atleast_2d(np.asarray(wave, dtype=np.float32).T)  # (channels, samples)
    layout = "mono" if planar.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar), "fltp", layout)
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


VOICED_S, PERIOD_S = 0.5, 2.5  # the worst-case upload: half a second of voice every 2.5 s


def write_worst_case_flac(path: Path, seconds: float, rate: int = 192_000) -> int:
    """A mono ``rate`` Hz FLAC of ``seconds`` x ``rate`` decoded samples that still fits the
    upload limit (at the defaults: the largest upload /predict accepts, 5.9 MB). Every 2.5 s
    starts with half a second of :func:`synth_speechlike`, then digital silence (which FLAC
    stores in a few bytes), in 8-bit samples (the decoded size does not depend on them; a
    16-bit voice made the body 18.7 MB, whose copies, not the work, filled the memory budget):
    every model window of it has speech in it, so the server decodes, hears, featurises and
    classifies the whole clip. Returns its size in bytes."""
    period = np.zeros(round(PERIOD_S * rate), np.float32)
    voice = synth_speechlike(VOICED_S, rate, seed=1)
    period[: voice.size] = voice
    whole, rest = divmod(round(seconds * rate), period.size)
    with sf.SoundFile(path, "w", rate, 1, "PCM_S8", format="FLAC") as f:
        for _ in range(whole):
            f.write(period)
        f.write(period[:rest])
    return path.stat().st_size


@pytest.fixture
def speech_16k() -> np.ndarray:
    """4 s of speech-like audio at 16 kHz, with 0.3 s of silence on each side."""
    pad = np.zeros(int(0.3 * 16_000), dtype=np.float32)
    return np.concatenate([pad, synth_speechlike(3.4, 16_000), pad])


def synthetic_feature_config(seed: int = 0, level: str = "none"):  # -> FeatureConfig
    """The server's FeatureConfig (with the given level stage) with per-band statistics
    measured on synthetic speech."""
    from app.features import FeatureConfig, log_mel

    config = FeatureConfig(level=level)  # type: ignore[arg-type]
    clips = np.stack([synth_speechlike(config.window_s, config.sample_rate, s) for s in range(4)])
    features = log_mel(clips, config)  # (4, n_mels, frames)
    mean = features.mean(axis=(0, 2))
    std = np.maximum(features.std(axis=(0, 2)), 1e-3)
    return config.with_stats(mean, std)


def export_test_models(folder, losses=("ce", "bce")):  # (Path | str, ...) -> Path
    """Export tiny randomly initialised real models, ``<loss>.onnx``, into ``folder``: the
    training package's model and exporter, full metadata, statistics from synthetic speech.
    The validation scores are made up so that ``bce`` is the best (the default model)."""
    from pathlib import Path

    import torch

    from app.contract import ModelMetadata
    from app.labels import LABELS
    from training.export import export_onnx
    from training.model import ModelConfig, build_model

    folder = Path(folder)
    config = synthetic_feature_config()
    for seed, loss in enumerate(losses):
        torch.manual_seed(seed)
        metadata = ModelMetadata(
            name=f"ser-{loss}",
            loss=loss,
            architecture="sequential",
            version="0.0.0-test",
            labels=LABELS,
            feature_config=config,
            git_commit="test",
            metrics={"validation": {"macro_f1": 0.5 + 0.1 * seed, "accuracy": 0.5}},
        )
        export_onnx(build_model(ModelConfig()), metadata, folder / f"{loss}.onnx")
    return folder


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory):  # -> pathlib.Path
    """A models folder with two tiny randomly initialised real models, ``ce.onnx`` and
    ``bce.onnx`` (see :func:`export_test_models`; torch is imported only when a test asks for
    this fixture)."""
    return export_test_models(tmp_path_factory.mktemp("models"))
