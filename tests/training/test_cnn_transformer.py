"""The CNN-Transformer: output shapes, token layouts and config validation."""

from __future__ import annotations

import pytest
import torch

from training.model import (
    Architecture,
    InputNorm,
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


@pytest.mark.parametrize("architecture", ["sequential", "parallel"])
def test_instance_norm_ignores_a_fixed_colouring_of_each_band(architecture: Architecture) -> None:
    # A microphone's or room's fixed EQ and a level change shift each log-mel band by a
    # constant; a scale stands for a different dynamic range. Per-window normalisation
    # removes both, which the global statistics do not.
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 128, 348, generator=generator)
    gain = torch.rand(1, 128, 1, generator=generator) * 2 + 0.5
    offset = torch.randn(1, 128, 1, generator=generator) * 3
    coloured = x * gain + offset
    cases: tuple[tuple[InputNorm, bool], ...] = (("instance", True), ("global", False))
    for input_norm, same in cases:
        torch.manual_seed(0)
        model = build_model(ModelConfig(architecture=architecture, input_norm=input_norm)).eval()
        with torch.no_grad():
            close = torch.allclose(model(x), model(coloured), atol=1e-4, rtol=1e-4)
        assert close is same, input_norm


def test_instance_norm_keeps_digital_silence_finite() -> None:
    model = build_model(ModelConfig(input_norm="instance")).eval()
    with torch.no_grad():
        logits = model(torch.full((2, 128, 348), -13.8))  # log(1e-6) everywhere: no variance
    assert torch.isfinite(logits).all()


def test_parameter_counts_are_those_of_a_small_model() -> None:
    counts = {
        a: count_parameters(build_model(ModelConfig(architecture=a)))
        for a in ("sequential", "parallel")
    }
    assert 300_000 < counts["sequential"] < counts["parallel"] < 500_000


def test_config_round_trips_and_rejects_misfits() -> None:
    config = ModelConfig(architecture="parallel", dropout=0.2)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelConfigError, match="input_norm"):
        ModelConfig(input_norm="batch")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"depth": 3})
    with pytest.raises(ModelConfigError, match="architecture"):
        ModelConfig(architecture="stacked")  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="too small"):
        ModelConfig(n_frames=16)
    with pytest.raises(ModelConfigError, match="d_model"):
        ModelConfig(architecture="parallel", n_mels=64)
