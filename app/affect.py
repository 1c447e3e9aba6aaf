"""Arousal and valence: two continuous scores read from the eight emotion probabilities.

Each label sits on Russell's circumplex of affect (J. A. Russell, "A circumplex model of
affect", Journal of Personality and Social Psychology 39(6), 1161-1178, 1980) at the angle his
direct-scaling study gave the matching adjective, on the unit circle: valence (displeasure ->
pleasure) is the cosine, arousal (sleepiness -> arousal) the sine. A prediction's scores are
the probability-weighted mean of its labels' points, so both lie in [-1, 1]:

======== ================== ======= ======= =========
label    Russell's term     angle   valence arousal
======== ================== ======= ======= =========
neutral  (the centre)       -        0.00    0.00
calm     calm               316.2    0.72   -0.69
happy    happy                7.8    0.99    0.14
sad      sad                207.5   -0.89   -0.46
angry    angry               99.1   -0.16    0.99
fearful  afraid             116.8   -0.45    0.89
disgust  (none: see below)  150.0   -0.87    0.50
surprised astonished         69.8    0.35    0.94
======== ================== ======= ======= =========

Disgust is not among Russell's 28 adjectives. We place it at 150 degrees, between his
"frustrated" (141.0) and "miserable" (188.7): clearly unpleasant and moderately aroused, as
dimensional ratings of disgust usually come out. That one placement is our judgement, not his.

The binary measures the evaluation reports (training/evaluate.py) use the decision, i.e. the
top label, mapped by :data:`AROUSAL_CLASS` and :data:`VALENCE_CLASS`: high arousal is angry,
happy, fearful, surprised (and disgust), low is neutral, calm, sad; clips labelled disgust are
left out of the arousal score, its arousal being the least agreed on. Valence has three classes,
negative (sad, angry, fearful, disgust), neutral, positive (calm, happy, surprised).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from app.labels import LABELS

CIRCUMPLEX_DEGREES: Final[dict[str, float | None]] = {
    "neutral": None,  # the origin
    "calm": 316.2,
    "happy": 7.8,
    "sad": 207.5,
    "angry": 99.1,
    "fearful": 116.8,
    "disgust": 150.0,
    "surprised": 69.8,
}


def _point(label: str) -> tuple[float, float]:
    degrees = CIRCUMPLEX_DEGREES[label]
    if degrees is None:
        return 0.0, 0.0
    radians = math.radians(degrees)
    return math.cos(radians), math.sin(radians)


# (n_labels, 2): each label's (valence, arousal), in LABELS order.
COORDINATES: Final[np.ndarray] = np.array([_point(label) for label in LABELS], dtype=np.float64)
COORDINATES.setflags(write=False)

AROUSAL_CLASS: Final[dict[str, str]] = {
    "neutral": "low",
    "calm": "low",
    "sad": "low",
    "happy": "high",
    "angry": "high",
    "fearful": "high",
    "surprised": "high",
    "disgust": "high",
}
AROUSAL_EXCLUDED: Final[frozenset[str]] = frozenset({"disgust"})  # true labels not scored
VALENCE_CLASS: Final[dict[str, str]] = {
    "neutral": "neutral",
    "calm": "positive",
    "happy": "positive",
    "surprised": "positive",
    "sad": "negative",
    "angry": "negative",
    "fearful": "negative",
    "disgust": "negative",
}
AFFECT_DECIMALS: Final[int] = 4
AROUSAL_HELP: Final[str] = (
    "-1 (sleepy, calm) .. +1 (aroused): the probabilities on Russell's circumplex"
)
VALENCE_HELP: Final[str] = (
    "-1 (unpleasant) .. +1 (pleasant): the probabilities on Russell's circumplex"
)


def valence_arousal(probabilities: np.ndarray) -> np.ndarray:
    """``(..., n_labels)`` probabilities -> ``(..., 2)`` float64 (valence, arousal), each in
    [-1, 1]: the probability-weighted mean of the labels' circumplex points."""
    return np.asarray(probabilities, dtype=np.float64) @ COORDINATES


def affect_of(probabilities: np.ndarray) -> tuple[float, float]:
    """One prediction's ``(arousal, valence)``, rounded to :data:`AFFECT_DECIMALS`."""
    valence, arousal = valence_arousal(probabilities)
    return round(float(arousal), AFFECT_DECIMALS), round(float(valence), AFFECT_DECIMALS)
