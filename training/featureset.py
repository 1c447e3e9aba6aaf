"""Feature preparation for training: log-mel of every segment, computed once, and its statistics.

The features come from :func:`app.windows.featurise`, the function the server runs, so training
and serving cannot drift apart. The per-band statistics are measured on the training features
(noisy copies included) and then stored in the FeatureConfig that travels with every model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from app.features import FeatureConfig
from app.windows import featurise

FEATURE_CHUNK = 64  # segments per job of the process pool


def _featurise_chunk(args: tuple[np.ndarray, FeatureConfig]) -> np.ndarray:
    segments, config = args
    return featurise(segments, config)


def compute_features(
    segments: np.ndarray, config: FeatureConfig, workers: int = 1, desc: str = "features"
) -> np.ndarray:
    """Log-mel features of every segment, in the config's normalisation (usually none yet).

    Args:
        segments: float32 ``(n, window_samples)``: model windows.
        config: the front-end; ``featurise`` is the one the server runs.
        workers: processes (1 = in this process).

    Returns:
        float32 ``(n, n_mels, frames)``.
    """
    n = len(segments)
    if segments.shape[-1] != config.window_samples:
        raise ValueError(f"segments must be model windows of {config.window_samples} samples")
    out = np.empty((n, config.n_mels, config.window_frames), dtype=np.float32)
    starts = range(0, n, FEATURE_CHUNK)
    jobs = ((segments[s : s + FEATURE_CHUNK], config) for s in starts)
    with contextlib.ExitStack() as stack:
        if workers > 1 and n > FEATURE_CHUNK:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results: Iterator[np.ndarray] = pool.map(_featurise_chunk, jobs)
        else:
            results = map(_featurise_chunk, jobs)
        bar = tqdm(total=n, desc=desc, unit="clip", leave=False)
        for start, chunk in zip(starts, results, strict=True):
            out[start : start + len(chunk)] = chunk
            bar.update(len(chunk))
        bar.close()
    return out


def band_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-band mean and std over clips and frames: (n, n_mels, frames) -> 2 x (n_mels,)."""
    total = np.zeros(features.shape[1], dtype=np.float64)
    total_sq = np.zeros(features.shape[1], dtype=np.float64)
    for start in range(0, len(features), 256):  # float64 sums, without a float64 copy
        chunk = features[start : start + 256].astype(np.float64)
        total += chunk.sum(axis=(0, 2))
        total_sq += np.square(chunk).sum(axis=(0, 2))
    count = features.shape[0] * features.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean, np.maximum(std, 1e-5)


def normalise_(features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Apply ``config``'s statistics in place, exactly as ``log_mel`` does with them."""
    if config.mean is None or config.std is None:
        raise ValueError("the FeatureConfig carries no statistics; use FeatureConfig.with_stats")
    mean = np.asarray(config.mean, dtype=np.float32)[:, None]
    std = np.asarray(config.std, dtype=np.float32)[:, None]
    for start in range(0, len(features), 256):
        chunk = features[start : start + 256]
        np.subtract(chunk, mean, out=chunk)
        np.divide(chunk, std, out=chunk)
    return features
