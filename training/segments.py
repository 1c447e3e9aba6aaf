"""Decode every clip once into its model-input segment, with an on-disk cache.

A clip's segment is ``app.windows.training_segment`` of ``app.audio.decode_audio(path)``
(16 kHz mono, silence-trimmed, one ``window_s`` window, zero-padded). Each decoded segment is
saved as ``<content sha256>-<config digest>.npy`` in the cache folder, holding only the
non-padded samples: the content hash (:func:`training.corpora.content_sha256`) names the audio,
whatever the file is called, and the config digest covers every field the segment depends on
(sample rate, window length, trim settings), so changing one of them decodes again instead of
reading stale segments. Decoding runs in a process pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from app.audio import decode_audio
from app.features import FeatureConfig
from app.windows import fixed_window, training_segment
from training.corpora import Clip, content_sha256

T = TypeVar("T")

CACHE_VERSION = 1  # bump when the way a segment is computed changes
SEGMENT_FIELDS = (
    "sample_rate",
    "window_s",
    "trim_top_db",
    "trim_frame_length",
    "trim_hop_length",
)


class Segments(NamedTuple):
    """Model-input segments for a list of clips, in the same order."""

    waves: np.ndarray  # (n, window_samples) float32
    padded: np.ndarray  # (n,) bool: the trimmed clip was shorter than the window


def config_digest(config: FeatureConfig) -> str:
    """A short hash of the config fields a segment depends on. The trim floor joins them only
    when it is not the absolute one (the only floor before 2026-12-05), so the segments
    cached before then keep their names."""
    fields: dict[str, object] = {name: getattr(config, name) for name in SEGMENT_FIELDS}
    if config.trim_floor != "absolute":
        fields["trim_floor"] = config.trim_floor
    fields["version"] = CACHE_VERSION
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _decode_one(path: str, config: FeatureConfig) -> np.ndarray:
    """One clip's segment without its zero padding: float32 ``(<= window_samples,)``.

    A padded segment loses its trailing zeros, so it stays shorter than the window and
    :func:`app.windows.fixed_window` restores it exactly.
    """
    audio = decode_audio(path, target_rate=config.sample_rate)
    segment, padded = training_segment(audio.samples, config)
    if not padded:
        return segment
    nonzero = np.flatnonzero(segment)
    return segment[: int(nonzero[-1]) + 1 if nonzero.size else 0]


def _save_atomic(path: Path, samples: np.ndarray) -> None:
    # Write next to the target, then rename: a killed run never leaves a half-written entry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, samples)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like any output
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decode_and_cache(source: str, target: str, config: FeatureConfig) -> np.ndarray:
    samples = _decode_one(source, config)
    _save_atomic(Path(target), samples)
    return samples


def load_segments(
    clips: Sequence[Clip],
    root: str | Path,
    config: FeatureConfig,
    cache_dir: str | Path,
    workers: int = 1,
    progress: bool = False,
) -> Segments:
    """Segments for ``clips`` (paths relative to ``root``), decoding only what is not cached.

    Args:
        workers: decoding processes; 1 or fewer decodes in this process.
        progress: show a tqdm progress bar while decoding.

    Returns:
        :class:`Segments`: ``waves`` float32 ``(len(clips), config.window_samples)`` and
        ``padded`` bool ``(len(clips),)``.
    """
    root, cache = Path(root), Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    digest = config_digest(config)
    targets = [cache / f"{content_sha256(root / c.path)}-{digest}.npy" for c in clips]
    todo = sorted({str(t): i for i, t in enumerate(targets) if not t.is_file()}.items())
    decoded = _decode_missing(
        [(str(root / clips[i].path), t) for t, i in todo], config, workers, progress
    )
    waves = np.zeros((len(clips), config.window_samples), dtype=np.float32)
    padded = np.zeros(len(clips), dtype=bool)
    for i, target in enumerate(targets):
        samples = decoded.get(str(target))
        if samples is None:
            samples = np.load(target)
        waves[i] = fixed_window(samples, config)
        padded[i] = samples.shape[0] < config.window_samples
    return Segments(waves, padded)


def _decode_missing(
    jobs: list[tuple[str, str]], config: FeatureConfig, workers: int, progress: bool
) -> dict[str, np.ndarray]:
    """Decode ``(source, cache target)`` pairs, caching each; returns samples by target."""
    if not jobs:
        return {}
    sources, targets = zip(*jobs, strict=True)
    configs = [config] * len(jobs)
    if workers <= 1:
        serial = map(_decode_and_cache, sources, targets, configs)
        return dict(zip(targets, _with_progress(serial, len(jobs), progress), strict=True))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_decode_and_cache, sources, targets, configs, chunksize=8)
        return dict(zip(targets, _with_progress(results, len(jobs), progress), strict=True))


def _with_progress(results: Iterator[T], total: int, progress: bool) -> Iterator[T]:
    if not progress:
        return results
    from tqdm import tqdm

    return iter(tqdm(results, total=total, desc="decoding clips", unit="clip"))
