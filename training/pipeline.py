"""One experiment end to end: split, segments, features once, train each loss, score, export.

For each split (one for ``random``, one per fold for ``speaker``) the clips are decoded and cut
once, the training segments get their noisy copies, and log-mel features are computed once with
:func:`app.features.log_mel`; the per-band statistics come from the training features (noisy
copies included) and are stored in the FeatureConfig that travels with every model. All losses
and architectures then train on those same tensors.

Outputs under ``out`` (``models/`` by default):

- ``splits/[<selection>/]<protocol>[-fold<k>].csv``: the split files (reused when present, so
  separate calls, e.g. one loss per GPU command, train and test on exactly the same clips); the
  paper's corpora at the top, any selection with others in a folder of its own
  (:func:`training.splits.selection_folder`);
- ``ser-<loss>.onnx``: the ``random`` protocol's models (``<arch>/ser-<loss>.onnx`` for the
  non-default ``parallel`` layout, so the server does not pick it up); speaker-protocol folds are
  scored, not exported;
- ``metrics.json``: one record per (protocol, fold, loss, architecture), merged with the records
  already there, so the report always covers every model trained into ``out``;
- ``report/``: the markdown report and figures (:mod:`training.report`).

Run folders (checkpoint, history) go under ``runs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.contract import ModelMetadata
from app.features import FeatureConfig
from app.labels import LABEL_INDEX, LABELS
from training.config import RELEASE_FEATURES, TrainConfig
from training.device import resolve_device, resolve_precision
from training.errors import UsageError
from training.evaluate import accuracy_by, classification_metrics, corpus_metrics, summary
from training.export import export_onnx
from training.featureset import band_stats, compute_features, normalise_
from training.labelsets import describe
from training.model import ModelConfig
from training.report import Record, rewrite_report, selection_of
from training.train import FitResult, LabelledFeatures, fit, predict_logits, score

DEFAULT_ARCHITECTURE = "sequential"
N_VERIFY_CLIPS = 64  # real test clips the export check runs on


@dataclass(frozen=True)
class Experiment:
    data: Path
    out: Path = Path("models")
    runs: Path = Path("runs")
    losses: Sequence[str] = ("ce", "bce", "smoothl1", "l1")
    protocol: str = "random"
    architectures: Sequence[str] = (DEFAULT_ARCHITECTURE,)
    train: TrainConfig = field(default_factory=TrainConfig)
    features: FeatureConfig = RELEASE_FEATURES
    cache_dir: Path = Path(".cache/segments")  # decoded segments, keyed by content hash
    feature_cache: Path | None = None  # split features (training/featurecache.py); None: off
    corpora: tuple[str, ...] | None = None  # the corpora to train and test on (None: all)
    folds: int | None = None  # speaker protocol: how many folds to run (None: all)
    only_folds: tuple[int, ...] | None = None  # of those, only these fold numbers
    version: str = field(default_factory=lambda: package_version())
    export: bool = True
    resume: bool = False  # continue each model's run from runs/.../last.pt where there is one


@dataclass
class SplitData:
    name: str  # "random", "speaker-fold0", ...
    fold: int
    split_file: Path
    split_sha256: str
    feature_config: FeatureConfig  # with the training statistics
    train: LabelledFeatures
    val: LabelledFeatures
    test: LabelledFeatures
    corpora: dict[str, np.ndarray] = field(default_factory=dict)  # part -> each clip's corpus

    @property
    def training_groups(self) -> np.ndarray:
        """Each training clip's corpus (n,)."""
        if self.train.groups is None:
            raise ValueError("the training pool carries no corpora")
        return self.train.groups

    @property
    def training_corpora(self) -> dict[str, int]:
        """Training clips per corpus (noisy copies not counted), corpora in name order."""
        names, counts = np.unique(self.training_groups, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}

    @property
    def label_sets(self) -> dict[str, list[str]]:
        """Each training corpus's classes (training/labelsets.py)."""
        return describe(self.training_groups, self.train.labels[: self.train.n_clips], LABELS)


def package_version() -> str:
    """The installed ser-service version (pyproject.toml), or "0.0.0+unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ser-service")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def git_commit() -> str:
    """The checkout's commit, or $SER_GIT_COMMIT (for copies without .git), or "unknown"."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SER_GIT_COMMIT", "unknown")


def workers_for(config: TrainConfig) -> int:
    return config.workers or (os.cpu_count() or 1)


def subset(clips: list[Any], limit: int | None, seed: int) -> list[Any]:
    """``limit`` clips drawn at random (seeded, in path order), or all of them."""
    if limit is None or limit >= len(clips):
        return clips
    keep = np.sort(np.random.default_rng(seed).choice(len(clips), size=limit, replace=False))
    return [clips[i] for i in keep]


def _check_covers(path: Path, clips: list[Any]) -> None:
    from training.splits import read_split

    listed = {clip.path for clip, _ in read_split(path)}
    present = {clip.path for clip in clips}
    if listed != present:
        raise UsageError(
            f"{path} lists {len(listed)} clips, {len(listed - present)} of them not in this "
            f"corpus selection, which has {len(present)} ({len(present - listed)} unlisted). "
            "Reusing it would score on different clips: pass another --out (e.g. for --limit "
            "runs) or delete the file to draw a new split."
        )


def select_corpora(clips: list[Any], corpora: Sequence[str] | None) -> list[Any]:
    """The clips of ``corpora`` (None: every clip), refusing a name no clip has."""
    if corpora is None:
        return clips
    present = sorted({clip.dataset for clip in clips})
    unknown = sorted(set(corpora) - set(present))
    if unknown:
        raise UsageError(f"no corpus {unknown} in the data; it holds {', '.join(present)}")
    return [clip for clip in clips if clip.dataset in corpora]


def experiment_clips(exp: Experiment) -> tuple[list[Any], Path]:
    """The clips ``exp`` uses (its corpora, then its ``limit``) and the corpus root."""
    from training.corpora import corpus_root, load_corpus

    clips = select_corpora(load_corpus(exp.data), exp.corpora)
    return subset(clips, exp.train.limit, exp.train.seed), corpus_root(exp.data)


def split_files(exp: Experiment, clips: list[Any], root: Path) -> list[tuple[str, int, Path]]:
    """(name, fold, path) of each split file; drawn and written only when missing.

    An existing file is reused (after checking it lists exactly these clips), so separate calls
    into the same ``out`` train and test on the same clips. The name is the file's path under
    ``splits/`` without ``.csv`` (``random``, ``<selection>/corpus-fold3``): the run folder.
    """
    from training import splits

    folder = exp.out / "splits" / splits.selection_folder([c.dataset for c in clips])
    count = splits.n_folds(exp.protocol, clips)
    paths = [folder / splits.split_file_name(exp.protocol, k) for k in range(count)]
    if not all(p.exists() for p in paths):
        folds = splits.make_folds(exp.protocol, clips, root, seed=exp.train.seed)
        for p, rows in zip(paths, folds, strict=True):
            splits.write_split(p, rows)
    wanted = list(range(count if exp.folds is None else min(exp.folds, count)))
    if exp.only_folds is not None:
        missing = sorted(set(exp.only_folds) - set(wanted))
        if missing:
            raise UsageError(f"no {exp.protocol} fold {missing}: the folds here are {wanted}")
        wanted = [k for k in wanted if k in exp.only_folds]
    for k in wanted:
        _check_covers(paths[k], clips)
    names = [p.relative_to(exp.out / "splits").with_suffix("").as_posix() for p in paths]
    return [(names[k], k, paths[k]) for k in wanted]


def prepare_split(exp: Experiment, root: Path, name: str, fold: int, path: Path) -> SplitData:
    """Segments, noisy copies and normalised features of one split file (from the feature cache
    when an entry for this split, front-end, augmentation and code is there)."""
    from training import featurecache
    from training.splits import TEST, TRAIN, VAL, read_split, split_sha256

    rows = read_split(path)
    clips = [clip for clip, _ in rows]
    parts = np.array([part for _, part in rows])
    for part in (TRAIN, VAL, TEST):
        if not (parts == part).any():
            raise UsageError(f"{path} has no {part!r} rows; use more clips (--limit)")
    sha = split_sha256(path)
    entry = None
    if exp.feature_cache is not None:
        entry = exp.feature_cache / featurecache.entry_key(sha, exp.features, exp.train)
    arrays = featurecache.load(entry) if entry is not None else None
    if arrays is not None:
        print(f"{name}: features from {entry}")
    else:
        arrays = _split_features(exp, root, name, clips, parts)
        if entry is not None and (why := featurecache.save(entry, arrays)):
            print(f"{name}: features not cached ({why})")
    datasets = np.array([c.dataset for c in clips])
    speakers = np.array([f"{c.dataset}/{c.speaker}" for c in clips])
    source = arrays["train_source"][: len(arrays["train_labels"]) // (1 + exp.train.noisy_copies)]
    labels = np.array([LABEL_INDEX[c.emotion] for c in clips], dtype=np.int64)
    return SplitData(
        name=name,
        fold=fold,
        split_file=path,
        split_sha256=sha,
        feature_config=exp.features.with_stats(arrays["mean"], arrays["std"]),
        train=LabelledFeatures(
            arrays["train_x"],
            arrays["train_labels"],
            versions=1 + exp.train.noisy_copies,
            groups=datasets[source],
            speakers=speakers[source],
        ),
        val=LabelledFeatures(arrays["val_x"], labels[parts == VAL]),
        test=LabelledFeatures(arrays["test_x"], labels[parts == TEST]),
        corpora={part: datasets[parts == part] for part in (VAL, TEST)},
    )


def _split_features(
    exp: Experiment, root: Path, name: str, clips: list[Any], parts: np.ndarray
) -> dict[str, np.ndarray]:
    """The arrays of a feature cache entry (training/featurecache.py), computed."""
    from training.augment import training_set
    from training.segments import load_segments
    from training.splits import TEST, VAL

    workers = workers_for(exp.train)
    segments = load_segments(
        clips, root, exp.features, exp.cache_dir, workers=workers, progress=True
    ).waves
    labels = np.array([LABEL_INDEX[c.emotion] for c in clips], dtype=np.int64)
    rng = np.random.default_rng(exp.train.seed)
    train = training_set(
        segments,
        labels,
        list(parts),
        rng,
        copies=exp.train.noisy_copies,
        snr_db=exp.train.snr_db,
        chain=(exp.train.channel_augment, exp.train.channel_prob),
    )
    raw = exp.features.without_stats()
    train_x = compute_features(train.waves, raw, workers, desc=f"{name} train features")
    mean, std = band_stats(train_x)
    config = exp.features.with_stats(mean, std)
    normalise_(train_x, config)
    # The pool is kept in half precision (half the memory; 1 GB for the tripled corpus): the
    # normalised features are O(1), where float16 keeps ~3 significant digits.
    pool = train_x.astype(np.float16)
    del train_x

    def held_out(part: str) -> np.ndarray:
        # Straight from log_mel with the training statistics, exactly as the server computes.
        return compute_features(
            segments[parts == part], config, workers, desc=f"{name} {part} features"
        )

    return {
        "train_x": pool,
        "train_labels": train.labels,
        "train_source": train.source,
        "val_x": held_out(VAL),
        "test_x": held_out(TEST),
        "mean": mean,
        "std": std,
    }


def part_scores(
    result: FitResult,
    data: LabelledFeatures,
    config: TrainConfig,
    full: bool,
    corpora: np.ndarray | None = None,
    trained: np.ndarray | None = None,
) -> dict[str, Any]:
    device = next(result.model.parameters()).device
    x = torch.from_numpy(data.features).to(device)
    y = torch.from_numpy(data.labels).to(device)
    # fp32, as the exported ONNX model computes: `python -m training evaluate` reproduces these.
    logits = predict_logits(result.model, x, config.eval_batch_size, "fp32")
    scores = score(logits, y, config.loss)
    predicted = logits.argmax(dim=-1).cpu().numpy()
    if not full:
        by_corpus = (
            {}
            if corpora is None
            else {
                "accuracy_by_corpus": accuracy_by(corpora, data.labels, predicted),
                "by_corpus": corpus_metrics(corpora, data.labels, predicted, trained),
            }
        )
        return {**scores, **by_corpus}
    metrics = classification_metrics(data.labels, predicted, corpora=corpora, trained=trained)
    return {**metrics, "loss": scores["loss"]}


def clean_training_clips(pool: LabelledFeatures) -> LabelledFeatures:
    """Version 0 of every clip of a training pool: the clips without added noise."""
    n = pool.n_clips
    return LabelledFeatures(
        pool.features[:n], pool.labels[:n], groups=pool.groups, speakers=pool.speakers
    )


def model_name(loss: str, architecture: str) -> str:
    return f"ser-{loss}" if architecture == DEFAULT_ARCHITECTURE else f"ser-{loss}-{architecture}"


def onnx_path(out: Path, loss: str, architecture: str) -> Path:
    """``out/ser-<loss>.onnx``; other layouts in ``out/<arch>/``, out of the server's sight
    (it serves every top-level ``*.onnx`` and keys them by loss)."""
    folder = out if architecture == DEFAULT_ARCHITECTURE else out / architecture
    return folder / f"ser-{loss}.onnx"


def train_one(
    exp: Experiment, split: SplitData, loss: str, architecture: str
) -> tuple[Record, FitResult]:
    config = exp.train.replace(loss=loss)
    model_config = ModelConfig(
        architecture=architecture,  # type: ignore[arg-type]
        n_mels=split.feature_config.n_mels,
        n_frames=split.train.features.shape[-1],
    )
    run_dir = exp.runs / split.name / model_name(loss, architecture)
    started = time.perf_counter()
    result = fit(
        model_config, config, split.feature_config, split.train, split.val, run_dir, exp.resume
    )
    record: Record = {
        "protocol": exp.protocol,
        "fold": split.fold,
        "loss": loss,
        "architecture": architecture,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "train_seconds": round(time.perf_counter() - started, 1),
        "device": str(resolve_device(config.device)),
        "precision": resolve_precision(config.precision, resolve_device(config.device)),
        "torch_threads": torch.get_num_threads(),
        "split_file": split.split_file.relative_to(exp.out / "splits").as_posix(),
        "split_sha256": split.split_sha256,
        "corpora": split.training_corpora,
        "label_sets": split.label_sets if config.label_sets == "corpus" else "all",
        "n_clips": {
            "train": split.train.n_clips,
            "train_pool": len(split.train.labels),
            "val": len(split.val.labels),
            "test": len(split.test.labels),
        },
        "train": part_scores(result, clean_training_clips(split.train), config, full=False),
        "val": part_scores(
            result, split.val, config, False, split.corpora.get("val"), split.train.labels
        ),
        "test": part_scores(
            result, split.test, config, True, split.corpora.get("test"), split.train.labels
        ),
        "history": result.history,
        "train_config": config.to_dict(),
        "model_config": model_config.to_dict(),
        "feature_config": split.feature_config.without_stats().to_dict(),
    }
    (run_dir / "record.json").write_text(json.dumps(record, indent=1))
    return record, result


def export_record(exp: Experiment, split: SplitData, record: Record, result: FitResult) -> Path:
    name = model_name(record["loss"], record["architecture"])
    metadata = ModelMetadata(
        name=name,
        loss=record["loss"],
        architecture=record["architecture"],
        version=exp.version,
        labels=LABELS,
        feature_config=split.feature_config,
        git_commit=git_commit(),
        split_sha256=split.split_sha256,
        metrics={
            "protocol": exp.protocol,
            "split_file": split.split_file.relative_to(exp.out).as_posix(),
            "training_corpora": split.training_corpora,
            "best_epoch": record["best_epoch"],
            "val": summary(record["val"]),
            "test": summary(record["test"]),
        },
    )
    path = onnx_path(exp.out, record["loss"], record["architecture"])
    export_onnx(result.model, metadata, path, verify_features=split.test.features[:N_VERIFY_CLIPS])
    return path


def merge_metrics(path: Path, new: list[Record]) -> list[Record]:
    """Records already in ``path`` with the new ones replacing any of the same key."""

    def key(r: Record) -> tuple[str, str, int, str, str]:
        return (r["protocol"], selection_of(r), r["fold"], r["loss"], r["architecture"])

    old = json.loads(path.read_text())["runs"] if path.exists() else []
    fresh = {key(r) for r in new}
    records = [r for r in old if key(r) not in fresh] + new
    records.sort(key=key)
    path.write_text(json.dumps({"runs": records}, indent=1))
    return records


def run_experiment(exp: Experiment) -> list[Record]:
    """Train, score and (random protocol) export every requested loss x architecture."""
    clips, root = experiment_clips(exp)
    exp.out.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    for name, fold, path in split_files(exp, clips, root):
        split = prepare_split(exp, root, name, fold, path)
        for architecture in exp.architectures:
            for loss in exp.losses:
                record, result = train_one(exp, split, loss, architecture)
                if exp.export and exp.protocol == "random":
                    onnx = export_record(exp, split, record, result)
                    record["onnx"] = onnx.relative_to(exp.out).as_posix()
                records.append(record)
                merge_metrics(exp.out / "metrics.json", [record])
                rewrite_report(exp.out)
                test = record["test"]
                print(
                    f"{name} {architecture} {loss}: test accuracy {test['accuracy']:.4f}, "
                    f"macro-F1 {test['macro_f1']:.4f} (best epoch {record['best_epoch']})"
                )
                del result
        # Before the next fold's features: the pool of seven corpora is 3 GB in float16, and
        # while the next one was computed (6 GB in float32) this one was still held; the third
        # fold of a run on the grown corpus was killed for memory at 24 GB.
        del split
    return records
