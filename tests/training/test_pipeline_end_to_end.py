"""End to end on a tiny synthetic corpus: train, export, then `evaluate` reproduces the metrics."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.features import FeatureConfig
from app.labels import LABELS
from tests.conftest import synth_speechlike
from training.calibrate import calibrate_model
from training.cli import main
from training.config import TrainConfig
from training.evaluate import evaluate_onnx
from training.export import read_metadata
from training.pipeline import Experiment, onnx_path, run_experiment
from training.splits import read_split, split_sha256
from training.train import load_checkpoint

CLIPS_PER_LABEL = 10  # the stratified split then gives one val and one test clip per label
WINDOW_S = 0.5  # a short model window keeps the CPU run to seconds


def _write_corpus(root: Path, datasets: tuple[str, ...] = ()) -> Path:
    """Half-second WAV clips (16 and 48 kHz), CLIPS_PER_LABEL per label and dataset, listed in a
    manifest.csv; without ``datasets``, one custom corpus with no dataset column."""
    rows = []
    for d, dataset in enumerate(datasets or ("",)):
        for i in range(CLIPS_PER_LABEL * len(LABELS)):
            label = LABELS[i % len(LABELS)]
            rate = 48_000 if i % 2 else 16_000
            seed = i + 1000 * d
            wave = synth_speechlike(0.6, rate, seed=seed) * (1 + i % len(LABELS)) / 4
            path = f"{label}/clip{seed:04d}.wav"
            (root / label).mkdir(parents=True, exist_ok=True)
            sf.write(root / path, wave, rate, subtype="PCM_16")
            row = {"path": path, "emotion": label, "speaker": f"{dataset}s{i % 4}"}
            rows.append(row | ({"dataset": dataset} if dataset else {}))
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 clips of one custom corpus."""
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


def _experiment(corpus: Path, tmp: Path, loss: str) -> Experiment:
    return Experiment(
        data=corpus,
        out=tmp / "models",
        runs=tmp / "runs",
        losses=(loss,),
        train=TrainConfig(epochs=2, batch_size=32, workers=1, device="cpu"),
        features=FeatureConfig(window_s=WINDOW_S, level="window"),
        cache_dir=tmp / "cache",
    )


@pytest.mark.slow
def test_train_export_evaluate_round_trip(corpus: Path, tmp_path: Path) -> None:
    (record,) = run_experiment(_experiment(corpus, tmp_path, "ce"))
    models = tmp_path / "models"
    onnx_path = models / "ser-ce.onnx"
    split_path = models / "splits" / "random.csv"
    parts = [part for _, part in read_split(split_path)]
    assert (parts.count("val"), parts.count("test")) == (8, 8)
    # The pool holds each training clip and its two noisy copies; an epoch draws one of them.
    assert record["n_clips"] == {"train": 64, "train_pool": 64 * 3, "val": 8, "test": 8}

    metadata = read_metadata(onnx_path)
    assert metadata.split_sha256 == split_sha256(split_path)
    assert metadata.loss == "ce" and metadata.architecture == "sequential"
    assert metadata.feature_config.normalised and metadata.feature_config.window_s == WINDOW_S
    assert metadata.feature_config.level == record["feature_config"]["level"] == "window"
    assert metadata.metrics["test"]["accuracy"] == pytest.approx(record["test"]["accuracy"])
    _, checkpoint = load_checkpoint(tmp_path / "runs" / "random" / "ser-ce" / "best.pt")
    assert FeatureConfig.from_dict(checkpoint["feature_config"]) == metadata.feature_config

    result = evaluate_onnx(onnx_path, split_path, corpus, cache_dir=tmp_path / "cache2")
    assert result.metrics["confusion"] == record["test"]["confusion"]
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "uar"):
        assert result.metrics[key] == pytest.approx(record["test"][key]), key
    assert result.metrics["loss"] == pytest.approx(record["test"]["loss"], abs=1e-4)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)

    # A second loss into the same folder reuses the split and adds to metrics.json.
    run_experiment(_experiment(corpus, tmp_path, "bce"))
    assert read_metadata(models / "ser-bce.onnx").split_sha256 == metadata.split_sha256
    runs = json.loads((models / "metrics.json").read_text())["runs"]
    assert sorted(r["loss"] for r in runs) == ["bce", "ce"]
    report = (models / "report" / "report.md").read_text()
    assert "Binary cross-entropy" in report
    assert any((models / "report").glob("random-sequential-bce-*.png"))

    # Calibration: the temperature fitted on the val rows lands in the metadata, and the val
    # figures a recipe is chosen on are measured at T = 1 and at the fitted T.
    # Another split's test rows (here the same file's, named as a split) are measured with the
    # same temperature: the same clips give the same figures.
    calibration = calibrate_model(
        onnx_path, split_path, corpus, cache_dir=tmp_path / "cache", also_test=[split_path]
    )
    assert read_metadata(onnx_path).temperature == pytest.approx(calibration["temperature"])
    val = calibration["val"]
    assert val["n"] == 8 and val["nll_after"] <= val["nll_before"]
    assert 0 <= val["ece_after"] <= 1 and 0 <= val["ece_before"] <= 1
    assert calibration["also"]["random.csv"]["after"] == calibration["test"]["after"]
    assert calibration["also"]["random.csv"]["n"] == calibration["test"]["n"]

    out = tmp_path / "eval.json"
    argv = ["evaluate", str(onnx_path), "--split", str(split_path), "--data", str(corpus)]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["confusion"] == record["test"]["confusion"]
    # --record keeps the scores with the model file's hash, one entry per model, split and part
    book = models / "evaluations.json"
    for _ in range(2):  # a second run replaces its entry
        assert main([*argv, "--cache-dir", str(tmp_path / "cache"), "--record", str(book)]) == 0
    ((key, entry),) = json.loads(book.read_text())["evaluations"].items()
    assert key == "ser-ce.onnx on splits/random.csv test" and entry["split"] == "splits/random.csv"
    assert entry["model_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert entry["split_sha256"] == metadata.split_sha256
    assert entry["metrics"]["confusion"] == record["test"]["confusion"]

    # The gain check: at 0 dB the 16-bit clips are stored as they are, so it scores what the
    # evaluation scored; the level stage hears the quieter copies as the same clips.
    argv = ["gain-check", str(onnx_path), "--split", str(split_path), "--data", str(corpus)]
    assert main([*argv, "--out", str(models), "--workers", "1"]) == 0
    (gains,) = json.loads((models / "gain.json").read_text())["models"].values()
    assert gains["level"] == "window" and gains["n"] == 8
    assert gains["conditions"]["0 dB"]["accuracy"] == pytest.approx(
        record["test"]["accuracy"], abs=1e-4
    )
    for condition in ("-20 dB", "-10 dB"):
        assert gains["conditions"][condition]["label_changed"] == 0.0, condition
    assert "## Gain invariance" in (models / "report" / "report.md").read_text()


def test_a_split_file_for_other_clips_is_not_reused(corpus: Path, tmp_path: Path) -> None:
    splits = tmp_path / "models" / "splits"
    splits.mkdir(parents=True)
    (splits / "random.csv").write_text(
        "path,dataset,speaker,emotion,split,utterance\nelsewhere.wav,custom,,sad,test,\n"
    )
    with pytest.raises(ValueError, match="another --out"):
        run_experiment(_experiment(corpus, tmp_path, "ce"))


def test_only_the_default_layout_lands_where_the_server_looks() -> None:
    assert onnx_path(Path("models"), "ce", "sequential") == Path("models/ser-ce.onnx")
    assert onnx_path(Path("models"), "ce", "parallel") == Path("models/parallel/ser-ce.onnx")


def test_fold_selection_runs_only_the_folds_asked_for(corpus: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from training.corpora import corpus_root, load_corpus
    from training.pipeline import split_files

    clips = load_corpus(corpus)
    base = replace(_experiment(corpus, tmp_path, "ce"), protocol="speaker")
    everything = split_files(base, clips, corpus_root(corpus))
    assert [fold for _, fold, _ in everything] == list(range(len(everything)))
    assert len(everything) > 1
    last = len(everything) - 1
    chosen = split_files(replace(base, only_folds=(last,)), clips, corpus_root(corpus))
    assert [(name, fold) for name, fold, _ in chosen] == [(f"speaker-fold{last}", last)]
    with pytest.raises(ValueError, match="no speaker fold"):
        split_files(replace(base, folds=1, only_folds=(last,)), clips, corpus_root(corpus))


@pytest.mark.slow
def test_the_corpus_ablation_scores_each_fold_on_the_corpus_it_held_out(tmp_path: Path) -> None:
    from dataclasses import replace

    from training.ablation import VARIANTS, run_ablation

    # Three corpora, two chosen: the third is in no fold, no score and not in the selection.
    three = _write_corpus(tmp_path / "three", ("alpha", "beta", "gamma"))
    exp = replace(_experiment(three, tmp_path, "ce"), protocol="corpus", corpora=("alpha", "beta"))
    exp = replace(exp, train=exp.train.replace(epochs=1))
    rows = run_ablation(exp, {"neither": VARIANTS["neither"]}, score_held_out=True)
    n_corpus = CLIPS_PER_LABEL * len(LABELS)
    assert [(r["fold"], list(r["held_out"]["by_corpus"])) for r in rows] == [
        (0, ["alpha"]),
        (1, ["beta"]),
    ]
    assert [r["selection"] for r in rows] == ["alpha+beta"] * 2
    for row in rows:
        held_out = row["held_out"]
        ((name, part),) = held_out["by_corpus"].items()
        assert held_out["n"] == part["n"] == n_corpus
        assert held_out["accuracy"] == part["accuracy"]
        assert part["classes"] == list(LABELS)  # each corpus has and teaches all eight
        for key in ("uar", "macro_f1", "arousal_uar", "valence_uar"):
            assert 0.0 <= part[key] <= 1.0
        # Validation stays in the training corpus: the held-out one is only in "held_out".
        assert list(row["val_by_corpus"]) == [c for c in ("alpha", "beta") if c != name]
    written = json.loads((exp.out / "ablation.json").read_text())["ablation"]
    assert [r["held_out"] for r in written] == [r["held_out"] for r in rows]
    # Without the flag no test row is scored; other protocols have no held-out corpus.
    plain = run_ablation(replace(exp, only_folds=(0,)), {"neither": VARIANTS["neither"]})
    assert "held_out" not in plain[0]
    with pytest.raises(ValueError, match="corpus protocol"):
        run_ablation(replace(exp, protocol="speaker"), {}, score_held_out=True)


def test_the_gain_check_stores_clips_as_a_16_bit_wav_would() -> None:
    from training.gaincheck import as_stored

    x = np.array([0.5, -0.25, 0.001, 0.0], dtype=np.float32)
    np.testing.assert_allclose(as_stored(x, "-20 dB"), x * 0.1, atol=1 / 32768)
    louder = as_stored(x, "+10 dB")
    assert louder[0] == 32767 / 32768  # 0.5 x 3.16 clips at full scale
    assert louder[1] == pytest.approx(-0.25 * 10**0.5, abs=1 / 32768)
    assert np.max(np.abs(as_stored(x, "peak"))) == pytest.approx(32767 / 32768)
    assert as_stored(np.zeros(4, np.float32), "peak").tolist() == [0.0] * 4


def test_a_grown_corpus_trains_beside_the_paper_split(tmp_path: Path) -> None:
    """More corpora than the committed three-corpus split lists: the selection gets split files
    of its own (the paper's random.csv stays as it is), and --corpora picks the paper's data."""
    from dataclasses import replace

    from training.corpora import corpus_root, load_corpus
    from training.pipeline import select_corpora, split_files

    corpus = _write_corpus(tmp_path / "corpus", ("ravdess", "nemo"))
    clips = load_corpus(corpus)
    base = _experiment(corpus, tmp_path, "ce")
    paper = select_corpora(clips, ("ravdess",))
    ((name, _, paper_file),) = split_files(base, paper, corpus_root(corpus))
    assert (name, paper_file) == ("random", tmp_path / "models/splits/random.csv")
    ((name, _, grown_file),) = split_files(base, clips, corpus_root(corpus))
    assert name == "nemo+ravdess/random"
    assert {c.dataset for c, _ in read_split(grown_file)} == {"ravdess", "nemo"}
    assert len(read_split(paper_file)) == len(paper)  # untouched by the grown selection
    with pytest.raises(ValueError, match="no corpus \\['tess'\\]"):
        select_corpora(clips, ("ravdess", "tess"))
    (record,) = run_experiment(replace(base, train=replace(base.train, epochs=1)))
    assert record["corpora"] == {"nemo": 54, "ravdess": 64}  # nemo: one speaker tests
    assert record["split_file"] == "nemo+ravdess/random.csv"
    metadata = read_metadata(tmp_path / "models" / "ser-ce.onnx")
    assert metadata.metrics["training_corpora"] == record["corpora"]
    assert metadata.metrics["split_file"] == "splits/nemo+ravdess/random.csv"
    # calibrate fits each model on its own split's validation rows.
    from training.cli import own_split

    models = tmp_path / "models"
    assert own_split(models / "ser-ce.onnx", models) == models / "splits/nemo+ravdess/random.csv"
