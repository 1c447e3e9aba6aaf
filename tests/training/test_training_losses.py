"""The four losses: they train, and their probabilities match the server's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.contract import LOSSES
from app.contract import probabilities as served_probabilities
from training.losses import UnknownLossError, make_loss, probabilities
from training.model import ModelConfig, build_model


@pytest.mark.parametrize("loss_name", LOSSES)
def test_two_optimisation_steps_reduce_the_loss(loss_name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_frames=64, dropout=0.0))  # train mode, no dropout noise
    x = torch.randn(8, 128, 64)
    y = torch.arange(8) % 8
    loss_fn = make_loss(loss_name)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = loss_fn(model(x), y).item()
    for _ in range(2):
        optimiser.zero_grad()
        loss_fn(model(x), y).backward()
        optimiser.step()
    after = loss_fn(model(x), y).item()
    assert after < before


@pytest.mark.parametrize("loss_name", LOSSES)
def test_probabilities_agree_with_the_server(loss_name: str) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=6.0, size=(16, 8)).astype(np.float32)
    logits[0] = [90.0, -90.0, 0, 0, 0, 0, 0, 40.0]  # extremes must not overflow either
    ours = probabilities(torch.from_numpy(logits), loss_name).numpy()  # type: ignore[arg-type]
    theirs = served_probabilities(logits, loss_name)  # type: ignore[arg-type]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    np.testing.assert_allclose(ours.sum(axis=-1), 1.0, atol=1e-6)


def test_losses_compare_against_one_hot_targets() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 0, 0, 0, 0, 0]])
    target = torch.tensor([0])
    one_hot = F.one_hot(target, 8).float()
    p = logits.softmax(-1)
    torch.testing.assert_close(make_loss("l1")(logits, target), (p - one_hot).abs().mean())
    bce = -(one_hot * F.logsigmoid(logits) + (1 - one_hot) * F.logsigmoid(-logits)).mean()
    torch.testing.assert_close(make_loss("bce")(logits, target), bce)
    torch.testing.assert_close(make_loss("ce")(logits, target), -p[0, 0].log())
    # SmoothL1 with beta 1 is half the squared error below 1, which every probability error is.
    torch.testing.assert_close(
        make_loss("smoothl1")(logits, target), (0.5 * (p - one_hot) ** 2).mean()
    )


def test_unknown_loss_names_are_refused() -> None:
    with pytest.raises(UnknownLossError, match="choose one of"):
        make_loss("focal")
