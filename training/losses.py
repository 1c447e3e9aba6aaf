"""The paper's four training losses, and how each one's logits become probabilities.

Every loss takes logits ``(B, n_labels)`` and integer targets ``(B,)`` and returns a scalar
(mean over the batch, and over classes for the element-wise ones, as PyTorch's defaults):

- ``ce``: cross-entropy on the logits.
- ``bce``: binary cross-entropy with logits against the one-hot targets: eight independent
  one-vs-rest sigmoids.
- ``l1`` / ``smoothl1``: L1 / SmoothL1 (beta 1) between the softmax probabilities and the
  one-hot targets.

:func:`probabilities` is the training-side twin of :func:`app.contract.probabilities` (the server
uses that one): softmax for ce, l1 and smoothl1; for bce the sigmoids renormalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from app.contract import LOSSES, Loss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class UnknownLossError(ValueError):
    """A loss name that is not one of app.contract.LOSSES."""


def _one_hot(targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    return F.one_hot(targets, num_classes=logits.shape[-1]).to(logits.dtype)


def _ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets)


def _bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, _one_hot(targets, logits))


def _l1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(logits.softmax(dim=-1), _one_hot(targets, logits))


def _smoothl1(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(logits.softmax(dim=-1), _one_hot(targets, logits), beta=1.0)


_LOSSES: dict[str, LossFn] = {"ce": _ce, "bce": _bce, "l1": _l1, "smoothl1": _smoothl1}


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """The loss function ``(logits (B, n_labels), targets (B,) int64) -> scalar`` for ``name``.

    ``label_smoothing`` applies to ``ce`` only (the paper's other losses compare against the
    one-hot target, which is what they are defined on); it is ignored for the others.
    """
    if name not in LOSSES:
        raise UnknownLossError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    if name == "ce" and label_smoothing > 0:
        return partial(F.cross_entropy, label_smoothing=label_smoothing)
    return _LOSSES[name]


def probabilities(logits: torch.Tensor, loss: Loss) -> torch.Tensor:
    """(..., n_labels) logits -> probabilities summing to 1, as app.contract.probabilities."""
    if loss not in LOSSES:
        raise UnknownLossError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    z = logits.float()
    # softmax(log sigmoid(z)) == sigmoid(z) / sum(sigmoid(z)), without overflow.
    log_p = F.logsigmoid(z) if loss == "bce" else z
    return log_p.softmax(dim=-1)
