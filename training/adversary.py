"""Adversarial training against the speaker (or corpus): a gradient-reversal head.

Domain-adversarial training (Ganin & Lempitsky, 2015), applied to speech emotion as in
speaker-invariant SER: a small classifier reads the model's pooled embedding (the vector the
emotion head reads) and learns to tell which training speaker (or corpus) a clip came from. Its
gradient reaches the model through a *reversal*: identity on the way forward, multiplied by
``-scale`` on the way back, so while the adversary gets better at naming the speaker, the
model is pushed to make its embedding useless for that, and useful for emotion only.

The head exists only during training: the exported model (``forward`` -> emotion logits) and
the server are unchanged. ``scale`` ramps from 0 to ``weight`` over the run with Ganin and
Lempitsky's schedule ``2 / (1 + exp(-10 p)) - 1``, so the untrained adversary's noisy gradient
does not disturb the first epochs.

The reversal is a few lines of autograd written here: torch has no built-in for it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

HIDDEN = 64  # units of the adversary's one hidden layer


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged; the gradient that flows back through it is multiplied by ``-scale``."""
    return _Reverse.apply(x, scale)


def reversal_scale(progress: float, weight: float) -> float:
    """The reversal's strength at ``progress`` (0 at the first step, 1 at the last)."""
    progress = min(max(progress, 0.0), 1.0)
    return weight * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


class Adversary(nn.Module):
    """embedding (B, dim) -> reversal -> Linear -> ReLU -> Linear -> group logits (B, n_groups)."""

    def __init__(self, dim: int, n_groups: int) -> None:
        super().__init__()
        if n_groups < 2:
            raise ValueError(f"an adversary needs at least 2 groups to tell apart, not {n_groups}")
        self.net = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_groups))

    def forward(self, embedding: torch.Tensor, scale: float) -> torch.Tensor:
        return self.net(reverse_gradient(embedding, scale))


def group_indices(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer ids ``0 .. k - 1`` for string keys (speakers or corpora), and ``k``."""
    names, inverse = np.unique(keys, return_inverse=True)
    return inverse.astype(np.int64), len(names)
