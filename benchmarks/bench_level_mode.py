"""Per window or per session: which level scaling serves a level-stage model best.

The level stage (``FeatureConfig.level = "window"``, app/features.py) scales every model window
to one speech level on its own. The alternative is one gain per recording or stream session,
from the speech level of all of it, which removes the microphone's gain but keeps a speaker's
own louder-when-angry dynamics. This measures both on a split's test rows, with each speaker's
test clips taken as one session (one recording of that speaker, at one gain):

- ``window``: the served stage, each clip's window at the target level;
- ``session``: every window of a speaker scaled by the one gain that puts the speaker's session
  (the loudest quarter of all its frames) at the target, bounded as the stage bounds it;
- ``session, -20 dB`` and ``window, -20 dB``: the same with the whole session 20 dB quieter
  (checks that both remove a microphone's gain).

Each condition's accuracy, UAR, arousal UAR and the share of labels that differ from
``window``. Usage::

    python -m benchmarks.bench_level_mode [--model models/ser-ce.onnx] [--split ...]

Results go to ``benchmarks/results/level_mode.json`` and ``level_mode.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from app.features import (
    FeatureConfig,
    emphasise,
    frame_mel,
    frame_power,
    frames_of,
    level_gain,
    mel_features,
)
from app.labels import LABEL_INDEX
from benchmarks.record import RESULTS, header, write
from training.corpora import corpus_root
from training.evaluate import evaluate_onnx_features
from training.export import read_metadata
from training.segments import load_segments
from training.splits import read_split

DEFAULT_DATA = Path("../shared/data/ser-corpus")


def session_features(
    waves: np.ndarray, sessions: np.ndarray, config: FeatureConfig, per_window: bool
) -> np.ndarray:
    """Features of each window with its own level gain, or its session's one gain."""
    mel = frame_mel(frames_of(emphasise(waves, config), config), config)  # (n, frames, mels)
    power = frame_power(frames_of(waves, config))  # (n, frames)
    if per_window:
        return mel_features(mel, config, level_gain(power, config))
    gains = np.ones(len(waves), dtype=np.float32)
    for session in set(sessions.tolist()):
        rows = np.flatnonzero(sessions == session)
        gains[rows] = level_gain(power[rows].reshape(-1), config)  # all its frames: one level
    return mel_features(mel, config, gains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/ser-ce.onnx"))
    parser.add_argument("--split", type=Path, default=Path("models/splits/random.csv"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/segments"))
    args = parser.parse_args()

    config = read_metadata(args.model).feature_config
    if config.level != "window":
        raise SystemExit(f"{args.model} has no level stage (level: {config.level})")
    clips = [clip for clip, part in read_split(args.split) if part == "test"]
    waves = load_segments(clips, corpus_root(args.data), config, args.cache_dir, workers=1).waves
    truth = np.array([LABEL_INDEX[c.emotion] for c in clips])
    sessions = np.array([f"{c.dataset}/{c.speaker}" for c in clips])
    quiet = waves * np.float32(0.1)
    conditions = {
        "window": session_features(waves, sessions, config, per_window=True),
        "session": session_features(waves, sessions, config, per_window=False),
        "window, -20 dB": session_features(quiet, sessions, config, per_window=True),
        "session, -20 dB": session_features(quiet, sessions, config, per_window=False),
    }
    results: dict[str, Any] = {
        **header("bench_level_mode"),
        "model": args.model.name,
        "n": len(clips),
        "sessions": len(set(sessions.tolist())),
    }
    reference = None
    lines = [
        f"`{args.model.name}`, {len(clips)} test clips of `{args.split.name}` in "
        f"{results['sessions']} speaker sessions.\n",
        "| scaling | accuracy % | UAR | arousal UAR | labels changed vs window |",
        "|---|---|---|---|---|",
    ]
    for name, features in conditions.items():
        evaluation = evaluate_onnx_features(args.model, features, truth)
        predicted = evaluation.probabilities.argmax(axis=-1)
        reference = predicted if reference is None else reference
        m = evaluation.metrics
        row = {
            "accuracy": round(m["accuracy"], 4),
            "uar": round(m["uar"], 4),
            "arousal_uar": round(m["arousal_uar"], 4),
            "changed_vs_window": round(float(np.mean(predicted != reference)), 4),
        }
        results[name] = row
        lines.append(
            f"| {name} | {100 * row['accuracy']:.2f} | {row['uar']:.4f} | "
            f"{row['arousal_uar']:.4f} | {100 * row['changed_vs_window']:.1f} % |"
        )
    markdown = "\n".join(lines)
    write(RESULTS / "level_mode", results, markdown)


if __name__ == "__main__":
    main()
