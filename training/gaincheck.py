"""Gain invariance: the test split scored with every clip louder and quieter, as users send it.

A microphone's gain, its distance and the room change a recording's level by tens of dB without
changing the emotion in it. ``python -m training gain-check`` scores each released model on the
test rows of its split file with every clip

- scaled by -30, -20, -10, 0 and +10 dB, or peak-normalised (its largest sample at full scale),
- then clipped to +-1 and quantised to 16 bits, as a 16-bit WAV of it would hold it,
- then through the server's own steps: the silence trim, the clip's first window (the one an
  upload's ``segments[0]`` gets), :func:`app.windows.featurise` with the model's FeatureConfig
  (its level stage, if it has one) and ONNX Runtime;

and reports, per condition, the accuracy, UAR and the share of clips whose label differs from
the 0 dB label. The clips are decoded once (:func:`app.audio.decode_audio`, as ``/predict``).
Results go to ``<out>/gain.json``, one entry per model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from app.audio import decode_audio
from app.features import FeatureConfig
from app.labels import LABEL_INDEX
from app.windows import featurise, training_segment

CONDITIONS: Final[tuple[str, ...]] = ("-30 dB", "-20 dB", "-10 dB", "0 dB", "+10 dB", "peak")
REFERENCE: Final[str] = "0 dB"
INT16_SCALE: Final[float] = 32768.0


def as_stored(samples: np.ndarray, condition: str) -> np.ndarray:
    """``samples`` under ``condition`` (one of :data:`CONDITIONS`), clipped to +-1 and quantised
    to 16 bits as a PCM_16 WAV holds them."""
    x = np.asarray(samples, dtype=np.float64)
    if condition == "peak":
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        gain = 1.0 / peak if peak > 0 else 1.0
    else:
        gain = 10.0 ** (float(condition.split()[0]) / 20.0)
    quantised = np.clip(np.round(x * gain * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)
    return (quantised / INT16_SCALE).astype(np.float32)


def _clip_features(args: tuple[str, FeatureConfig]) -> np.ndarray:
    """Features ``(len(CONDITIONS), n_mels, frames)`` of one clip under every condition."""
    path, config = args
    samples = decode_audio(path, target_rate=config.sample_rate).samples
    windows = [training_segment(as_stored(samples, c), config)[0] for c in CONDITIONS]
    return featurise(windows, config)


def condition_features(paths: Sequence[str], config: FeatureConfig, workers: int) -> np.ndarray:
    """``(len(CONDITIONS), n_clips, n_mels, frames)`` features of every clip and condition."""
    jobs = [(p, config) for p in paths]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = list(pool.map(_clip_features, jobs, chunksize=8))
    else:
        rows = [_clip_features(job) for job in jobs]
    return np.stack(rows, axis=1)


def gain_check(
    model: Path, split: Path, root: Path, part: str = "test", workers: int = 0
) -> dict[str, Any]:
    """The gain-invariance figures of one exported model (see the module docstring)."""
    from training.evaluate import evaluate_onnx_features
    from training.export import read_metadata
    from training.splits import read_split

    metadata = read_metadata(model)
    clips = [clip for clip, name in read_split(split) if name == part]
    if not clips:
        raise ValueError(f"{split} has no {part!r} rows")
    truth = np.array([LABEL_INDEX[c.emotion] for c in clips], dtype=np.int64)
    workers = workers or (os.cpu_count() or 1)
    features = condition_features(
        [str(root / c.path) for c in clips], metadata.feature_config, workers
    )
    predicted = {}
    out: dict[str, Any] = {
        "model": model.name,
        "level": metadata.feature_config.level,
        "n": len(clips),
    }
    by_condition: dict[str, dict[str, float]] = {}
    for condition, x in zip(CONDITIONS, features, strict=True):
        result = evaluate_onnx_features(model, x, truth)
        predicted[condition] = result.probabilities.argmax(axis=-1)
        by_condition[condition] = {
            "accuracy": round(result.metrics["accuracy"], 4),
            "uar": round(result.metrics["uar"], 4),
        }
    for condition in CONDITIONS:
        changed = float(np.mean(predicted[condition] != predicted[REFERENCE]))
        by_condition[condition]["label_changed"] = round(changed, 4)
    out["conditions"] = by_condition
    return out


def write_results(path: Path, results: list[dict[str, Any]]) -> None:
    """Merge ``results`` into ``path`` (``{"models": {name: result}}``), replacing same names."""
    old = json.loads(path.read_text())["models"] if path.exists() else {}
    old.update({r["model"]: r for r in results})
    path.write_text(json.dumps({"conditions": list(CONDITIONS), "models": old}, indent=1))


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table: accuracy (share of labels changed against 0 dB) per condition."""
    head = "| model | level stage | " + " | ".join(CONDITIONS) + " |"
    rule = "|---|---|" + "---|" * len(CONDITIONS)
    rows = [
        f"| {r['model']} | {r['level']} | "
        + " | ".join(
            f"{100 * c['accuracy']:.1f} % ({100 * c['label_changed']:.1f} %)"
            for c in (r["conditions"][name] for name in CONDITIONS)
        )
        + " |"
        for r in results
    ]
    return "\n".join([head, rule, *rows])
