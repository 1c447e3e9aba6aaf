"""Split protocols on a full-size stand-in corpus (tiny placeholder files with the real names)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from app.labels import LABELS
from training.corpora import Clip
from training.splits import (
    SPLITS,
    SplitError,
    make_corpus_folds,
    make_random_split,
    make_speaker_folds,
    read_split,
    split_sha256,
    write_all_splits,
    write_split,
)

SAVEE_CODES = {
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "sa": "sad",
    "su": "surprised",
}
TESS_CODES = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy"}
TESS_CODES |= {"neutral": "neutral", "ps": "surprised", "sad": "sad"}
DUPLICATE = (
    "ravdess/Actor_07/03-01-03-01-02-01-07.wav",
    "ravdess/Actor_07/03-01-03-01-02-02-07.wav",
)


def _full_size_clips() -> list[Clip]:
    """Clip lists with the published sizes: RAVDESS 1440, TESS 2800, SAVEE 480."""
    clips = []
    for actor in range(1, 25):
        for e, emotion in enumerate(LABELS, start=1):
            for intensity in (1, 2) if e > 1 else (1,):
                for statement in (1, 2):
                    for rep in (1, 2):
                        name = (
                            f"03-01-{e:02d}-{intensity:02d}-{statement:02d}-{rep:02d}-{actor:02d}"
                        )
                        path = f"ravdess/Actor_{actor:02d}/{name}.wav"
                        clips.append(
                            Clip(path, "ravdess", f"{actor:02d}", emotion, f"{statement:02d}")
                        )
    for speaker in ("OAF", "YAF"):
        for w in range(200):
            for code, emotion in TESS_CODES.items():
                path = f"tess/{speaker}_{code}/{speaker}_w{w:03d}_{code}.wav"
                clips.append(Clip(path, "tess", speaker, emotion, f"w{w:03d}"))
    for speaker in ("DC", "JE", "JK", "KL"):
        for code, emotion in SAVEE_CODES.items():
            for n in range(1, 16):
                clips.append(
                    Clip(
                        f"savee/ALL/{speaker}_{code}{n:02d}.wav",
                        "savee",
                        speaker,
                        emotion,
                        f"{code}{n:02d}",
                    )
                )
        for n in range(1, 31):
            clips.append(
                Clip(f"savee/ALL/{speaker}_n{n:02d}.wav", "savee", speaker, "neutral", f"n{n:02d}")
            )
    return sorted(clips, key=lambda c: c.path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Clip], Path]:
    root = tmp_path_factory.mktemp("corpus")
    clips = _full_size_clips()
    for i, clip in enumerate(clips):
        (root / clip.path).parent.mkdir(parents=True, exist_ok=True)
        (root / clip.path).write_bytes(i.to_bytes(4, "little") * 8)
    (root / DUPLICATE[1]).write_bytes((root / DUPLICATE[0]).read_bytes())
    return clips, root


def _check_partition(clips: list[Clip], rows: list[tuple[Clip, str]]) -> dict[str, list[Clip]]:
    assert sorted(c.path for c, _ in rows) == sorted(c.path for c in clips)  # each clip once
    by_split: dict[str, list[Clip]] = defaultdict(list)
    for clip, part in rows:
        by_split[part].append(clip)
    assert set(by_split) == set(SPLITS)
    return by_split


def test_random_split_is_stratified_80_10_10(corpus: tuple[list[Clip], Path]) -> None:
    clips, root = corpus
    by_split = _check_partition(clips, make_random_split(clips, root))
    for part, share in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(len(by_split[part]) / len(clips) - share) < 0.005
    cells = Counter((c.dataset, c.emotion) for c in clips)
    for part, share in (("val", 0.1), ("test", 0.1)):
        held = Counter((c.dataset, c.emotion) for c in by_split[part])
        for cell, size in cells.items():
            # Within one clip of the exact share (two for the duplicate's cell).
            assert abs(held[cell] - size * share) <= 2, (part, cell)


@pytest.mark.parametrize("seed", range(8))
def test_duplicate_recording_never_straddles(corpus: tuple[list[Clip], Path], seed: int) -> None:
    clips, root = corpus
    rows = dict((c.path, s) for c, s in make_random_split(clips, root, seed=seed))
    assert rows[DUPLICATE[0]] == rows[DUPLICATE[1]]


def test_speaker_folds_hold_out_speakers_and_words(corpus: tuple[list[Clip], Path]) -> None:
    clips, root = corpus
    folds = make_speaker_folds(clips, root)
    assert len(folds) == 4
    tested: Counter[tuple[str, str]] = Counter()
    for rows in folds:
        by_split = _check_partition(clips, rows)
        units = {
            part: {(c.dataset, c.utterance if c.dataset == "tess" else c.speaker) for c in members}
            for part, members in by_split.items()
        }
        assert not units["train"] & units["val"]
        assert not units["train"] & units["test"]
        assert not units["val"] & units["test"]
        actors = sorted(int(s) for d, s in units["test"] if d == "ravdess")
        assert len(actors) == 6 and sum(a % 2 for a in actors) == 3  # 3 male, 3 female
        val_actors = [int(s) for d, s in units["val"] if d == "ravdess"]
        assert len(val_actors) == 2 and sum(a % 2 for a in val_actors) == 1
        assert len([u for u in units["test"] if u[0] == "savee"]) == 1
        assert len([u for u in units["test"] if u[0] == "tess"]) == 50
        assert 0.2 < len(by_split["test"]) / len(clips) < 0.3
        assert 0.08 < len(by_split["val"]) / len(clips) < 0.12
        tested.update(units["test"])
    # Across the folds every actor, SAVEE speaker and TESS word is tested exactly once.
    assert len(tested) == 24 + 4 + 200 and set(tested.values()) == {1}


def test_corpus_folds_hold_out_one_whole_corpus(corpus: tuple[list[Clip], Path]) -> None:
    clips, root = corpus
    folds = make_corpus_folds(clips, root)
    assert len(folds) == 3
    sizes = Counter(c.dataset for c in clips)
    for held_out, rows in zip(("ravdess", "savee", "tess"), folds, strict=True):
        by_split = _check_partition(clips, rows)
        assert {c.dataset for c in by_split["test"]} == {held_out}
        assert len(by_split["test"]) == sizes[held_out]
        assert held_out not in {c.dataset for c in by_split["train"] + by_split["val"]}
        # Validation: a stratified tenth of every training corpus x emotion cell.
        cells = Counter((c.dataset, c.emotion) for c in clips if c.dataset != held_out)
        val = Counter((c.dataset, c.emotion) for c in by_split["val"])
        assert set(val) == set(cells)
        assert all(abs(val[cell] - 0.1 * n) <= 2 for cell, n in cells.items())


def test_corpus_protocol_needs_two_corpora(tmp_path: Path) -> None:
    clips = [Clip(f"{i}.wav", "custom", "a", "sad", "") for i in range(10)]
    for clip in clips:
        (tmp_path / clip.path).write_bytes(clip.path.encode())
    with pytest.raises(SplitError, match="two or more corpora"):
        make_corpus_folds(clips, tmp_path)


def test_speaker_protocol_keeps_cross_speaker_duplicates_held_out(tmp_path: Path) -> None:
    clips = [Clip(f"c/{s}_{i}.wav", "custom", s, "sad", "") for s in "ABCDEFGH" for i in range(3)]
    for i, clip in enumerate(clips):
        (tmp_path / clip.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / clip.path).write_bytes(bytes([i]))
    # The same recording filed under speakers A and H: it must follow the more held-out split.
    (tmp_path / "c/H_0.wav").write_bytes((tmp_path / "c/A_0.wav").read_bytes())
    for rows in make_speaker_folds(clips, tmp_path):
        parts = dict((c.path, s) for c, s in rows)
        assert parts["c/A_0.wav"] == parts["c/H_0.wav"]
        speakers_parts = {parts["c/A_1.wav"], parts["c/H_1.wav"]}
        expected = next(p for p in ("test", "val", "train") if p in speakers_parts)
        assert parts["c/A_0.wav"] == expected


def test_speaker_protocol_needs_speakers(tmp_path: Path) -> None:
    clips = [Clip("x.wav", "custom", "", "sad", "")]
    (tmp_path / "x.wav").write_bytes(b"x")
    with pytest.raises(SplitError, match=r"x\.wav has no speaker"):
        make_speaker_folds(clips, tmp_path)


def test_files_round_trip_and_are_reproducible(
    corpus: tuple[list[Clip], Path], tmp_path: Path
) -> None:
    clips, root = corpus
    first = write_all_splits(clips, root, tmp_path / "a")
    write_all_splits(clips, root, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == (
        [f"corpus-fold{k}.csv" for k in range(3)]
        + ["random.csv"]
        + [f"speaker-fold{k}.csv" for k in range(4)]
    )
    for name in names:
        assert split_sha256(tmp_path / "a" / name) == split_sha256(tmp_path / "b" / name)
    assert read_split(tmp_path / "a" / "random.csv") == first["random"]
    header = (tmp_path / "a" / "random.csv").read_text().splitlines()[0]
    assert header == "path,dataset,speaker,emotion,split,utterance"
    other_seed = make_random_split(clips, root, seed=1)
    write_split(tmp_path / "seed1.csv", other_seed)
    assert split_sha256(tmp_path / "seed1.csv") != split_sha256(tmp_path / "a" / "random.csv")


def test_read_split_rejects_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("path,dataset,speaker,emotion,split\na.wav,x,1,sad,holdout\n")
    with pytest.raises(SplitError, match=r"s.csv:2: split must be one of"):
        read_split(path)
    path.write_text("path,emotion\na.wav,sad\n")
    with pytest.raises(SplitError, match="missing column"):
        read_split(path)


def test_random_split_is_seeded_not_global(corpus: tuple[list[Clip], Path]) -> None:
    clips, root = corpus
    np.random.seed(123)  # global numpy state must not matter
    a = make_random_split(clips, root)
    np.random.seed(456)
    assert make_random_split(clips, root) == a


def _new_corpus_clips(root: Path, speakers: int, emotions: tuple[str, ...]) -> list[Clip]:
    """A corpus outside the paper's three ("nemo"), ``speakers`` x emotions x 10 clips, on disk."""
    clips = [
        Clip(f"nemo/s{s:02d}/{e}_{n}.opus", "nemo", f"s{s:02d}", e, f"{n}")
        for s in range(speakers)
        for e in emotions
        for n in range(10)
    ]
    for i, clip in enumerate(clips):
        (root / clip.path).parent.mkdir(parents=True, exist_ok=True)
        (root / clip.path).write_bytes(b"nemo" + i.to_bytes(4, "little") * 8)
    return clips


def test_random_split_keeps_the_paper_clips_and_holds_out_new_speakers(
    corpus: tuple[list[Clip], Path],
) -> None:
    clips, root = corpus
    new = _new_corpus_clips(root, 9, ("neutral", "sad", "angry"))
    paper_rows = dict((c.path, s) for c, s in make_random_split(clips, root))
    grown_rows = make_random_split(sorted(clips + new, key=lambda c: c.path), root)
    grown = dict((c.path, s) for c, s in grown_rows)
    # Adding a corpus moves none of the paper's clips: the paper table keeps its test clips.
    assert {p: grown[p] for p in paper_rows} == paper_rows
    by_split = defaultdict(set)
    for clip, part in grown_rows:
        if clip.dataset == "nemo":
            by_split[part].add(clip.speaker)
    # One of the nine speakers (10 %, rounded up) tests, and no test speaker trains.
    assert len(by_split["test"]) == 1
    assert not by_split["test"] & (by_split["train"] | by_split["val"])
    # Validation: a tenth of each emotion of the other eight speakers' clips.
    val = Counter(c.emotion for c, s in grown_rows if c.dataset == "nemo" and s == "val")
    assert val == dict.fromkeys(("neutral", "sad", "angry"), 8)


def test_selection_folders_keep_the_paper_layout() -> None:
    from training.splits import selection_folder

    assert selection_folder(["tess", "ravdess", "savee"]) == ""
    assert selection_folder(["ravdess"]) == ""
    assert selection_folder(["savee", "nemo", "ravdess"]) == "nemo+ravdess+savee"
