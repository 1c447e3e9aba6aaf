"""Each corpus's label set, and the loss restricted to it.

Not every corpus has every class (TurEV-DB has no neutral, four corpora have no disgust, only
RAVDESS and TurEV-DB have calm). Trained on the mixture with the plain loss, a clip of a corpus
without class ``k`` pushes ``k`` down, and the model can learn a corpus cue ("this voice is
never neutral") instead of an emotion. With ``TrainConfig.label_sets == "corpus"`` each
training clip's logits are restricted to its corpus's classes before the loss: the other
classes get :data:`MASKED_LOGIT`, so for every one of the four losses they take no probability
(softmax), add nothing to the target comparison and receive no gradient (their sigmoid, for
BCE, is 0 against a 0 target). Served models are unchanged: the mask is training-only.

A corpus's classes are the labels of its training clips, not a table typed here: a user's own
corpus gets its label set the same way.
"""

from __future__ import annotations

import numpy as np
import torch

# Far below any trained logit, and finite: -inf would give 0 * inf = NaN in BCE and L1.
MASKED_LOGIT = -1.0e4


def corpus_label_sets(groups: np.ndarray, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """``(n, n_labels)`` bool: row ``i`` marks the classes that clip ``i``'s corpus
    (``groups[i]``) has among these clips' ``labels`` (index ``(n,)``)."""
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} corpora for {len(labels)} labels")
    names, inverse = np.unique(groups, return_inverse=True)
    present = np.zeros((len(names), n_labels), dtype=bool)
    present[inverse, labels] = True
    return present[inverse]


def restrict(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """``logits (B, n_labels)`` with the classes outside each row's ``allowed`` set masked."""
    return logits.masked_fill(~allowed, MASKED_LOGIT)


def describe(groups: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, list]:
    """Each corpus's label set by name, for records and the model card."""
    out: dict[str, list] = {}
    for corpus in sorted(set(groups.tolist())):
        present = sorted(set(labels[groups == corpus].tolist()))
        out[str(corpus)] = [names[i] for i in present]
    return out
