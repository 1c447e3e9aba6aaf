"""Gaussian-noise augmentation of training segments (the paper triples its training set).

With a channel chain (:mod:`training.channel`), each copy first goes through it, then gets
its noise.

Each segment gets ``copies`` noisy versions, each at its own SNR drawn uniformly from
``snr_db``. The SNR is relative to that segment's own power, measured on its non-padded part
(everything up to the last non-zero sample), and the noise is added to that part only, so the
zero padding stays zero as at serving time. The noise is scaled so that its realised power, not
just its expected power, gives the drawn SNR. A silent segment's copies stay silent.

Augmentation happens after the split and only to training rows (:func:`training_set`): no copy of
a validation or test clip can reach training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from training.channel import apply_chain
from training.splits import TRAIN

DEFAULT_SNR_DB = (15.0, 30.0)  # these functions' default; the release's range is TrainConfig.snr_db
Chain = tuple[Sequence[str], float]  # (channel augmentation names, probability of each)


def valid_samples(segment: np.ndarray) -> int:
    """Length of ``segment`` without its trailing zero padding."""
    nonzero = np.flatnonzero(segment)
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def add_noise(segment: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``segment`` plus white Gaussian noise at exactly ``snr_db`` over its non-padded part.

    Args:
        segment: float audio, shape ``(samples,)``.

    Returns:
        float32 array of shape ``(samples,)``.
    """
    out = np.array(segment, dtype=np.float32)
    n = valid_samples(out)
    if n == 0:
        return out
    signal_power = float(np.mean(out[:n].astype(np.float64) ** 2))
    noise = rng.standard_normal(n)
    noise *= np.sqrt(signal_power / 10.0 ** (snr_db / 10.0) / np.mean(noise**2))
    out[:n] += noise.astype(np.float32)
    return out


def through_channel(segment: np.ndarray, chain: Chain, rng: np.random.Generator) -> np.ndarray:
    """``segment``'s audio (up to its trailing zero padding) through the channel ``chain``,
    back in a window of the same length: cut, or zero-padded after the audio's new end."""
    names, prob = chain
    out = np.array(segment, dtype=np.float32)
    n = valid_samples(out)
    if n == 0 or not names:
        return out
    audio = apply_chain(out[:n], names, prob, rng)
    out[:] = 0.0
    keep = min(audio.size, out.size)
    out[:keep] = audio[:keep]
    return out


def noisy_copies(
    segments: np.ndarray,
    rng: np.random.Generator,
    copies: int = 2,
    snr_db: tuple[float, float] = DEFAULT_SNR_DB,
    chain: Chain = ((), 0.0),
) -> np.ndarray:
    """``copies`` noisy versions of every segment.

    Args:
        segments: float32 ``(n, samples)``.
        rng: the source of the SNR draws and the noise (seed it for a reproducible run).
        snr_db: ``(low, high)``; each copy's SNR is drawn uniformly from it.
        chain: ``(augmentation names, probability)`` of :func:`training.channel.apply_chain`,
            run on each copy before its noise; none by default.

    Returns:
        float32 ``(copies * n, samples)``, copy-major: rows ``c * n : (c + 1) * n`` are copy
        ``c`` of segments ``0 .. n - 1``, so labels follow with ``np.tile(labels, copies)``.
    """
    segments = np.asarray(segments, dtype=np.float32)
    if segments.ndim != 2:
        raise ValueError(f"segments must be (n, samples), got shape {segments.shape}")
    low, high = snr_db
    if not low <= high:
        raise ValueError(f"snr_db must be (low, high) with low <= high, got {snr_db}")
    draws = rng.uniform(low, high, size=(copies, segments.shape[0]))
    out = np.empty((copies * segments.shape[0], segments.shape[1]), dtype=np.float32)
    for c in range(copies):
        for i, segment in enumerate(segments):
            copy = through_channel(segment, chain, rng) if chain[0] else segment
            out[c * segments.shape[0] + i] = add_noise(copy, float(draws[c, i]), rng)
    return out


class TrainingSet(NamedTuple):
    """Training rows with their noisy copies."""

    waves: np.ndarray  # (n_train * (1 + copies), samples) float32: originals first, then copies
    labels: np.ndarray  # (n_train * (1 + copies),) int64
    source: np.ndarray  # (n_train * (1 + copies),) int64: row of ``segments`` each came from
    noisy: np.ndarray  # (n_train * (1 + copies),) bool: an added-noise copy


def training_set(
    segments: np.ndarray,
    labels: np.ndarray,
    splits: Sequence[str],
    rng: np.random.Generator,
    copies: int = 2,
    snr_db: tuple[float, float] = DEFAULT_SNR_DB,
    chain: Chain = ((), 0.0),
) -> TrainingSet:
    """The training array of a split: training originals, then their noisy copies.

    Args:
        segments: float32 ``(n, samples)`` for every clip of the split file.
        labels: ``(n,)`` class indices.
        splits: ``(n,)`` split names (``train``, ``val``, ``test``); only ``train`` rows are used.
    """
    if not len(segments) == len(labels) == len(splits):
        raise ValueError("segments, labels and splits must have one entry per clip")
    train = np.flatnonzero(np.asarray(splits) == TRAIN)
    source = np.concatenate([train] * (1 + copies)).astype(np.int64)
    copied = noisy_copies(segments[train], rng, copies, snr_db, chain)
    waves = np.concatenate([segments[train], copied])
    noisy = np.arange(source.size) >= train.size
    return TrainingSet(waves, np.asarray(labels)[source].astype(np.int64), source, noisy)
