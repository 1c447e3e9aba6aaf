"""The contract between the training package and the server: ONNX tensor names and metadata.

An exported model has one float32 input ``features`` of shape ``(batch, n_mels, frames)``
(log-mel features from :func:`app.features.log_mel`, normalised with the statistics in its
FeatureConfig) and one float32 output ``logits`` of shape ``(batch, n_labels)``. Its ONNX
``metadata_props`` hold one key, ``ser_metadata``: the JSON of :class:`ModelMetadata`.

How logits become the served probabilities (always summing to 1) depends on the loss the
model was trained with and on its calibration temperature, see :func:`probabilities`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import numpy as np

from app.features import FeatureConfig
from app.labels import LABELS

INPUT_NAME: Final[str] = "features"
OUTPUT_NAME: Final[str] = "logits"
METADATA_KEY: Final[str] = "ser_metadata"
SCHEMA_VERSION: Final[int] = 1
# Probabilities in every response (/predict, streams) carry this many decimals; a label's
# confidence is its rounded probability, so the two always agree exactly.
PROBABILITY_DECIMALS: Final[int] = 6

Loss = Literal["ce", "bce", "smoothl1", "l1"]
LOSSES: Final[tuple[str, ...]] = get_args(Loss)


class MetadataError(ValueError):
    """Model metadata that is missing, malformed or incompatible with this server."""


@dataclass(frozen=True)
class ModelMetadata:
    name: str  # e.g. "ser-ce"
    loss: Loss
    architecture: str  # "sequential" or "parallel" (see training/model.py)
    version: str
    labels: tuple[str, ...]
    feature_config: FeatureConfig
    git_commit: str = "unknown"
    split_sha256: str = ""  # hash of the split file the metrics were measured on
    metrics: dict[str, Any] = field(default_factory=dict)  # test metrics and the like
    # Calibration: the served probabilities are softmax(scores / temperature), fitted on the
    # validation split (training/calibrate.py); 1.0 = uncalibrated.
    temperature: float = 1.0
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise MetadataError(f"temperature must be a positive number, got {self.temperature}")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """This model's served probabilities for its ``logits`` (see :func:`probabilities`)."""
        return probabilities(logits, self.loss, self.temperature)

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema_version": self.schema_version,
                "name": self.name,
                "loss": self.loss,
                "architecture": self.architecture,
                "version": self.version,
                "labels": list(self.labels),
                "feature_config": self.feature_config.to_dict(),
                "git_commit": self.git_commit,
                "split_sha256": self.split_sha256,
                "metrics": self.metrics,
                "temperature": self.temperature,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            data = json.loads(text)
            if data.get("schema_version") != SCHEMA_VERSION:
                raise MetadataError(
                    f"metadata schema {data.get('schema_version')!r} is not {SCHEMA_VERSION}"
                )
            if data["loss"] not in LOSSES:
                raise MetadataError(f"unknown loss {data['loss']!r}; expected one of {LOSSES}")
            return cls(
                name=str(data["name"]),
                loss=data["loss"],
                architecture=str(data["architecture"]),
                version=str(data["version"]),
                labels=tuple(data["labels"]),
                feature_config=FeatureConfig.from_dict(data["feature_config"]),
                git_commit=str(data.get("git_commit", "unknown")),
                split_sha256=str(data.get("split_sha256", "")),
                metrics=dict(data.get("metrics", {})),
                temperature=float(data.get("temperature", 1.0)),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
            if isinstance(e, MetadataError):
                raise
            raise MetadataError(f"malformed model metadata: {e!r}") from e

    def to_onnx_props(self) -> dict[str, str]:
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_onnx_props(cls, props: dict[str, str]) -> ModelMetadata:
        if METADATA_KEY not in props:
            raise MetadataError(f"the model has no '{METADATA_KEY}' metadata entry")
        return cls.from_json(props[METADATA_KEY])

    def check_compatible(self, config: FeatureConfig, labels: tuple[str, ...] = LABELS) -> None:
        """Raise MetadataError unless this model computes on ``config``'s features and labels.

        The level stage is the model's own (each model's windows are featurised with its own
        config), so only the frames, filterbank and windows have to match."""
        if self.labels != labels:
            raise MetadataError(f"model labels {self.labels} differ from the server's {labels}")
        if not self.feature_config.without_level().same_transform(config.without_level()):
            mine = self.feature_config.without_level().without_stats().to_dict()
            theirs = config.without_level().without_stats().to_dict()
            diff = {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}
            raise MetadataError(f"model FeatureConfig differs from the server's: {diff}")
        if not self.feature_config.normalised:
            raise MetadataError("model FeatureConfig carries no normalisation statistics")


def probabilities(logits: np.ndarray, loss: Loss, temperature: float = 1.0) -> np.ndarray:
    """Map a model's logits (..., n_labels) to probabilities that sum to 1.

    The probabilities are ``softmax(scores / temperature)``, where the scores are:

    - ce, l1, smoothl1: the logits. CE is trained on their softmax directly; L1 and SmoothL1 are
      trained on the softmax probabilities against one-hot targets, so softmax is their output
      too.
    - bce: ``log sigmoid(logits)``: each logit was trained as an independent sigmoid
      (one-vs-rest); at temperature 1 this renormalises the sigmoids to sum to 1, which keeps
      their order and relative sizes.

    A temperature above 1 softens the distribution and below 1 sharpens it; it never changes
    which label is on top.
    """
    # Work in log space so that no logit, however large, overflows or gives 0/0.
    z = log_scores(logits, loss) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


def log_scores(logits: np.ndarray, loss: Loss) -> np.ndarray:
    """The scores whose softmax gives a model's probabilities (float64; see
    :func:`probabilities`): the logits, or for ``bce`` their log-sigmoids."""
    z = np.asarray(logits, dtype=np.float64)
    return -np.logaddexp(0.0, -z) if loss == "bce" else z


def by_label(p: np.ndarray) -> dict[str, float]:
    """Probabilities ``(n_labels,)`` keyed by label, rounded to :data:`PROBABILITY_DECIMALS`."""
    return {
        label: round(float(v), PROBABILITY_DECIMALS) for label, v in zip(LABELS, p, strict=True)
    }


def top_label(p: np.ndarray) -> tuple[str, float]:
    """The most probable label of ``p`` and its rounded probability (its ``by_label`` value)."""
    index = int(np.argmax(p))
    return LABELS[index], round(float(p[index]), PROBABILITY_DECIMALS)
