"""Each corpus's label set: a clip's loss ranges over its corpus's classes only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.contract import LOSSES
from app.labels import LABEL_INDEX, LABELS
from training.labelsets import corpus_label_sets, describe, restrict
from training.losses import make_loss


def test_label_sets_are_read_from_the_training_labels() -> None:
    groups = np.array(["turev", "turev", "nemo", "turev", "nemo"])
    labels = np.array([LABEL_INDEX[e] for e in ("calm", "sad", "neutral", "angry", "sad")])
    sets = corpus_label_sets(groups, labels, len(LABELS))
    assert sets.shape == (5, 8)
    turev = {LABELS[i] for i in np.flatnonzero(sets[0])}
    assert turev == {"calm", "sad", "angry"}
    assert (sets[1] == sets[0]).all() and (sets[4] == sets[2]).all()
    assert describe(groups, labels, LABELS) == {
        "nemo": ["neutral", "sad"],
        "turev": ["calm", "sad", "angry"],
    }


@pytest.mark.parametrize("loss_name", LOSSES)
def test_classes_outside_the_set_get_no_gradient(loss_name: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 8, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 4, 1, 3])
    allowed = torch.zeros(6, 8, dtype=torch.bool)
    allowed[:, 1:5] = True  # a corpus of calm, happy, sad, angry (TurEV-DB's)
    loss = make_loss(loss_name)(restrict(logits, allowed), targets)
    assert torch.isfinite(loss)
    loss.backward()
    grad = logits.grad
    assert grad is not None
    assert (grad[~allowed] == 0).all()
    assert (grad[allowed].abs() > 0).any()


def test_restricted_ce_is_ce_over_the_corpus_classes() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, 8)
    targets = torch.tensor([0, 2, 3, 4, 0])
    allowed = torch.zeros(5, 8, dtype=torch.bool)
    allowed[:, [0, 2, 3, 4]] = True  # neutral, happy, sad, angry (emotiontts)
    restricted = make_loss("ce")(restrict(logits, allowed), targets)
    sub = logits[:, [0, 2, 3, 4]]
    expected = F.cross_entropy(sub, torch.tensor([0, 1, 2, 3, 0]))
    torch.testing.assert_close(restricted, expected)
    # The plain loss differs: it also pushes down the four classes this corpus lacks.
    assert not torch.allclose(make_loss("ce")(logits, targets), expected)
