"""Decoding clips into segments: correct, cached by content, parallel."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import training.segments as segments_module
from app.audio import decode_audio
from app.features import FeatureConfig
from app.windows import training_segment
from training.corpora import load_corpus
from training.segments import config_digest, load_segments

CONFIG = dataclasses.replace(FeatureConfig(), window_s=0.15)  # the fixture clips last 0.2 s


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting_decode(path: str, **kwargs: int) -> object:
        calls.append(path)
        return decode_audio(path, **kwargs)

    monkeypatch.setattr(segments_module, "decode_audio", counting_decode)
    return calls


def test_segments_match_the_shared_preprocessing(mixed_root: Path, tmp_path: Path) -> None:
    clips = load_corpus(mixed_root)
    waves, padded = load_segments(clips, mixed_root, CONFIG, tmp_path / "cache")
    assert waves.shape == (len(clips), CONFIG.window_samples) and waves.dtype == np.float32
    for i, clip in enumerate(clips):
        audio = decode_audio(mixed_root / clip.path)
        expected, expected_padded = training_segment(audio.samples, CONFIG)
        np.testing.assert_array_equal(waves[i], expected)
        assert padded[i] == expected_padded
    long_config = dataclasses.replace(CONFIG, window_s=1.0)
    _, padded = load_segments(clips, mixed_root, long_config, tmp_path / "cache")
    assert padded.all()


def test_second_run_reads_the_cache(
    ravdess_root: Path, tmp_path: Path, decode_counter: list[str]
) -> None:
    clips = load_corpus(ravdess_root)
    first = load_segments(clips, ravdess_root, CONFIG, tmp_path / "cache")
    # The duplicated RAVDESS recording has one content hash, so it is decoded once.
    assert len(decode_counter) == len(clips) - 1
    decode_counter.clear()
    second = load_segments(clips, ravdess_root, CONFIG, tmp_path / "cache")
    assert decode_counter == []
    np.testing.assert_array_equal(first.waves, second.waves)
    np.testing.assert_array_equal(first.padded, second.padded)


def test_a_changed_trim_setting_decodes_again(
    tess_root: Path, tmp_path: Path, decode_counter: list[str]
) -> None:
    clips = load_corpus(tess_root)
    load_segments(clips, tess_root, CONFIG, tmp_path / "cache")
    decode_counter.clear()
    load_segments(
        clips, tess_root, dataclasses.replace(CONFIG, trim_top_db=20.0), tmp_path / "cache"
    )
    assert len(decode_counter) == len(clips)
    decode_counter.clear()
    load_segments(
        clips, tess_root, dataclasses.replace(CONFIG, trim_floor="relative"), tmp_path / "cache"
    )
    assert len(decode_counter) == len(clips)
    decode_counter.clear()
    # Normalisation statistics do not change the waveform segment: still cached.
    stats = CONFIG.with_stats(np.zeros(CONFIG.n_mels), np.ones(CONFIG.n_mels))
    load_segments(clips, tess_root, stats, tmp_path / "cache")
    assert decode_counter == []


def test_process_pool_gives_the_same_segments(mixed_root: Path, tmp_path: Path) -> None:
    clips = load_corpus(mixed_root)
    serial = load_segments(clips, mixed_root, CONFIG, tmp_path / "serial", workers=1)
    parallel = load_segments(clips, mixed_root, CONFIG, tmp_path / "parallel", workers=2)
    np.testing.assert_array_equal(serial.waves, parallel.waves)
    assert len(list((tmp_path / "parallel").glob("*.npy"))) == len(clips)


def test_segments_cached_before_the_trim_floor_keep_their_names() -> None:
    """The digest of the absolute floor (every segment cached before 2026-12-05) is unchanged;
    the level stage does not enter it (it works on features, not on segments)."""
    assert config_digest(FeatureConfig()) == "fb1937dd09f1b234"
    assert config_digest(FeatureConfig(level="window")) == "fb1937dd09f1b234"
    assert config_digest(FeatureConfig(trim_floor="relative")) != "fb1937dd09f1b234"
