"""Arousal and valence from the eight probabilities, and their UARs from a confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from app.affect import COORDINATES, VALENCE_CLASS, affect_of, valence_arousal
from app.labels import LABEL_INDEX, LABELS, N_LABELS
from training.evaluate import affect_uars, classification_metrics


def one_hot(label: str) -> np.ndarray:
    p = np.zeros(N_LABELS)
    p[LABEL_INDEX[label]] = 1.0
    return p


@pytest.mark.parametrize(
    ("label", "arousal_sign", "valence_sign"),
    [("angry", 1, -1), ("happy", 1, 1), ("sad", -1, -1), ("calm", -1, 1), ("fearful", 1, -1)],
)
def test_each_label_sits_in_its_quadrant(label: str, arousal_sign: int, valence_sign: int) -> None:
    arousal, valence = affect_of(one_hot(label))
    assert np.sign(arousal) == arousal_sign and np.sign(valence) == valence_sign


def test_scores_are_the_probability_weighted_mean_of_the_points() -> None:
    p = 0.5 * one_hot("angry") + 0.5 * one_hot("calm")
    expected = 0.5 * COORDINATES[LABEL_INDEX["angry"]] + 0.5 * COORDINATES[LABEL_INDEX["calm"]]
    np.testing.assert_allclose(valence_arousal(p), expected)
    assert affect_of(one_hot("neutral")) == (0.0, 0.0)
    uniform = np.full((3, N_LABELS), 1 / N_LABELS)
    assert valence_arousal(uniform).shape == (3, 2)
    assert np.all(np.abs(valence_arousal(np.eye(N_LABELS))) <= 1.0)


def test_affect_uars_collapse_the_confusion_matrix() -> None:
    truth = np.array([LABEL_INDEX[x] for x in ["angry", "angry", "sad", "sad", "disgust"]])
    # angry -> happy keeps high arousal, but flips valence; sad -> calm keeps low arousal.
    predicted = np.array([LABEL_INDEX[x] for x in ["happy", "angry", "calm", "angry", "calm"]])
    metrics = classification_metrics(truth, predicted)
    # Arousal (disgust's row left out): high 2/2, low 1/2 -> 0.75.
    assert metrics["arousal_uar"] == pytest.approx(0.75)
    # Valence: every clip is negative; 2 of 5 decisions are (angry, angry), the rest positive.
    assert {VALENCE_CLASS[LABELS[t]] for t in truth} == {"negative"}
    assert metrics["valence_uar"] == pytest.approx(2 / 5)
    assert affect_uars(np.zeros((N_LABELS, N_LABELS))) == {
        "arousal_uar": None,
        "valence_uar": None,
    }
