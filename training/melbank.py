"""Freeze librosa's mel filterbank into ``app/assets/mel_filters.npz``.

Serving computes features with numpy alone; this is the one place the filterbank is designed.
``python -m training freeze-mel`` adds the bank for the default FeatureConfig (or a given one).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np

from app.features import MEL_ASSET, FeatureConfig, mel_asset_key

ASSET_PATH = Path(__file__).resolve().parent.parent / "app" / "assets" / MEL_ASSET


def design_mel_filters(config: FeatureConfig) -> np.ndarray:
    """The (n_mels, n_fft // 2 + 1) Slaney mel filterbank, float32."""
    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        htk=False,
        norm="slaney",
        dtype=np.float32,
    )


def freeze(config: FeatureConfig, path: Path = ASSET_PATH) -> str:
    """Add (or refresh) the bank for ``config`` in the asset file; returns its key."""
    banks: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as existing:
            banks = {key: existing[key] for key in existing.files}
    key = mel_asset_key(config)
    banks[key] = design_mel_filters(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **banks)  # type: ignore[arg-type]
    return key
