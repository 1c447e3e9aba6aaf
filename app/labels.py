"""The eight emotion labels, in the one order used everywhere (model output, JSON, plots)."""

from typing import Final

LABELS: Final[tuple[str, ...]] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
N_LABELS: Final[int] = len(LABELS)
LABEL_INDEX: Final[dict[str, int]] = {label: i for i, label in enumerate(LABELS)}
