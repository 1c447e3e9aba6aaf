"""Tiny corpora in each published layout: real WAV files, 0.2 s, at each corpus' sample rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import synth_speechlike

RAVDESS_RATE, TESS_RATE, SAVEE_RATE = 48_000, 24_414, 44_100

# path -> (dataset, speaker, emotion, utterance) that the loader must read from the name.
RAVDESS_FILES = {
    "Actor_01/03-01-01-01-01-01-01.wav": ("ravdess", "01", "neutral", "01"),
    "Actor_01/03-01-02-02-02-01-01.wav": ("ravdess", "01", "calm", "02"),
    "Actor_02/03-01-08-01-01-02-02.wav": ("ravdess", "02", "surprised", "01"),
    "Actor_02/03-01-06-02-02-02-02.wav": ("ravdess", "02", "fearful", "02"),
    "Actor_07/03-01-03-01-02-01-07.wav": ("ravdess", "07", "happy", "02"),
    "Actor_07/03-01-03-01-02-02-07.wav": ("ravdess", "07", "happy", "02"),
}
RAVDESS_SKIPPED = ("Actor_01/03-02-05-01-01-01-01.wav", "Actor_02/01-01-05-01-01-01-02.wav")
TESS_FILES = {
    "OAF_angry/OAF_back_angry.wav": ("tess", "OAF", "angry", "back"),
    "OAF_neutral/OA_bite_neutral.wav": ("tess", "OAF", "neutral", "bite"),
    "OAF_neutral/OAF_bath_neutral.wav": ("tess", "OAF", "neutral", "bath"),
    "OAF_Fear/OAF_food_fear.wav": ("tess", "OAF", "fearful", "food"),
    "OAF_Pleasant_surprise/OAF_pad_ps.wav": ("tess", "OAF", "surprised", "pad"),
    "YAF_pleasant_surprised/YAF_dog_ps.wav": ("tess", "YAF", "surprised", "dog"),
    "YAF_disgust/YAF_back_disgust.wav": ("tess", "YAF", "disgust", "back"),
    "YAF_sad/YAF_beg_sad.wav": ("tess", "YAF", "sad", "beg"),
}
SAVEE_FLAT_FILES = {
    "ALL/DC_a01.wav": ("savee", "DC", "angry", "a01"),
    "ALL/JE_su15.wav": ("savee", "JE", "surprised", "su15"),
    "ALL/KL_sa03.wav": ("savee", "KL", "sad", "sa03"),
    "ALL/JK_n30.wav": ("savee", "JK", "neutral", "n30"),
}
SAVEE_NESTED_FILES = {
    "AudioData/DC/h07.wav": ("savee", "DC", "happy", "h07"),
    "AudioData/JK/d02.wav": ("savee", "JK", "disgust", "d02"),
    "AudioData/KL/f11.wav": ("savee", "KL", "fearful", "f11"),
}


def write_wav(path: Path, sample_rate: int, seed: int, duration_s: float = 0.2) -> None:
    """A speech-like clip; ``.opus`` files are written as Ogg Opus (as in the prepared copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = synth_speechlike(duration_s, sample_rate, seed=seed)
    if path.suffix == ".opus":
        sf.write(path, wave, sample_rate, format="OGG", subtype="OPUS")
    else:
        sf.write(path, wave, sample_rate, "PCM_16")


def write_tree(root: Path, files: dict[str, tuple[str, str, str, str]], rate: int) -> None:
    for seed, name in enumerate(files):
        write_wav(root / name, rate, seed=seed + rate)


@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
    root = tmp_path / "Audio_Speech_Actors_01-24"
    write_tree(root, RAVDESS_FILES, RAVDESS_RATE)
    for name in RAVDESS_SKIPPED:
        write_wav(root / name, RAVDESS_RATE, seed=99)
    # The published set holds this recording twice under two names, byte for byte.
    duplicate = root / "Actor_07/03-01-03-01-02-02-07.wav"
    duplicate.write_bytes((root / "Actor_07/03-01-03-01-02-01-07.wav").read_bytes())
    return root


@pytest.fixture
def tess_root(tmp_path: Path) -> Path:
    root = tmp_path / "TESS Toronto emotional speech set data"
    write_tree(root, TESS_FILES, TESS_RATE)
    return root


@pytest.fixture
def savee_flat_root(tmp_path: Path) -> Path:
    root = tmp_path / "SAVEE"
    write_tree(root, SAVEE_FLAT_FILES, SAVEE_RATE)
    return root


@pytest.fixture
def savee_nested_root(tmp_path: Path) -> Path:
    root = tmp_path / "SAVEE-nested"
    write_tree(root, SAVEE_NESTED_FILES, SAVEE_RATE)
    return root


@pytest.fixture
def mixed_root(tmp_path: Path) -> Path:
    """All three corpora side by side, as a user might unpack them."""
    root = tmp_path / "corpora"
    write_tree(root / "ravdess", RAVDESS_FILES, RAVDESS_RATE)
    write_tree(root / "tess", TESS_FILES, TESS_RATE)
    write_tree(root / "savee", SAVEE_FLAT_FILES, SAVEE_RATE)
    (root / "savee" / "Info.txt").write_text("not audio\n")
    return root
