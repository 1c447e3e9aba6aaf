"""The markdown report and figures, from hand-made run records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from app.labels import LABELS
from training.evaluate import classification_metrics
from training.report import write_report


def _record(
    loss: str, protocol: str, fold: int, accuracy: float, arch: str = "sequential"
) -> dict[str, Any]:
    rng = np.random.default_rng(fold)
    truth = np.arange(80) % 8
    predicted = np.where(rng.random(80) < accuracy, truth, (truth + 1) % 8)
    history = [
        {
            "epoch": float(e),
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 0.1 * e,
            "val_accuracy": 0.08 * e,
        }
        for e in range(1, 6)
    ]
    return {
        "protocol": protocol,
        "fold": fold,
        "loss": loss,
        "architecture": arch,
        "best_epoch": 5,
        "split_file": f"{protocol}-fold{fold}.csv",
        "split_sha256": "ab" * 32,
        "train": {"loss": 0.01, "accuracy": 0.99},
        "val": {"loss": 0.5, "accuracy": 0.7, "macro_f1": 0.69},
        "test": {**classification_metrics(truth, predicted), "loss": 0.6},
        "history": history,
    }


def test_report_puts_the_papers_tables_beside_ours(tmp_path: Path) -> None:
    records = [_record(loss, "random", 0, 0.75) for loss in ("ce", "bce", "smoothl1", "l1")]
    records.append(_record("ce", "random", 0, 0.5, arch="parallel"))
    records += [_record("ce", "speaker", k, acc) for k, acc in enumerate((0.5, 0.7, 0.6))]
    path = write_report(records, tmp_path)
    text = path.read_text()
    for paper_value in ("28.12", "43.31", "44.14", "1.283", "0.6357", "0.3954", "0.6238"):
        assert paper_value in text
    ce = records[0]["test"]
    assert f"{ce['macro_f1']:.4f}" in text
    speaker_acc = np.array([r["test"]["accuracy"] for r in records[-3:]]) * 100
    assert f"{speaker_acc.mean():.2f} ± {speaker_acc.std(ddof=1):.2f}" in text
    assert "Sequential vs parallel" in text and "| parallel |" in text
    assert "| Val accuracy % | Val macro-F1 |" in text  # the layouts are chosen on validation
    for name in (
        "random-sequential-fig2-confusion.png",
        "random-sequential-ce-curves.png",
        "speaker-sequential-ce-confusion.png",
        "random-parallel-ce-confusion.png",
    ):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_metrics_are_macro_averages_and_uar_is_macro_recall() -> None:
    truth = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    m = classification_metrics(truth, predicted)
    assert m["accuracy"] == 6 / 8
    # Recall per class: 3/4, 1, 1/2 and 0 for the five absent classes (zero_division=0).
    assert m["uar"] == m["macro_recall"] == (0.75 + 1 + 0.5) / len(LABELS)
    assert np.asarray(m["confusion"]).sum() == 8 and m["confusion"][0][1] == 1
    assert set(m["per_class"]) == set(LABELS)


def test_report_has_per_corpus_accuracy_and_training_cost(tmp_path: Path) -> None:
    record = _record("ce", "random", 0, 0.75)
    corpora = np.array(["ravdess"] * 40 + ["tess"] * 40)
    truth = np.arange(80) % 8
    predicted = np.where(np.arange(80) < 20, (truth + 1) % 8, truth)  # 20 RAVDESS clips wrong
    record["test"] = {**classification_metrics(truth, predicted, corpora=corpora), "loss": 0.6}
    record |= {"epochs_run": 24, "train_seconds": 906.0, "device": "cpu", "precision": "bf16"}
    text = write_report([record], tmp_path).read_text()
    assert "| Loss | ravdess % | tess % |" in text
    assert "| Cross-entropy | 50.00 | 100.00 |" in text
    assert "| random | sequential | Cross-entropy | 24 (5) | 15.1 | cpu, bf16 |" in text


def test_corpus_uar_runs_over_the_classes_the_corpus_has_and_the_model_learnt() -> None:
    calm = LABELS.index("calm")
    # RAVDESS part: every class incl. calm, each right but calm (never trained on: predicted 0).
    truth = np.arange(16) % 8
    predicted = np.where(truth == calm, 0, truth)
    corpora = np.array(["ravdess"] * 16)
    trained = np.array([i for i in range(8) if i != calm])
    m = classification_metrics(truth, predicted, corpora=corpora, trained=trained)
    part = m["by_corpus"]["ravdess"]
    assert part["accuracy"] == 14 / 16  # calm clips still count as errors
    assert part["uar"] == 1.0 and "calm" not in part["classes"]
    # Trained on calm too, the same predictions lose calm's recall in the UAR.
    full = classification_metrics(truth, predicted, corpora=corpora)["by_corpus"]["ravdess"]
    assert full["uar"] == 7 / 8
    # A corpus without some classes is averaged over its own classes only.
    two = classification_metrics(
        np.array([2, 2, 3, 3]), np.array([2, 3, 3, 3]), corpora=np.array(["savee"] * 4)
    )["by_corpus"]["savee"]
    assert two["uar"] == (0.5 + 1.0) / 2 and two["classes"] == [LABELS[2], LABELS[3]]


def test_report_tables_the_held_out_corpora_and_unseen_speakers(tmp_path: Path) -> None:
    records = []
    for fold, corpus in enumerate(("ravdess", "savee")):
        record = _record("ce", "corpus", fold, 0.5)
        truth = np.arange(16) % 8
        predicted = np.where(truth < 4, truth, 0)  # half right
        corpora = np.array([corpus] * 16)
        record["test"] = {**classification_metrics(truth, predicted, corpora=corpora), "loss": 1}
        record["val"]["by_corpus"] = {"tess": {}, "savee" if fold == 0 else "ravdess": {}}
        records.append(record)
    for fold, acc in enumerate((0.5, 0.7)):
        record = _record("ce", "speaker", fold, acc)
        truth = np.arange(8)
        corpora = np.array(["ravdess"] * 4 + ["tess"] * 4)
        predicted = np.where(np.arange(8) < 2 + 2 * fold, 0, truth)
        record["test"] = {**classification_metrics(truth, predicted, corpora=corpora), "loss": 1}
        records.append(record)
    text = write_report(records, tmp_path).read_text()
    assert "| ravdess | savee + tess | 16 | 0.5000 | 50.00 |" in text
    assert "| savee | ravdess + tess | 16 | 0.5000 | 50.00 |" in text
    assert "unseen speakers per corpus" in text
    # RAVDESS part: 3/4 right in fold 0, 1/4 in fold 1 (clip 0 is the one "0" that is right).
    assert "| ravdess | 50.00 ± 35.36 |" in text


def test_each_corpus_selection_has_sections_of_its_own(tmp_path: Path) -> None:
    """A random-split CE on the paper's corpora and one on seven: two sections and two sets of
    figures, never one mean over "2 folds"."""
    paper = _record("ce", "random", 0, 0.8)
    grown = {**_record("ce", "random", 1, 0.6), "corpora": {"nemo": 3547, "ravdess": 1154}}
    text = write_report([paper, grown], tmp_path).read_text()
    assert "## Protocol `random`, architecture `sequential`\n" in text
    assert "## Protocol `random`, architecture `sequential`, 2 corpora (nemo, ravdess)" in text
    assert "over 2 folds" not in text
    for acc in (paper["test"]["accuracy"], grown["test"]["accuracy"]):
        assert f"{100 * acc:.2f}" in text
    assert (tmp_path / "random-sequential-ce-confusion.png").exists()
    assert (tmp_path / "2corpora-random-sequential-ce-confusion.png").exists()
