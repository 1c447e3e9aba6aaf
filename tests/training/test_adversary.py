"""The speaker / corpus adversary (training/adversary.py) and its place in the training loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.features import FeatureConfig
from training.adversary import Adversary, group_indices, reversal_scale, reverse_gradient
from training.config import TrainConfig, TrainConfigError
from training.model import Architecture, ModelConfig, build_model
from training.train import LabelledFeatures, Run, fit

# Each of these corpora has two or three of the labels: the loss over all eight, so that the
# adversary is what these tests measure (training/labelsets.py has its own tests).
PLAIN = TrainConfig(
    freq_masks=0,
    time_masks=0,
    epochs=3,
    batch_size=16,
    warmup_epochs=1,
    seed=5,
    device="cpu",
    label_sets="all",
)
MODEL = ModelConfig(n_frames=64)
FEATURES = FeatureConfig().with_stats(np.zeros(128), np.ones(128))
SPEAKERS = np.array(["ravdess/01", "ravdess/02", "savee/DC", "tess/OAF"])


def _pool(n: int, seed: int, versions: int = 1) -> LabelledFeatures:
    """An emotion band and a speaker band; each speaker has two of the emotions, so a model that
    learns emotion also encodes the speaker."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 8
    speaker = labels % len(SPEAKERS)
    x = rng.standard_normal((versions * n, 128, 64)).astype(np.float32)
    for i in range(versions * n):
        x[i, labels[i % n] * 12 : labels[i % n] * 12 + 6] += 3.0
        x[i, 100 + speaker[i % n] * 7 : 104 + speaker[i % n] * 7] += 3.0
    return LabelledFeatures(
        x,
        np.tile(labels, versions).astype(np.int64),
        versions=versions,
        groups=np.array([s.split("/")[0] for s in SPEAKERS[speaker]]),
        speakers=SPEAKERS[speaker],
    )


def test_the_reversal_passes_values_and_negates_scaled_gradients() -> None:
    x = torch.randn(4, 6, requires_grad=True)
    weights = torch.randn(6)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * weights).sum().backward()
    assert x.grad is not None
    assert torch.allclose(x.grad, -0.25 * weights.expand(4, 6))


def test_the_reversal_ramps_from_nothing_to_its_weight() -> None:
    steps = [reversal_scale(p / 10, 0.3) for p in range(11)]
    assert steps[0] == 0.0
    assert steps == sorted(steps)
    assert steps[-1] == pytest.approx(0.3, rel=1e-3)
    assert reversal_scale(2.0, 0.3) == steps[-1]  # clamped past the last step


def test_group_ids_and_the_smallest_adversary() -> None:
    ids, k = group_indices(np.array(["tess/OAF", "ravdess/01", "tess/OAF"]))
    assert k == 2 and ids.tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="at least 2 groups"):
        Adversary(64, 1)


@pytest.mark.parametrize("architecture", ["sequential", "parallel"])
def test_the_head_reads_the_embedding_the_adversary_reads(architecture: Architecture) -> None:
    model = build_model(ModelConfig(architecture=architecture, n_frames=64)).eval()
    x = torch.randn(3, 128, 64)
    with torch.no_grad():
        embedding = model.embed(x)
        assert embedding.shape == (3, model.embedding_dim)
        assert torch.equal(model.head(embedding), model(x))


def test_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(TrainConfigError, match="adversary"):
        TrainConfig(adversary="accent")  # type: ignore[arg-type]
    with pytest.raises(TrainConfigError, match="adversary_weight"):
        TrainConfig(adversary="speaker", adversary_weight=-1.0)
    unnamed = _pool(32, 0)
    unnamed.speakers = None
    with pytest.raises(ValueError, match="speakers"):
        fit(MODEL, PLAIN.replace(adversary="speaker"), FEATURES, unnamed, _pool(16, 1))


@pytest.mark.slow
def test_a_weightless_adversary_learns_the_speakers_and_leaves_the_model_alone() -> None:
    """At weight 0 the head still learns to name each pool row's speaker (so it reads the right
    targets, noisy copies included) and the model trains exactly as without it; a real weight
    changes the model."""
    config = PLAIN.replace(epochs=6, batch_size=8)
    train, val = _pool(32, 0, versions=2), _pool(16, 1)
    plain = fit(MODEL, config, FEATURES, train, val)
    weightless = fit(
        MODEL, config.replace(adversary="speaker", adversary_weight=0.0), FEATURES, train, val
    )
    reversed_ = fit(
        MODEL, config.replace(adversary="speaker", adversary_weight=1.0), FEATURES, train, val
    )

    assert "train_adversary_accuracy" not in plain.history[-1]
    first, last = weightless.history[0], weightless.history[-1]
    assert last["train_adversary_accuracy"] > 0.7  # chance: 1 in 4 speakers
    assert last["train_adversary_loss"] < first["train_adversary_loss"]
    weights = [k for k, v in plain.model.state_dict().items() if v.is_floating_point()]
    for name in weights:
        assert torch.equal(plain.model.state_dict()[name], weightless.model.state_dict()[name])
    assert any(
        not torch.equal(plain.model.state_dict()[k], reversed_.model.state_dict()[k])
        for k in weights
    )


def test_a_corpus_adversary_resumes_to_the_same_run(tmp_path: Path) -> None:
    config = PLAIN.replace(adversary="corpus", mixup_alpha=0.4, mixup_prob=1.0)
    train, val = _pool(48, 0, versions=2), _pool(16, 1)
    whole = fit(MODEL, config, FEATURES, train, val, tmp_path / "whole")

    class Interrupted(Exception):
        pass

    def stop_after_first(run: Run) -> None:
        if run.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(MODEL, config, FEATURES, train, val, tmp_path / "cut", on_epoch_end=stop_after_first)
    resumed = fit(MODEL, config, FEATURES, train, val, tmp_path / "cut", resume=True)

    def without_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert without_timing(resumed.history) == without_timing(whole.history)
    assert "train_adversary_accuracy" in whole.history[0]
