"""The silence trim shared by training and ``/predict``.

The paper trims leading and trailing silence with ``librosa.effects.trim`` and keeps a fixed
3.5 s segment from the new start, zero-padding shorter clips (that window is
:func:`app.windows.training_segment`). :func:`trim_bounds` reproduces
``librosa.effects.trim(y, top_db, frame_length, hop_length)`` (default ``ref=np.max``) with
numpy alone, so the server does not need librosa:

1. frame RMS over ``trim_frame_length`` samples every ``trim_hop_length``, with the signal
   zero-padded by ``trim_frame_length // 2`` on both sides (librosa's ``center=True``)
2. level of each frame in dB relative to the loudest frame; with ``trim_floor="absolute"``
   both are first floored at an amplitude of 1e-5 (librosa's ``amplitude_to_db`` ``amin``)
3. frames louder than ``-trim_top_db`` dB are speech; the kept span runs from the first speech
   frame's start to the last speech frame's end, in samples, clipped to the signal

The floor. librosa's ``amin`` is an absolute level, -100 dB of power: a clip whose loudest
frame is below -40 dBFS has its threshold (the loudest frame less 60 dB) under that floor, and
then every frame counts as speech, digital silence included, and nothing is trimmed. So the
trim, and with it where the model's window starts, depended on the recording's level: 103 of
the corpus's 4718 clips (all RAVDESS, the quiet ones) kept up to 0.99 s of silence at a side, and
scaling the random split's test clips by -20 dB moved the trim of 89 of its 471 (measured on
2026-12-05; the model card has the effect on labels). With
``trim_floor="relative"`` (the release since 2026-12-05) there is no absolute floor: a frame is
speech when its power is within ``trim_top_db`` of the loudest frame's, so a clip and the same
clip x 0.01 get the same bounds. ``"absolute"`` (the default, so every older model file keeps
exactly the trim it was trained with) is librosa's.

One deliberate difference: digital silence (no non-zero sample) gives ``(0, 0)``. librosa keeps
the whole clip there, because every frame is 0 dB relative to a zero reference; either way the
resulting window is all zeros.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from app.features import FeatureConfig

_AMIN_POWER = 1e-10  # librosa.amplitude_to_db's amin=1e-5, squared
_RMS_BLOCK_FRAMES = 512  # frames squared at a time: 512 x 2048 float64 = 8 MB


def frame_rms(wave: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of centre-padded frames, as ``librosa.feature.rms(y=wave)``.

    Args:
        wave: mono audio, shape ``(samples,)``.

    Returns:
        float64 array of shape ``(1 + samples // hop_length,)``.
    """
    x = np.asarray(wave)
    half = frame_length // 2
    n_frames = -(-(x.shape[0] + 2 * half - frame_length + 1) // hop_length)
    out = np.empty(max(0, n_frames), dtype=np.float64)
    # A block of frames at a time, each block zero-padded on its own: squaring all of a 600 s
    # clip's frames at once (4x overlapping, float64) would take 300 MB, and padding the whole
    # clip one more copy of it. Each frame is squared and averaged exactly as in one pass.
    for i in range(0, out.shape[0], _RMS_BLOCK_FRAMES):
        j = min(out.shape[0], i + _RMS_BLOCK_FRAMES)
        lo = i * hop_length - half  # the block's first sample, in unpadded coordinates
        block = np.zeros((j - 1 - i) * hop_length + frame_length, dtype=np.float64)
        a, b = max(lo, 0), min(lo + block.shape[0], x.shape[0])
        block[a - lo : b - lo] = x[a:b]
        frames = sliding_window_view(block, frame_length)[::hop_length]
        out[i:j] = np.sqrt(np.mean(frames**2, axis=-1))
    return out


def trim_bounds(wave: np.ndarray, config: FeatureConfig) -> tuple[int, int]:
    """Start and end sample (end exclusive) of ``wave`` once leading/trailing silence is cut.

    Args:
        wave: mono audio at ``config.sample_rate``, shape ``(samples,)``.

    Returns:
        ``(start, end)`` with ``0 <= start <= end <= samples``; ``(0, 0)`` for an empty or
        all-zero signal.
    """
    x = np.asarray(wave)
    if x.ndim != 1:
        raise ValueError(f"trim_bounds needs a mono 1-D wave, got shape {x.shape}")
    if x.size == 0 or not np.any(x):
        return 0, 0
    power = frame_rms(x, config.trim_frame_length, config.trim_hop_length) ** 2
    if config.trim_floor == "relative":
        loud = np.flatnonzero(power > float(power.max()) * 10.0 ** (-config.trim_top_db / 10.0))
    else:
        power_db = 10.0 * np.log10(np.maximum(power, _AMIN_POWER))
        reference_db = 10.0 * np.log10(max(float(power.max()), _AMIN_POWER))
        loud = np.flatnonzero(power_db - reference_db > -config.trim_top_db)
    start = int(loud[0]) * config.trim_hop_length
    end = min(x.shape[0], (int(loud[-1]) + 1) * config.trim_hop_length)
    return start, end
