"""A split's features kept on disk, so that another loss, a recipe variant that trains on the
same features, or a rerun of the same split does not compute them again.

What :func:`training.pipeline.prepare_split` computes depends on the split file, the front-end,
the augmentation settings and seed, the libraries that decode, resample and transform, and the
code itself. The entry's key hashes all of these (the code by the bytes of its modules), so any
change makes a new entry instead of reusing a stale one. An entry holds the normalised training
pool (float16, noisy copies included), each pool row's label and source clip, the validation and
test features (float32) and the per-band statistics: about 3.4 GB for the seven-corpus random
split. Entries are never evicted; ``rm -rf .cache/features`` frees them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import numpy as np

from app.features import FeatureConfig
from training.config import TrainConfig

ROOT: Final[Path] = Path(__file__).resolve().parent.parent
# Every module (and asset) whose change can change a split's features.
SOURCES: Final[tuple[str, ...]] = (
    "app/audio.py",
    "app/features.py",
    "app/segment.py",
    "app/windows.py",
    "app/assets/mel_filters.npz",
    "training/augment.py",
    "training/channel.py",
    "training/featurecache.py",
    "training/featureset.py",
    "training/pipeline.py",
    "training/segments.py",
)
LIBRARIES: Final[tuple[str, ...]] = ("numpy", "soundfile", "soxr")
ARRAYS: Final[tuple[str, ...]] = (
    "train_x",  # (versions * n_train, n_mels, frames) float16, normalised
    "train_labels",  # (versions * n_train,) int64
    "train_source",  # (versions * n_train,) int64: the split file row each came from
    "val_x",  # (n_val, n_mels, frames) float32, normalised
    "test_x",
    "mean",  # (n_mels,) the training pool's per-band statistics
    "std",
)


def entry_key(split_sha256: str, features: FeatureConfig, train: TrainConfig) -> str:
    """The hex key of a split's features under this front-end, augmentation and code."""
    recipe = {
        "split_sha256": split_sha256,
        "features": features.without_stats().to_dict(),
        "seed": train.seed,
        "noisy_copies": train.noisy_copies,
        "snr_db": list(train.snr_db),
        "channel_augment": list(train.channel_augment),
        "channel_prob": train.channel_prob,
        "libraries": {name: importlib.metadata.version(name) for name in LIBRARIES},
        "sources": {name: _digest(ROOT / name) for name in SOURCES},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def load(folder: Path) -> dict[str, np.ndarray] | None:
    """The entry in ``folder``, or None where there is none (or it is incomplete)."""
    if not all((folder / f"{name}.npy").is_file() for name in ARRAYS):
        return None
    return {name: np.load(folder / f"{name}.npy") for name in ARRAYS}


def save(folder: Path, arrays: dict[str, Any]) -> str | None:
    """Write an entry to ``folder`` whole or not at all (a killed run leaves no half entry);
    returns why it was not written (a full disk: the run goes on without it), else None."""
    staging: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        for name in ARRAYS:
            np.save(staging / f"{name}.npy", np.asarray(arrays[name]))
        os.replace(staging, folder)  # atomic
    except OSError as e:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if load(folder) is None:  # else another run wrote the same entry first
            return f"{type(e).__name__}: {e}"
    return None
