"""The CNN-Transformer: output shapes, token layouts and config validation."""

from __future__ import annotations

import pytest
import torch

from training.model import (
    Architecture,
    ModelConfig,
    ModelConfigError,
    build_model,
    count_parameters,
)


@pytest.mark.parametrize("architecture", ["sequential", "parallel"])
@pytest.mark.parametrize("batch", [1, 3])
def test_both_architectures_give_one_logit_row_per_clip(
    architecture: Architecture, batch: int
) -> None:
    model = build_model(ModelConfig(architecture=architecture)).eval()
    with torch.no_grad():
        logits = model(torch.randn(batch, 128, 348))
    assert logits.shape == (batch, 8)
    assert torch.isfinite(logits).all()


def test_token_layouts_follow_the_documented_shapes() -> None:
    sequential = ModelConfig()
    parallel = ModelConfig(architecture="parallel")
    assert sequential.cnn_map == (4, 10)  # 128 / 32 mels, 348 // 32 frames
    assert sequential.n_tokens == 40
    assert parallel.n_tokens == 87  # 348 // 4 time steps, each 128 / 2 = 64 = d_model wide


def test_clips_in_a_batch_do_not_influence_each_other() -> None:
    # Eval mode: BatchNorm uses running statistics, so each row depends on its own clip only.
    model = build_model(ModelConfig(architecture="parallel")).eval()
    x = torch.randn(4, 128, 348)
    with torch.no_grad():
        together = model(x)
        alone = model(x[2:3])
    torch.testing.assert_close(together[2:3], alone, atol=1e-5, rtol=1e-5)


def test_parameter_counts_are_those_of_a_small_model() -> None:
    counts = {
        a: count_parameters(build_model(ModelConfig(architecture=a)))
        for a in ("sequential", "parallel")
    }
    assert 300_000 < counts["sequential"] < counts["parallel"] < 500_000


def test_config_round_trips_and_rejects_misfits() -> None:
    config = ModelConfig(architecture="parallel", dropout=0.2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelConfigError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"depth": 3})
    with pytest.raises(ModelConfigError, match="architecture"):
        ModelConfig(architecture="stacked")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="too small"):
        ModelConfig(n_frames=16)
    with pytest.raises(ModelConfigError, match="d_model"):
        ModelConfig(architecture="parallel", n_mels=64)
