"""Find labelled clips: RAVDESS, TESS and SAVEE as published, a prepared manifest, or any CSV.

:func:`load_corpus` accepts, in this order:

* a CSV file, or a folder holding ``manifest.csv`` (the prepared ``ser-corpus`` copy): one row
  per clip, see :func:`load_manifest`;
* a folder holding one or more corpora in their original published layout, side by side in any
  sub-folders, labelled from the file names:

  - RAVDESS ``Actor_XX/03-01-EE-II-SS-RR-AA.wav`` (speech audio-only: modality 03, channel 01;
    other modalities/channels are skipped); EE 01..08 follow :data:`app.labels.LABELS`
  - TESS ``OAF_angry/OAF_back_angry.wav``: speaker from the folder (so the distributed
    ``OAF_neutral/OA_bite_neutral.wav`` is OAF), emotion from the file name's last part
    (``ps`` -> surprised, ``fear`` -> fearful)
  - SAVEE flat ``DC_a01.wav`` (the ``ALL`` folder) or ``AudioData/DC/a01.wav``; codes
    a, d, f, h, n, sa, su

Paths in :class:`Clip` are POSIX and relative to the corpus root.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from app.labels import LABELS

MANIFEST_NAME = "manifest.csv"
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".opus"})
EXPECTED_LAYOUTS = (
    "a manifest.csv (columns path, emotion[, dataset, speaker]) or a CSV file given directly; "
    "RAVDESS Actor_XX/03-01-EE-II-SS-RR-AA.wav; TESS OAF_angry/OAF_back_angry.wav; "
    "SAVEE DC_a01.wav (flat) or DC/a01.wav"
)

RAVDESS_EMOTIONS = {f"{i + 1:02d}": label for i, label in enumerate(LABELS)}
TESS_EMOTIONS = {
    "angry": "angry",
    "disgust": "disgust",
    "fear": "fearful",
    "happy": "happy",
    "neutral": "neutral",
    "ps": "surprised",
    "sad": "sad",
}
TESS_FOLDER_EMOTIONS = {
    **TESS_EMOTIONS,
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
}
SAVEE_EMOTIONS = {
    "a": "angry",
    "d": "disgust",
    "f": "fearful",
    "h": "happy",
    "n": "neutral",
    "sa": "sad",
    "su": "surprised",
}
# Spellings accepted in a manifest's emotion column besides the eight labels themselves.
EMOTION_ALIASES = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "sadness": "sad",
    "disgusted": "disgust",
    "surprise": "surprised",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
}

_RAVDESS_FOLDER = re.compile(r"^Actor_\d{2}$")
_RAVDESS_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_TESS_FOLDER = re.compile(r"^(OAF|YAF)_(.+)$", re.IGNORECASE)
_TESS_NAME = re.compile(r"^[A-Za-z]+_(.+)_([A-Za-z]+)$")
_SAVEE_FLAT = re.compile(r"^([A-Z]{2})_([a-z]{1,2})(\d{2})$")
_SAVEE_NESTED = re.compile(r"^([a-z]{1,2})(\d{2})$")
_SAVEE_SPEAKER = re.compile(r"^[A-Z]{2}$")


class CorpusError(ValueError):
    """A corpus that cannot be read: an unknown label, a bad manifest row, a missing file."""


class CorpusNotFoundError(CorpusError):
    """No recognisable corpus in the folder given."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording. ``utterance``: RAVDESS statement, TESS word, SAVEE sentence code."""

    path: str  # POSIX, relative to the corpus root
    dataset: str
    speaker: str
    emotion: str
    utterance: str


def _bad_label(path: str, what: str, value: str, known: Iterable[str]) -> CorpusError:
    return CorpusError(f"{path}: unknown {what} {value!r}; expected one of {sorted(known)}")


def parse_ravdess(path: str) -> Clip | None:
    """A RAVDESS speech clip from ``Actor_XX/03-01-EE-II-SS-RR-AA.*``; None for other files."""
    p = PurePosixPath(path)
    match = _RAVDESS_NAME.match(p.stem)
    if match is None or not _RAVDESS_FOLDER.match(p.parent.name):
        return None
    modality, channel, emotion, _, statement, _, actor = match.groups()
    if modality != "03" or channel != "01":
        return None  # video or song recordings, not this corpus' speech audio
    if emotion not in RAVDESS_EMOTIONS:
        raise _bad_label(path, "RAVDESS emotion code", emotion, RAVDESS_EMOTIONS)
    return Clip(path, "ravdess", actor, RAVDESS_EMOTIONS[emotion], statement)


def parse_tess(path: str) -> Clip | None:
    """A TESS clip from ``OAF_<emotion>/<SPK>_<word>_<emotion>.*``; None for other files."""
    p = PurePosixPath(path)
    folder = _TESS_FOLDER.match(p.parent.name)
    if folder is None:
        return None
    match = _TESS_NAME.match(p.stem)
    if match is None:
        raise CorpusError(f"{path}: a TESS file name should read <SPEAKER>_<word>_<emotion>")
    word, code = match.group(1).lower(), match.group(2).lower()
    if code not in TESS_EMOTIONS:
        raise _bad_label(path, "TESS emotion", code, TESS_EMOTIONS)
    emotion = TESS_EMOTIONS[code]
    folder_emotion = TESS_FOLDER_EMOTIONS.get(folder.group(2).lower())
    if folder_emotion is not None and folder_emotion != emotion:
        raise CorpusError(f"{path}: file name says {emotion} but its folder says {folder_emotion}")
    return Clip(path, "tess", folder.group(1).upper(), emotion, word)


def parse_savee(path: str) -> Clip | None:
    """A SAVEE clip from ``DC_a01.*`` (flat) or ``DC/a01.*``; None for other files."""
    p = PurePosixPath(path)
    flat = _SAVEE_FLAT.match(p.stem)
    if flat is not None:
        speaker, code, number = flat.groups()
    else:
        nested = _SAVEE_NESTED.match(p.stem)
        if nested is None or not _SAVEE_SPEAKER.match(p.parent.name):
            return None
        speaker, (code, number) = p.parent.name, nested.groups()
    if code not in SAVEE_EMOTIONS:
        raise _bad_label(path, "SAVEE emotion code", code, SAVEE_EMOTIONS)
    return Clip(path, "savee", speaker, SAVEE_EMOTIONS[code], f"{code}{number}")


PARSERS = {"ravdess": parse_ravdess, "tess": parse_tess, "savee": parse_savee}


def _audio_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
    )


def _recording_key(clip: Clip) -> tuple[str, ...]:
    # What the file name says the recording is: two files saying the same are two copies.
    if clip.dataset == "ravdess":
        return clip.dataset, PurePosixPath(clip.path).stem
    return clip.dataset, clip.speaker, clip.emotion, clip.utterance


def _refuse_second_copies(clips: list[Clip]) -> None:
    seen: dict[tuple[str, ...], str] = {}
    for clip in clips:
        first = seen.setdefault(_recording_key(clip), clip.path)
        if first != clip.path:
            raise CorpusError(
                f"{first} and {clip.path} are the same {clip.dataset} recording: the folder "
                "holds two copies of the corpus (some downloads nest one inside the other); "
                "point --data at one copy"
            )


def scan_published_layouts(root: Path) -> list[Clip]:
    """Every clip found under ``root`` in the RAVDESS, TESS or SAVEE published layout.

    Raises:
        CorpusError: a label this project does not know, or the same recording found twice.
    """
    clips = []
    for path in _audio_files(root):
        for parse in (parse_ravdess, parse_tess, parse_savee):
            clip = parse(path)
            if clip is not None:
                clips.append(clip)
                break
    _refuse_second_copies(clips)
    return clips


def normalise_emotion(value: str, where: str) -> str:
    """One of :data:`LABELS` for ``value`` (case-insensitive, common aliases), or CorpusError."""
    key = value.strip().lower().replace(" ", "_")
    if key in LABELS:
        return key
    if key in EMOTION_ALIASES:
        return EMOTION_ALIASES[key]
    raise _bad_label(where, "emotion", value, LABELS)


def _manifest_clip(row: dict[str, str], csv_path: Path, line: int) -> Clip:
    where = f"{csv_path}:{line}"
    path = (row.get("path") or "").strip()
    if not path:
        raise CorpusError(f"{where}: the path column is empty")
    path = PurePosixPath(path.replace("\\", "/")).as_posix()
    emotion = normalise_emotion(row.get("emotion") or "", f"{where} ({path})")
    dataset = (row.get("dataset") or "").strip() or "custom"
    speaker = (row.get("speaker") or "").strip()
    utterance = (row.get("utterance") or "").strip()
    parse = PARSERS.get(dataset)
    parsed = parse(path) if parse is not None else None
    if parsed is not None:
        speaker = speaker or parsed.speaker
        utterance = utterance or parsed.utterance
    return Clip(path, dataset, speaker, emotion, utterance)


def load_manifest(csv_path: str | Path) -> list[Clip]:
    """Clips listed in a CSV file; paths in it are relative to the CSV's folder.

    Columns: ``path`` and ``emotion`` required; ``dataset`` (default ``custom``), ``speaker``
    (default empty: such clips cannot take part in the speaker protocol) and ``utterance``
    optional. For datasets named ravdess/tess/savee, missing speaker and utterance are read from
    the file name. Every listed file must exist.
    """
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "emotion"} - set(reader.fieldnames or ())
        if missing:
            raise CorpusError(f"{csv_path}: missing column(s) {sorted(missing)}")
        clips = [_manifest_clip(row, csv_path, line) for line, row in enumerate(reader, start=2)]
    absent = [c.path for c in clips if not (csv_path.parent / c.path).is_file()]
    if absent:
        raise CorpusError(
            f"{csv_path}: {len(absent)} listed file(s) do not exist, e.g. {absent[0]} "
            "(paths are relative to the CSV's folder)"
        )
    return sorted(clips, key=lambda c: c.path)


def corpus_root(location: str | Path) -> Path:
    """The folder clip paths are relative to: ``location`` itself, or a CSV file's folder."""
    location = Path(location)
    return location.parent if location.is_file() else location


def load_corpus(location: str | Path) -> list[Clip]:
    """All clips at ``location`` (a folder or a CSV manifest), sorted by path.

    Raises:
        CorpusNotFoundError: nothing recognisable there.
        CorpusError: a recognised file with a label this project does not know.
    """
    location = Path(location)
    if location.is_file():
        return load_manifest(location)
    if not location.is_dir():
        raise CorpusNotFoundError(f"{location} does not exist; expected {EXPECTED_LAYOUTS}")
    if (location / MANIFEST_NAME).is_file():
        return load_manifest(location / MANIFEST_NAME)
    clips = scan_published_layouts(location)
    if not clips:
        raise CorpusNotFoundError(
            f"no RAVDESS, TESS or SAVEE clips and no {MANIFEST_NAME} under {location}; "
            f"expected {EXPECTED_LAYOUTS}"
        )
    return clips


def _ogg_pages_sha256(data: bytes) -> str | None:
    """Hash of an Ogg stream with each page's serial number and CRC zeroed; None if not Ogg.

    Encoders pick the stream serial number per file (at random, or from the file name), so two
    encodings of the same audio differ in those bytes only; everything else is the audio.
    """
    digest, offset = hashlib.sha256(), 0
    while offset < len(data):
        if data[offset : offset + 4] != b"OggS" or offset + 27 > len(data):
            return None
        n_segments = data[offset + 26]
        body = sum(data[offset + 27 : offset + 27 + n_segments])
        end = offset + 27 + n_segments + body
        page = bytearray(data[offset:end])
        page[14:18] = page[22:26] = bytes(4)
        digest.update(page)
        offset = end
    return digest.hexdigest()


def content_sha256(path: str | Path) -> str:
    """sha256 identifying a clip's audio: of the file bytes, or of its Ogg pages (see above).

    Two clips with the same value hold the same recording (e.g. RAVDESS Actor_07
    03-01-03-01-02-01-07 and 03-01-03-01-02-02-07, byte-identical in the published set).
    """
    data = Path(path).read_bytes()
    if data[:4] == b"OggS":
        ogg = _ogg_pages_sha256(data)
        if ogg is not None:
            return ogg
    return hashlib.sha256(data).hexdigest()


def emotion_counts(clips: Iterable[Clip]) -> dict[str, dict[str, int]]:
    """Clips per corpus and emotion (every label listed, zeros included), corpora sorted."""
    counts: dict[str, dict[str, int]] = {}
    for clip in clips:
        per_label = counts.setdefault(clip.dataset, dict.fromkeys(LABELS, 0))
        per_label[clip.emotion] += 1
    return dict(sorted(counts.items()))
