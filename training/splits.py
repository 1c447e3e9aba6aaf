"""Train / validation / test splits, written to CSV so anyone can re-score the same test clips.

Three protocols:

``random`` (the paper's): stratified 80/10/10 within every corpus x emotion cell, seeded. The
paper's three corpora (:data:`PAPER_CORPORA`) are always split so: every cell draws from a
generator of its own, so adding corpora never moves one of their clips, and the seven-corpus
split holds exactly the test clips of the three-corpus ``random.csv``. Any other named corpus
whose manifest names speakers is tested on held-out speakers instead (:data:`HELD_OUT_SPEAKERS` of
them, at least one, drawn with the seed), and 10 % of each emotion of the remaining speakers'
clips validates: the release is scored on voices it never heard in those corpora.

``speaker``: ``N_FOLDS`` = 4 cross-validation folds; within each corpus the clips are held out by
a *hold-out unit*, and no unit appears in two splits of a fold:

* RAVDESS by actor. Actors in number order are split into 4 consecutive blocks of 6
  (01-06, 07-12, ...), so each fold's test set holds 3 male (odd) and 3 female (even) actors.
* SAVEE by speaker: one of the 4 speakers (DC, JE, JK, KL) per fold.
* TESS by spoken word. TESS has only 2 speakers (OAF, YAF), both needed for training, so a fold
  tests on a quarter of the 200 words (shuffled with the seed), spoken by both speakers. The
  TESS part of the score is therefore word-independent, not speaker-independent.
* any other corpus (a CSV manifest) by its ``speaker`` column, which must then be filled in.

Fold ``k`` tests on block ``k``; its validation set is the first third (rounded up) of block
``k + 1`` (RAVDESS: one male and one female actor, SAVEE: one speaker, TESS: 17 words); the rest
trains. Per fold that is about 25 % test, 10 % validation, 65 % training.

``corpus`` (leave one corpus out): one fold per corpus, in name order (ravdess, savee, tess).
Fold ``k`` tests on every clip of corpus ``k``; the other corpora train, less a stratified 10 %
of each of their corpus x emotion cells for validation (drawn as in ``random``). Validation is
therefore in-domain: nothing of the held-out corpus is seen before the test.

In every protocol, clips with identical audio (:func:`training.corpora.content_sha256`, e.g.
RAVDESS Actor_07 03-01-03-01-02-01-07 / -02-07) are kept in one split. The random protocol
draws them as one unit; the speaker protocol, if a duplicate ever crosses units, moves the whole
group to its most held-out split (test, then validation), so no test audio is trained on.

Split files: ``random.csv``, ``speaker-fold0.csv`` ..., ``corpus-fold0.csv`` ... with columns
``path, dataset, speaker, emotion, split, utterance`` (paths relative to the corpus root;
``split`` is ``train``, ``val`` or ``test``), one row per clip, sorted by path.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from app.labels import LABELS
from training.corpora import Clip, content_sha256

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
PROTOCOLS = ("random", "speaker", "corpus")
N_FOLDS = 4  # speaker protocol
DEFAULT_SEED = 42  # the training default (training.config.TrainConfig.seed)
RANDOM_FRACTIONS = {TEST: 0.1, VAL: 0.1}  # the rest trains
COLUMNS = ("path", "dataset", "speaker", "emotion", "split", "utterance")
WORD_HELD_OUT = frozenset({"tess"})  # corpora held out by utterance instead of speaker
# The paper's corpora: the ``random`` protocol splits them by cell, as the paper does.
PAPER_CORPORA = ("ravdess", "savee", "tess")
CUSTOM_CORPUS = "custom"  # the dataset of a manifest's rows that name none
HELD_OUT_SPEAKERS = 0.1  # random protocol, other corpora: this share of speakers tests

Row = tuple[Clip, str]


class SplitError(ValueError):
    """A split that cannot be made or read."""


def _rng(seed: int, *parts: str) -> np.random.Generator:
    # A generator per named cell: adding a corpus never reshuffles the others.
    digest = hashlib.sha256("/".join([str(seed), *parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def content_groups(clips: Sequence[Clip], root: str | Path) -> list[list[int]]:
    """Indices of ``clips`` grouped by identical audio, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, clip in enumerate(clips):
        groups.setdefault(content_sha256(Path(root) / clip.path), []).append(i)
    return list(groups.values())


def _sorted_rows(clips: Sequence[Clip], splits: Sequence[str]) -> list[Row]:
    return sorted(zip(clips, splits, strict=True), key=lambda row: row[0].path)


def _stratified(
    clips: Sequence[Clip],
    groups: list[list[int]],
    splits: list[str],
    seed: int,
    fractions: Mapping[str, float],
) -> None:
    """Assign the clips of ``groups`` (content groups, all still TRAIN) per corpus x emotion cell:
    ``fractions`` of each cell to test, then validation."""
    strata: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
    for group in groups:
        first = clips[group[0]]
        strata[(first.dataset, first.emotion)].append(group)
    for (dataset, emotion), cell in sorted(strata.items()):
        size = sum(len(g) for g in cell)
        wanted = {part: round(size * fractions.get(part, 0.0)) for part in (TEST, VAL)}
        taken = dict.fromkeys(wanted, 0)
        for index in _rng(seed, dataset, emotion).permutation(len(cell)):
            part = next((p for p in (TEST, VAL) if taken[p] < wanted[p]), TRAIN)
            for i in cell[index]:
                splits[i] = part
            if part != TRAIN:
                taken[part] += len(cell[index])


def held_out_speakers(clips: Sequence[Clip], dataset: str, seed: int) -> set[str]:
    """The speakers of ``dataset`` that the ``random`` protocol tests on (outside the paper's
    corpora): :data:`HELD_OUT_SPEAKERS` of them, rounded up, drawn with the seed."""
    speakers = sorted({c.speaker for c in clips if c.dataset == dataset})
    count = math.ceil(len(speakers) * HELD_OUT_SPEAKERS)
    order = _rng(seed, dataset, "speakers").permutation(len(speakers))
    return {speakers[i] for i in order[:count]}


def make_random_split(
    clips: Sequence[Clip],
    root: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    fractions: Mapping[str, float] = RANDOM_FRACTIONS,
) -> list[Row]:
    """The ``random`` protocol; rows sorted by path.

    The paper's corpora (and any without speakers, and a manifest's ``custom`` rows): stratified
    by corpus x emotion,
    ``fractions`` of each cell held out per split (test first, then validation). Other corpora,
    when ``fractions`` has a test share: their held-out speakers test, and the validation share
    of each emotion of the other speakers validates.
    """
    groups = content_groups(clips, root)
    by_speaker = {
        c.dataset
        for c in clips
        if c.dataset not in (*PAPER_CORPORA, CUSTOM_CORPUS)
        and c.speaker
        and fractions.get(TEST, 0.0) > 0
    }
    splits = [TRAIN] * len(clips)
    test_speakers = {d: held_out_speakers(clips, d, seed) for d in sorted(by_speaker)}
    for i, clip in enumerate(clips):
        if clip.dataset in test_speakers and clip.speaker in test_speakers[clip.dataset]:
            splits[i] = TEST
    _keep_duplicates_together(splits, groups)
    rest = [g for g in groups if splits[g[0]] == TRAIN]
    val_only = {VAL: fractions.get(VAL, 0.0)}
    paper = [g for g in rest if clips[g[0]].dataset not in by_speaker]
    _stratified(clips, paper, splits, seed, fractions)
    _stratified(
        clips, [g for g in rest if clips[g[0]].dataset in by_speaker], splits, seed, val_only
    )
    return _sorted_rows(clips, splits)


def holdout_unit(clip: Clip) -> str:
    """What the speaker protocol keeps within one split: the speaker, or the TESS word."""
    if clip.dataset in WORD_HELD_OUT:
        return clip.utterance
    if not clip.speaker:
        raise SplitError(
            f"{clip.path} has no speaker: the speaker protocol needs a speaker column in the "
            "manifest (or use the random protocol)"
        )
    return clip.speaker


def _unit_blocks(dataset: str, units: set[str], n_folds: int, seed: int) -> list[list[str]]:
    ordered = sorted(units)
    if dataset in WORD_HELD_OUT:
        ordered = [ordered[i] for i in _rng(seed, dataset, "units").permutation(len(ordered))]
    return [list(block) for block in np.array_split(np.array(ordered, dtype=object), n_folds)]


def _fold_assignment(blocks: list[list[str]], fold: int) -> dict[str, str]:
    test = blocks[fold]
    following = blocks[(fold + 1) % len(blocks)]
    val = [] if following is test else following[: math.ceil(len(following) / 3)]
    parts = {unit: TRAIN for block in blocks for unit in block}
    parts.update(dict.fromkeys(val, VAL))
    parts.update(dict.fromkeys(test, TEST))
    return parts


def _keep_duplicates_together(splits: list[str], groups: list[list[int]]) -> None:
    priority = {TEST: 0, VAL: 1, TRAIN: 2}
    for group in groups:
        held_out = min((splits[i] for i in group), key=priority.__getitem__)
        for i in group:
            splits[i] = held_out


def make_speaker_folds(
    clips: Sequence[Clip],
    root: str | Path,
    *,
    n_folds: int = N_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[list[Row]]:
    """The ``speaker`` protocol: ``n_folds`` lists of rows (sorted by path), one per fold."""
    units_by_dataset: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        units_by_dataset[clip.dataset].add(holdout_unit(clip))
    blocks = {
        dataset: _unit_blocks(dataset, units, n_folds, seed)
        for dataset, units in units_by_dataset.items()
    }
    groups = content_groups(clips, root)
    folds = []
    for fold in range(n_folds):
        assignment = {dataset: _fold_assignment(b, fold) for dataset, b in blocks.items()}
        splits = [assignment[c.dataset][holdout_unit(c)] for c in clips]
        _keep_duplicates_together(splits, groups)
        folds.append(_sorted_rows(clips, splits))
    return folds


def corpus_names(clips: Sequence[Clip]) -> list[str]:
    """The corpora of ``clips`` in fold order (by name): fold ``k`` of ``corpus`` holds out
    the ``k``-th."""
    return sorted({clip.dataset for clip in clips})


def make_corpus_folds(
    clips: Sequence[Clip], root: str | Path, *, seed: int = DEFAULT_SEED
) -> list[list[Row]]:
    """The ``corpus`` protocol: one list of rows (sorted by path) per held-out corpus."""
    corpora = corpus_names(clips)
    if len(corpora) < 2:
        raise SplitError(f"leaving one corpus out needs two or more corpora, got {corpora}")
    folds = []
    for held_out in corpora:
        rest = [clip for clip in clips if clip.dataset != held_out]
        rows = make_random_split(rest, root, seed=seed, fractions={VAL: RANDOM_FRACTIONS[VAL]})
        rows += [(clip, TEST) for clip in clips if clip.dataset == held_out]
        folds.append(_sorted_rows(*zip(*rows, strict=True)))
    return folds


def make_folds(
    protocol: str, clips: Sequence[Clip], root: str | Path, *, seed: int = DEFAULT_SEED
) -> list[list[Row]]:
    """The split(s) of ``protocol``: one for ``random``, one per fold for the others."""
    if protocol == "random":
        return [make_random_split(clips, root, seed=seed)]
    if protocol == "speaker":
        return make_speaker_folds(clips, root, seed=seed)
    if protocol == "corpus":
        return make_corpus_folds(clips, root, seed=seed)
    raise SplitError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def n_folds(protocol: str, clips: Sequence[Clip]) -> int:
    """How many split files ``protocol`` has for ``clips``."""
    return {"random": 1, "speaker": N_FOLDS}.get(protocol) or len(corpus_names(clips))


def write_split(path: str | Path, rows: Sequence[Row]) -> Path:
    """Write ``rows`` as a split CSV (sorted by path, ``\\n`` line ends); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for clip, part in sorted(rows, key=lambda row: row[0].path):
            if part not in SPLITS:
                raise SplitError(f"{clip.path}: split must be one of {SPLITS}, got {part!r}")
            writer.writerow(
                (clip.path, clip.dataset, clip.speaker, clip.emotion, part, clip.utterance)
            )
    return path


def _read_row(row: dict[str, str], where: str) -> Row:
    if row.get("split") not in SPLITS:
        raise SplitError(f"{where}: split must be one of {SPLITS}, got {row.get('split')!r}")
    if row.get("emotion") not in LABELS:
        raise SplitError(f"{where}: emotion must be one of {LABELS}, got {row.get('emotion')!r}")
    clip = Clip(
        path=row["path"],
        dataset=row.get("dataset") or "custom",
        speaker=row.get("speaker") or "",
        emotion=row["emotion"],
        utterance=row.get("utterance") or "",
    )
    return clip, row["split"]


def read_split(path: str | Path) -> list[Row]:
    """The ``(clip, split)`` rows of a split CSV written by :func:`write_split`."""
    path = Path(path)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "emotion", "split"} - set(reader.fieldnames or ())
        if missing:
            raise SplitError(f"{path}: not a split file, missing column(s) {sorted(missing)}")
        return [_read_row(row, f"{path}:{line}") for line, row in enumerate(reader, start=2)]


def split_sha256(path: str | Path) -> str:
    """sha256 of a split file's bytes: names exactly which clips a model was scored on."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_file_name(protocol: str, fold: int = 0) -> str:
    """``random.csv``, ``speaker-fold<k>.csv`` or ``corpus-fold<k>.csv``."""
    return "random.csv" if protocol == "random" else f"{protocol}-fold{fold}.csv"


def selection_name(corpora: Sequence[str]) -> str:
    """The name of a corpus selection: its corpora in name order, joined by ``+``."""
    return "+".join(sorted(set(corpora)))


def selection_folder(corpora: Sequence[str]) -> str:
    """Where a selection's split files live, under ``<out>/splits/``: the paper's corpora (or
    some of them, or a manifest without a dataset column: ``custom``) at the top, as before
    there were others; any other selection in a folder of its own name
    (``ased+emotiontts+nemo+ravdess+savee+tess+turev/``), so the folds of different selections
    never overwrite each other."""
    top = {*PAPER_CORPORA, CUSTOM_CORPUS}
    return "" if set(corpora) <= top else selection_name(corpora)


def write_all_splits(
    clips: Sequence[Clip], root: str | Path, out_dir: str | Path, *, seed: int = DEFAULT_SEED
) -> dict[str, list[Row]]:
    """Write every protocol's split files (:func:`split_file_name`) into ``out_dir``.

    Returns:
        the rows of each file, by file stem (``random``, ``speaker-fold0``, ...).
    """
    written = {
        Path(split_file_name(protocol, fold)).stem: rows
        for protocol in PROTOCOLS
        if protocol != "corpus" or len(corpus_names(clips)) > 1
        for fold, rows in enumerate(make_folds(protocol, clips, root, seed=seed))
    }
    for stem, rows in written.items():
        write_split(Path(out_dir) / f"{stem}.csv", rows)
    return written


def split_sizes(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Clips per corpus and split, plus an ``all`` entry: ``{dataset: {train, val, test}}``."""
    sizes: dict[str, dict[str, int]] = {"all": dict.fromkeys(SPLITS, 0)}
    for clip, part in rows:
        sizes.setdefault(clip.dataset, dict.fromkeys(SPLITS, 0))[part] += 1
        sizes["all"][part] += 1
    return sizes
