"""Corpus discovery: each corpus in its published layout, a manifest, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from tests.conftest import synth_speechlike
from tests.data.conftest import (
    RAVDESS_FILES,
    RAVDESS_RATE,
    SAVEE_FLAT_FILES,
    SAVEE_NESTED_FILES,
    TESS_FILES,
    TESS_RATE,
    write_wav,
)
from training.corpora import (
    Clip,
    CorpusError,
    CorpusNotFoundError,
    content_sha256,
    load_corpus,
    load_manifest,
)

Expected = dict[str, tuple[str, str, str, str]]


def _as_expected(clips: list[Clip], prefix: str = "") -> Expected:
    return {
        c.path.removeprefix(prefix): (c.dataset, c.speaker, c.emotion, c.utterance) for c in clips
    }


def test_ravdess_published_layout(ravdess_root: Path) -> None:
    clips = load_corpus(ravdess_root)
    # Song (channel 02) and video (modality 01) files are skipped, not mislabelled.
    assert _as_expected(clips) == RAVDESS_FILES
    assert sf.info(str(ravdess_root / clips[0].path)).samplerate == RAVDESS_RATE


def test_tess_published_layout_with_its_odd_names(tess_root: Path) -> None:
    clips = load_corpus(tess_root)
    assert _as_expected(clips) == TESS_FILES
    assert sf.info(str(tess_root / clips[0].path)).samplerate == TESS_RATE


@pytest.mark.parametrize("fixture", ["savee_flat_root", "savee_nested_root"])
def test_savee_flat_and_nested(fixture: str, request: pytest.FixtureRequest) -> None:
    root = request.getfixturevalue(fixture)
    expected = SAVEE_FLAT_FILES if fixture == "savee_flat_root" else SAVEE_NESTED_FILES
    assert _as_expected(load_corpus(root)) == expected


def test_corpora_side_by_side(mixed_root: Path) -> None:
    clips = load_corpus(mixed_root)
    by_dataset = {
        name: _as_expected([c for c in clips if c.dataset == name], f"{name}/")
        for name in ("ravdess", "tess", "savee")
    }
    assert by_dataset == {"ravdess": RAVDESS_FILES, "tess": TESS_FILES, "savee": SAVEE_FLAT_FILES}
    assert [c.path for c in clips] == sorted(c.path for c in clips)
    assert all("\\" not in c.path and not c.path.startswith("/") for c in clips)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Actor_03/03-01-09-01-01-01-03.wav", "RAVDESS emotion code '09'"),
        ("OAF_happy/OAF_dog_joy.wav", "TESS emotion 'joy'"),
        ("OAF_happy/OAF_dog_sad.wav", "folder says happy"),
        ("ALL/DC_x01.wav", "SAVEE emotion code 'x'"),
    ],
)
def test_unknown_label_names_the_file(tmp_path: Path, name: str, message: str) -> None:
    write_wav(tmp_path / name, 16_000, seed=0)
    with pytest.raises(CorpusError, match=message) as info:
        load_corpus(tmp_path)
    assert name in str(info.value)


@pytest.mark.parametrize(
    "copies",
    [
        (
            "Actor_01/03-01-05-01-01-01-01.wav",
            "audio_speech_actors_01-24/Actor_01/03-01-05-01-01-01-01.wav",
        ),
        ("OAF_angry/OAF_back_angry.wav", "TESS/OAF_angry/OAF_back_angry.wav"),
        ("ALL/DC_a01.wav", "AudioData/DC/a01.wav"),
    ],
)
def test_two_copies_of_a_corpus_are_refused(tmp_path: Path, copies: tuple[str, str]) -> None:
    for seed, name in enumerate(copies):
        write_wav(tmp_path / name, 16_000, seed=seed)
    with pytest.raises(CorpusError, match="two copies of the corpus") as info:
        load_corpus(tmp_path)
    assert all(name in str(info.value) for name in copies)


def test_nothing_recognisable(tmp_path: Path) -> None:
    write_wav(tmp_path / "music" / "song.wav", 16_000, seed=0)
    with pytest.raises(CorpusNotFoundError, match="RAVDESS Actor_XX"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")


def _write_manifest(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_prepared_manifest_layout(tmp_path: Path) -> None:
    rows = [
        ("ravdess/Actor_07/03-01-03-01-02-01-07.opus", "ravdess", "07", "happy"),
        ("tess/OAF_neutral/OA_bite_neutral.opus", "tess", "OAF", "neutral"),
        ("savee/ALL/DC_su03.opus", "savee", "DC", "surprised"),
    ]
    for i, (path, *_rest) in enumerate(rows):
        write_wav(tmp_path / path, 16_000, seed=i)
    lines = ["path,dataset,speaker,emotion,duration_s"] + [",".join(r) + ",0.2" for r in rows]
    _write_manifest(tmp_path / "manifest.csv", "\n".join(lines) + "\n")
    clips = load_corpus(tmp_path)
    assert [(c.path, c.dataset, c.speaker, c.emotion, c.utterance) for c in clips] == [
        (*rows[0], "02"),
        (*rows[2], "su03"),
        (*rows[1], "bite"),
    ]


def test_custom_manifest_given_explicitly(tmp_path: Path) -> None:
    write_wav(tmp_path / "clips" / "a.wav", 16_000, seed=0)
    write_wav(tmp_path / "clips" / "b.flac", 16_000, seed=1)
    csv_path = tmp_path / "labels.csv"
    _write_manifest(csv_path, "path,emotion,speaker\nclips/a.wav,Fear,s1\nclips/b.flac,calm,\n")
    expected = [
        Clip("clips/a.wav", "custom", "s1", "fearful", ""),
        Clip("clips/b.flac", "custom", "", "calm", ""),
    ]
    assert load_manifest(csv_path) == expected
    assert load_corpus(csv_path) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,speaker\nclips/a.wav,s1\n", r"missing column\(s\) \['emotion'\]"),
        ("path,emotion\nclips/a.wav,bored\n", r"labels.csv:2 \(clips/a.wav\).*'bored'"),
        ("path,emotion\nclips/zzz.wav,sad\n", "do not exist, e.g. clips/zzz.wav"),
    ],
)
def test_bad_manifest(tmp_path: Path, text: str, message: str) -> None:
    write_wav(tmp_path / "clips" / "a.wav", 16_000, seed=0)
    _write_manifest(tmp_path / "labels.csv", text)
    with pytest.raises(CorpusError, match=message):
        load_manifest(tmp_path / "labels.csv")


def test_content_hash_sees_through_ogg_serial_numbers(tmp_path: Path) -> None:
    wave = synth_speechlike(1.0, 16_000, seed=5)
    # libsndfile picks a random Ogg serial number per file: same audio, different bytes.
    sf.write(tmp_path / "a.ogg", wave, 16_000, format="OGG", subtype="OPUS")
    sf.write(tmp_path / "b.ogg", wave, 16_000, format="OGG", subtype="OPUS")
    sf.write(tmp_path / "c.ogg", wave[::-1].copy(), 16_000, format="OGG", subtype="OPUS")
    a, b = (tmp_path / "a.ogg").read_bytes(), (tmp_path / "b.ogg").read_bytes()
    assert a != b
    assert content_sha256(tmp_path / "a.ogg") == content_sha256(tmp_path / "b.ogg")
    assert content_sha256(tmp_path / "a.ogg") != content_sha256(tmp_path / "c.ogg")
