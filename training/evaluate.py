"""Classification metrics, and scoring an exported ONNX model on a split file's test rows.

Metrics (:func:`classification_metrics`): accuracy, macro precision / recall / F1, UAR
(unweighted average recall, identical to macro recall; named for the SER literature), the
per-class report from scikit-learn and the confusion matrix (rows: true label, columns:
predicted, in :data:`app.labels.LABELS` order). Classes absent from both truth and prediction
count as 0 in the macro averages (``zero_division=0``), so a tiny split is scored pessimistically.

Per corpus (:func:`corpus_metrics`), the macro averages are taken over the classes that corpus's
clips have (SAVEE and TESS have no ``calm``), and over the classes the model was trained on: a
model trained without RAVDESS has never seen ``calm``, so RAVDESS's calm clips count towards
accuracy (as errors) but not towards that corpus's UAR. The decision stays the 8-way argmax.

Affect (:func:`affect_uars`): the decision mapped to binary arousal (high / low) and to valence
(negative / neutral / positive) by :mod:`app.affect`, and the UAR of each, from the confusion
matrix; clips labelled disgust are left out of arousal. Computed from the confusion matrix, they
can be read off any stored record.

Records (:func:`record_evaluation`): ``evaluate --record models/evaluations.json`` keeps a
released model's scores on a split (the paper's test clips) beside the model file's sha256, so
the docs quote them from one file and a retrained model with stale figures is noticed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
)

from app.affect import AROUSAL_CLASS, AROUSAL_EXCLUDED, VALENCE_CLASS
from app.contract import ModelMetadata
from app.labels import LABEL_INDEX, LABELS


def _collapsed_uar(
    confusion: np.ndarray, classes: dict[str, str], excluded: frozenset[str]
) -> float | None:
    """UAR of the decision mapped by ``classes``, over the collapsed classes that have clips;
    rows (true labels) in ``excluded`` left out. None when no class has clips."""
    names = sorted(set(classes.values()))
    collapsed = np.zeros((len(names), len(names)), dtype=np.int64)
    for i, true in enumerate(LABELS):
        if true in excluded:
            continue
        for j, predicted in enumerate(LABELS):
            collapsed[names.index(classes[true]), names.index(classes[predicted])] += confusion[i][
                j
            ]
    totals = collapsed.sum(axis=1)
    present = totals > 0
    if not present.any():
        return None
    return float(np.mean(np.diag(collapsed)[present] / totals[present]))


def affect_uars(confusion: np.ndarray | list[list[int]]) -> dict[str, float | None]:
    """``arousal_uar`` (binary) and ``valence_uar`` (3 classes) of the 8-way decision, from its
    confusion matrix (rows true, columns predicted, :data:`LABELS` order)."""
    matrix = np.asarray(confusion, dtype=np.int64)
    return {
        "arousal_uar": _collapsed_uar(matrix, AROUSAL_CLASS, AROUSAL_EXCLUDED),
        "valence_uar": _collapsed_uar(matrix, VALENCE_CLASS, frozenset()),
    }


def classification_metrics(
    truth: np.ndarray,
    predicted: np.ndarray,
    labels: tuple[str, ...] = LABELS,
    corpora: np.ndarray | None = None,
    trained: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of integer predictions (n,) against integer truth (n,); JSON-serialisable.

    With ``corpora`` (n,) (each clip's corpus name), also the accuracy on each corpus's part and
    :func:`corpus_metrics`; ``trained``: the label indices the model was trained on (default:
    all).
    """
    index = list(range(len(labels)))
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=index, average="macro", zero_division=0
    )
    report = classification_report(
        truth,
        predicted,
        labels=index,
        target_names=list(labels),
        output_dict=True,
        zero_division=0,
    )
    confusion = confusion_matrix(truth, predicted, labels=index)
    return {
        "n": len(truth),
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_f1": float(f1),
        "uar": float(recall),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in labels},
        "confusion": confusion.tolist(),
        **affect_uars(confusion),
        **(
            {}
            if corpora is None
            else {
                "accuracy_by_corpus": accuracy_by(corpora, truth, predicted),
                "by_corpus": corpus_metrics(corpora, truth, predicted, trained),
            }
        ),
    }


def corpus_metrics(
    corpora: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    trained: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Accuracy, macro-F1 and UAR of each corpus's part: {corpus: {n, accuracy, ...}}.

    The macro averages run over the classes present in that part's truth and in ``trained``
    (the labels the model was trained on; default: all), named in ``classes``.
    """
    corpora = np.asarray(corpora)
    seen = set(range(len(LABELS))) if trained is None else {int(i) for i in np.unique(trained)}
    out: dict[str, dict[str, Any]] = {}
    for corpus in sorted(set(corpora.tolist())):
        mask = corpora == corpus
        t, p = truth[mask], predicted[mask]
        classes = sorted(set(np.unique(t).tolist()) & seen)
        _, recall, f1, _ = precision_recall_fscore_support(
            t, p, labels=classes, average="macro", zero_division=0
        )
        out[str(corpus)] = {
            "n": int(mask.sum()),
            "accuracy": float((t == p).mean()),
            "macro_f1": float(f1),
            "uar": float(recall),
            **affect_uars(confusion_matrix(t, p, labels=list(range(len(LABELS))))),
            "classes": [LABELS[i] for i in classes],
        }
    return out


def accuracy_by(groups: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy within each group (e.g. corpus) of the clips: {group: accuracy}."""
    groups = np.asarray(groups)
    return {
        str(g): float((predicted[groups == g] == truth[groups == g]).mean())
        for g in sorted(set(groups.tolist()))
    }


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar headline numbers of :func:`classification_metrics` (for ONNX metadata)."""
    keys = (
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "uar",
        "arousal_uar",
        "valence_uar",
        "loss",
    )
    return {k: round(float(metrics[k]), 6) for k in keys if metrics.get(k) is not None}


def loss_value(logits: np.ndarray, truth: np.ndarray, loss: str) -> float:
    """The training loss of ``logits`` (n, n_labels) against ``truth`` (n,), as trained."""
    import torch

    from training.losses import make_loss

    return float(make_loss(loss)(torch.from_numpy(logits).float(), torch.from_numpy(truth)))


@dataclass
class Evaluation:
    metadata: ModelMetadata
    metrics: dict[str, Any]
    truth: np.ndarray  # (n,) label indices
    logits: np.ndarray  # (n, n_labels)
    probabilities: np.ndarray  # (n, n_labels), as the server serves them


def onnx_session(path: str | os.PathLike[str], threads: int = 0) -> Any:
    """The serving session factory on the CPU (``threads`` 0: ONNX Runtime's default)."""
    from app.engine import open_session

    session, _ = open_session(Path(path), ("cpu",), intra_op_threads=threads, inter_op_threads=1)
    return session


def evaluate_onnx_features(
    model_path: str | os.PathLike[str],
    features: np.ndarray,
    truth: np.ndarray,
    batch_size: int = 256,
    corpora: np.ndarray | None = None,
) -> Evaluation:
    """Score an ONNX model on ready (normalised) features (n, n_mels, frames) with labels (n,)."""
    from app.contract import INPUT_NAME, OUTPUT_NAME
    from training.export import read_metadata

    metadata = read_metadata(model_path)
    session = onnx_session(model_path)
    logits = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: features[s : s + batch_size]})[0]
            for s in range(0, len(features), batch_size)
        ]
    )
    probs = metadata.probabilities(logits)
    metrics = classification_metrics(truth, probs.argmax(axis=-1), corpora=corpora)
    metrics["loss"] = loss_value(logits, truth, metadata.loss)
    return Evaluation(metadata, metrics, truth, logits, probs)


def evaluate_onnx(
    model_path: str | os.PathLike[str],
    split_path: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    split: str = "test",
    cache_dir: str | os.PathLike[str] = ".cache/segments",
    workers: int = 0,
) -> Evaluation:
    """Score the ONNX model at ``model_path`` on the ``split`` rows of a split file.

    The clips are decoded, trimmed and cut as in training (the data package's
    ``load_segments``), and featurised with the FeatureConfig stored in the model's metadata
    (including its normalisation statistics) through :func:`app.features.log_mel`, so the
    features are the ones the server computes.
    """
    from training.export import read_metadata
    from training.featureset import compute_features
    from training.segments import load_segments
    from training.splits import read_split

    metadata = read_metadata(model_path)
    config = metadata.feature_config
    clips = [clip for clip, name in read_split(Path(split_path)) if name == split]
    if not clips:
        raise ValueError(f"{split_path} has no {split!r} rows")
    segments = load_segments(
        clips,
        Path(data_root),
        config,
        cache_dir=Path(cache_dir),
        workers=workers or (os.cpu_count() or 1),
        progress=True,
    ).waves
    features = compute_features(segments, config, workers=workers or (os.cpu_count() or 1))
    truth = np.array([LABEL_INDEX[clip.emotion] for clip in clips], dtype=np.int64)
    corpora = np.array([clip.dataset for clip in clips])
    return evaluate_onnx_features(model_path, features, truth, corpora=corpora)


def record_evaluation(
    path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    split_path: str | os.PathLike[str],
    part: str,
    metrics: dict[str, Any],
) -> str:
    """Merge one evaluation into ``path`` (``{"evaluations": {key: record}}``), replacing the
    same model, split and part; return its key."""
    from training.splits import split_sha256

    book, model, split = Path(path), Path(model_path), Path(split_path)
    records = json.loads(book.read_text())["evaluations"] if book.exists() else {}
    split_name = f"{split.parent.name}/{split.name}"  # splits/random.csv
    key = f"{model.name} on {split_name} {part}"
    records[key] = {
        "model": model.name,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "split": split_name,
        "split_sha256": split_sha256(split),
        "part": part,
        "metrics": metrics,
    }
    book.write_text(json.dumps({"evaluations": dict(sorted(records.items()))}, indent=1))
    return key
