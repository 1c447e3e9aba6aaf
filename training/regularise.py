"""Batch-level regularisation on the device: SpecAugment masks and mixup.

Both act on a batch of normalised log-mel features ``(B, n_mels, frames)`` and draw from a
seeded ``torch.Generator``, so a run (and a resumed run) is reproducible. Masked cells are set
to 0, which after the per-band normalisation is the training mean of that band.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SpecAugment:
    """``freq_masks`` bands of up to ``freq_width`` mels and ``time_masks`` spans of up to
    ``time_width`` frames, each width drawn uniformly from ``0 .. max`` per clip (Park et al.)."""

    freq_masks: int = 2
    freq_width: int = 16
    time_masks: int = 2
    time_width: int = 40

    @property
    def active(self) -> bool:
        return (self.freq_masks > 0 and self.freq_width > 0) or (
            self.time_masks > 0 and self.time_width > 0
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A masked copy of ``x`` (B, n_mels, frames)."""
        if not self.active:
            return x
        keep = torch.ones_like(x, dtype=torch.bool)
        for axis, count, width in (
            (1, self.freq_masks, self.freq_width),
            (2, self.time_masks, self.time_width),
        ):
            if count > 0 and width > 0:
                keep &= _mask(x, axis, count, width, generator)
        return x * keep


def _mask(
    x: torch.Tensor, axis: int, count: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    """Boolean (B, n_mels, frames): False inside ``count`` random spans along ``axis``."""
    batch, size = x.shape[0], x.shape[axis]
    width = min(width, size)
    widths = torch.randint(0, width + 1, (batch, count), device=x.device, generator=generator)
    offsets = torch.rand((batch, count), device=x.device, generator=generator)
    starts = (offsets * (size - widths + 1)).long()
    position = torch.arange(size, device=x.device).view(1, 1, size)
    inside = (position >= starts[..., None]) & (position < (starts + widths)[..., None])
    keep = ~inside.any(dim=1)  # (B, size)
    return keep[:, :, None] if axis == 1 else keep[:, None, :]


@dataclass(frozen=True)
class Mixup:
    """Mix a batch with a shuffled copy of itself, with weight ``lam ~ Beta(alpha, alpha)``,
    on a fraction ``prob`` of the batches (Zhang et al.). The loss is mixed with the same
    weight: ``lam * loss(y) + (1 - lam) * loss(y[perm])``, which for CE and BCE equals the loss
    against the mixed targets and for L1 / SmoothL1 is the usual generalisation."""

    alpha: float = 0.4
    prob: float = 0.5

    @property
    def active(self) -> bool:
        return self.alpha > 0 and self.prob > 0

    def draw(
        self, batch: int, rng: random.Random, generator: torch.Generator, device: torch.device
    ) -> tuple[float, torch.Tensor] | None:
        """``(lam, permutation)`` for this batch, or None to leave it unmixed."""
        if not self.active or rng.random() >= self.prob:
            return None
        lam = rng.betavariate(self.alpha, self.alpha)
        return lam, torch.randperm(batch, device=device, generator=generator)
