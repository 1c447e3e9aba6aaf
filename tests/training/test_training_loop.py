"""The training loop and its feature preparation, on small synthetic tensors (CPU)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.features import FeatureConfig, log_mel
from tests.conftest import synth_speechlike
from training.config import TrainConfig, TrainConfigError
from training.featureset import band_stats, compute_features, normalise_
from training.model import ModelConfig
from training.train import (
    LabelledFeatures,
    _epoch_rows,
    draw_weights,
    fit,
    load_checkpoint,
    warmup_cosine,
)

# No masks, mixup or smoothing: a few epochs on 64 clips must show learning, not regularisation.
PLAIN = TrainConfig(freq_masks=0, time_masks=0, mixup_alpha=0.0, label_smoothing=0.0)


def _separable(n: int, seed: int) -> LabelledFeatures:
    """Random features with a label-dependent bright band: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 8
    x = rng.standard_normal((n, 128, 64)).astype(np.float32)
    for i, label in enumerate(labels):
        x[i, label * 16 : label * 16 + 8] += 3.0
    return LabelledFeatures(x, labels.astype(np.int64))


def test_fit_learns_logs_and_checkpoints(tmp_path: Path) -> None:
    config = PLAIN.replace(loss="ce", epochs=6, batch_size=16, lr=3e-3, warmup_epochs=1, seed=1)
    features = FeatureConfig().with_stats(np.zeros(128), np.ones(128))
    model_config = ModelConfig(n_frames=64)
    result = fit(model_config, config, features, _separable(64, 0), _separable(32, 1), tmp_path)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history) == 6
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert result.best_score >= 0.5  # chance is 1/8
    csv_header = (tmp_path / "history.csv").read_text().splitlines()[0]
    assert csv_header.split(",")[:4] == ["epoch", "lr", "train_loss", "train_accuracy"]
    model, saved = load_checkpoint(tmp_path / "best.pt")
    assert not model.training
    assert saved["epoch"] == result.best_epoch
    assert ModelConfig.from_dict(saved["model_config"]) == model_config
    assert TrainConfig.from_dict(saved["train_config"]) == config
    assert FeatureConfig.from_dict(saved["feature_config"]) == features


def test_fit_is_seeded() -> None:
    config = TrainConfig(epochs=2, batch_size=16, seed=5)
    runs = [
        fit(ModelConfig(n_frames=64), config, FeatureConfig(), _separable(32, 0), _separable(16, 1))
        for _ in range(2)
    ]
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]


def test_fit_stops_early_when_validation_stalls() -> None:
    # Validation clips of a class the training clips never have: the model never predicts it
    # (the score stays 0) and training only pushes its logit down (the loss, which breaks
    # ties, only rises), so no epoch after the first is better.
    train = _separable(32, 0)
    seen = train.labels < 4
    train = LabelledFeatures(train.features[seen], train.labels[seen])
    val = _separable(16, 1)
    val.labels[:] = 7
    config = TrainConfig(epochs=20, batch_size=16, patience=2, seed=0)
    result = fit(ModelConfig(n_frames=64), config, FeatureConfig(), train, val)
    assert result.best_epoch == 1
    assert len(result.history) == 1 + config.patience


def test_warmup_then_cosine() -> None:
    factors = [
        warmup_cosine(s, warmup_steps=10, total_steps=110, min_ratio=0.1) for s in range(110)
    ]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))  # decays
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)


def test_features_normalised_after_the_fact_equal_log_mel_with_stats() -> None:
    config = FeatureConfig()
    waves = np.stack([synth_speechlike(3.5, 16_000, seed=s) for s in range(3)])
    raw = compute_features(waves, config, workers=1)
    assert raw.shape == (3, 128, config.window_frames)
    mean, std = band_stats(raw)
    np.testing.assert_allclose(mean, raw.mean(axis=(0, 2)), rtol=1e-5)
    # A band the voice never reaches (0 Hz) sits at the log floor: its std is floored at 1e-5.
    np.testing.assert_allclose(std, np.maximum(raw.std(axis=(0, 2)), 1e-5), rtol=1e-4)
    with_stats = config.with_stats(mean, std)
    np.testing.assert_allclose(normalise_(raw, with_stats), log_mel(waves, with_stats), atol=1e-5)


def test_parallel_feature_workers_give_the_same_features() -> None:
    waves = np.stack([synth_speechlike(3.5, 16_000, seed=s) for s in range(70)])
    one = compute_features(waves, FeatureConfig(), workers=1)
    two = compute_features(waves, FeatureConfig(), workers=2)
    np.testing.assert_array_equal(one, two)


def test_train_config_round_trips_and_validates() -> None:
    config = TrainConfig(loss="smoothl1", snr_db=(10.0, 20.0), limit=40)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TrainConfigError, match="loss"):
        TrainConfig(loss="focal")  # type: ignore[arg-type]
    with pytest.raises(TrainConfigError, match="unknown"):
        TrainConfig.from_dict({"epochz": 3})


def test_a_spent_time_budget_stops_after_the_current_epoch() -> None:
    config = TrainConfig(epochs=5, batch_size=16, time_budget_s=0.0)
    result = fit(
        ModelConfig(n_frames=64), config, FeatureConfig(), _separable(16, 0), _separable(8, 1)
    )
    assert len(result.history) == 1


def test_cli_takes_one_loss_a_list_or_all() -> None:
    from training.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "--loss", "ce,bce"]).loss == ("ce", "bce")
    assert parser.parse_args(["train"]).loss == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--loss", "focal"])


def test_the_peak_learning_rate_defaults_per_loss() -> None:
    from training.config import PEAK_LR

    assert TrainConfig(loss="ce").peak_lr == PEAK_LR["ce"] == 2e-3
    assert TrainConfig(loss="l1").peak_lr == 5e-4  # 2e-3 collapses L1 to one class
    assert TrainConfig(loss="l1", lr=1e-3).peak_lr == 1e-3  # an explicit lr wins
    with pytest.raises(TrainConfigError):
        TrainConfig(lr=0.0)


def test_the_ce_warm_up_defaults_per_loss_and_old_records_had_none() -> None:
    from training.config import CE_WARMUP_EPOCHS

    config = TrainConfig(loss="l1", epochs=10, ce_warmup_epochs=3)
    assert [config.loss_at(e) for e in (1, 3, 4, 10)] == ["ce", "ce", "l1", "l1"]
    assert TrainConfig(loss="bce").ce_epochs == CE_WARMUP_EPOCHS["bce"]
    assert TrainConfig(loss="l1").ce_epochs == CE_WARMUP_EPOCHS["l1"] == 4
    assert TrainConfig(loss="l1", epochs=1).ce_epochs == 0  # a smoke run still trains L1
    assert TrainConfig(loss="l1", epochs=3).ce_epochs == 2
    with pytest.raises(TrainConfigError, match="ce_warmup_epochs"):
        TrainConfig(epochs=4, ce_warmup_epochs=4)  # no epoch left for the loss itself
    # A record from before the warm-up existed trained under its loss from the first epoch.
    old = {k: v for k, v in config.to_dict().items() if k != "ce_warmup_epochs"}
    assert TrainConfig.from_dict(old).ce_epochs == 0
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_a_ce_warm_up_trains_with_ce_then_the_loss_and_keeps_a_model_of_the_loss(
    tmp_path: Path,
) -> None:
    config = PLAIN.replace(
        loss="l1", epochs=4, ce_warmup_epochs=2, batch_size=16, lr=3e-3, warmup_epochs=1, seed=3
    )
    result = fit(
        ModelConfig(n_frames=64),
        config,
        FeatureConfig(),
        _separable(64, 0),
        _separable(32, 1),
        tmp_path,
    )
    log = (tmp_path / "train.log").read_text().splitlines()
    assert "the first 2 with ce" in log[0]
    assert " ce epoch 1/4 " in log[1] and "best epoch - |" in log[1]
    assert " l1 epoch 3/4 " in log[3]
    losses = [row["train_loss"] for row in result.history]
    # Cross-entropy starts near ln 8 = 2.08; L1 between softmax and one-hot over 8 classes is
    # at most 2 / 8 = 0.25 per clip.
    assert losses[0] > 1.0
    assert all(loss <= 0.25 for loss in losses[2:])
    assert result.best_epoch > 2  # an epoch trained under L1, whatever the warm-up scored


def test_cli_ce_warm_up_reaches_the_config() -> None:
    from training.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--loss", "l1", "--ce-warmup", "3"])
    assert _train_config(args).ce_warmup_epochs == 3
    assert _train_config(build_parser().parse_args(["train"])).ce_warmup_epochs is None


def test_corpus_balance_weights_give_each_corpus_its_share() -> None:
    groups = np.array(["tess"] * 600 + ["ravdess"] * 300 + ["savee"] * 100)
    equal = draw_weights(groups, 1.0)
    shares = {g: equal[groups == g].sum() for g in ("tess", "ravdess", "savee")}
    assert shares == pytest.approx({"tess": 1 / 3, "ravdess": 1 / 3, "savee": 1 / 3})
    sqrt = draw_weights(groups, 0.5)
    # n ** -0.5 per clip: a corpus's share grows with the square root of its size.
    assert sqrt[groups == "tess"].sum() / sqrt[groups == "savee"].sum() == pytest.approx(6**0.5)
    assert draw_weights(groups, 0.0) == pytest.approx(np.full(1000, 1e-3))


def test_class_balance_evens_each_corpus_classes_and_keeps_its_share() -> None:
    # Corpus a: 300 of class 0, 100 of class 1; corpus b: 100 of class 0.
    groups = np.array(["a"] * 400 + ["b"] * 100)
    labels = np.array([0] * 300 + [1] * 100 + [0] * 100)
    even = draw_weights(groups, 0.0, labels, 1.0)
    assert even.sum() == pytest.approx(1.0)
    assert even[groups == "a"].sum() == pytest.approx(0.8)  # the corpus's share as recorded
    assert even[:300].sum() == pytest.approx(even[300:400].sum())  # its two classes evened
    both = draw_weights(groups, 1.0, labels, 1.0)  # with equal corpora on top
    assert both[groups == "a"].sum() == pytest.approx(0.5)
    assert both[:300].sum() == pytest.approx(0.25)
    assert draw_weights(groups, 0.0, labels, 0.0) == pytest.approx(np.full(500, 1 / 500))
    with pytest.raises(ValueError, match="one label per clip"):
        draw_weights(groups, 0.0, None, 1.0)
    with pytest.raises(TrainConfigError, match="class_balance"):
        TrainConfig(class_balance=-0.1)


def test_balanced_epoch_draws_the_small_corpus_as_often_as_the_large() -> None:
    groups = np.array(["big"] * 900 + ["small"] * 100)
    run = SimpleNamespace(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    weights = torch.from_numpy(draw_weights(groups, 1.0))
    rows = _epoch_rows(1000, 3, run, weights)  # type: ignore[arg-type]
    clips = (rows % 1000).numpy()
    assert len(rows) == 1000 and rows.max() < 3000
    assert 0.42 < (clips >= 900).mean() < 0.58  # half the draws from a tenth of the clips


def test_corpus_balance_needs_the_corpora() -> None:
    config = PLAIN.replace(epochs=1, batch_size=16, corpus_balance=1.0)
    train = _separable(32, 0)
    with pytest.raises(ValueError, match="groups"):
        fit(ModelConfig(n_frames=64), config, FeatureConfig(), train, _separable(16, 1))
    train.groups = np.array(["a"] * 24 + ["b"] * 8)
    result = fit(ModelConfig(n_frames=64), config, FeatureConfig(), train, _separable(16, 1))
    assert len(result.history) == 1
    with pytest.raises(TrainConfigError, match="corpus_balance"):
        TrainConfig(corpus_balance=1.5)
