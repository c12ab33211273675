"""Image-blind references: what a writer that never looks at the image scores.

A trained model's F1 is read against these floors. Each writes the *same* labels for every
study, chosen from the training split only:

* ``best_fixed_report``: the best fixed report of the training split: among the label sets that
  training reports state, the one whose constant prediction has the highest micro F1 on the
  training split (on the demo world: normal with a support device; often the normal report);
* ``all_positive``: every one of the 14 observations stated positive;
* ``majority``: each observation positive where most training reports state it positive.

>>> train = [{"No Finding": 1}, {"No Finding": 1}, {"Edema": 1, "Cardiomegaly": 1}]
>>> refs = image_blind_references(train, train)
>>> refs["best_fixed_report"]["labels"]
{'No Finding': 1}
>>> round(refs["best_fixed_report"]["f1"], 3)
0.571
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from orapo.metrics.clinical import binarize, confusion_counts, prf_from_counts
from orapo.observations import OBSERVATIONS, Label

#: Names of the references, in the order tables show them.
REFERENCES: tuple[str, ...] = ("best_fixed_report", "all_positive", "majority")


def _micro_prf(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(O,) bool prediction for every report, (N, O) bool references -> (P, R, F1)."""
    counts = confusion_counts(np.broadcast_to(pred, ref.shape), ref).sum(0)
    return prf_from_counts(counts)


def image_blind_references(
    train_labels: Sequence[Mapping[str, Label]],
    test_labels: Sequence[Mapping[str, Label]],
    protocol: str = "positive",
) -> dict[str, dict[str, Any]]:
    """Each reference's fixed labels and its micro P/R/F1 (all 14) on ``test_labels``."""
    if not train_labels or not test_labels:
        raise ValueError("image_blind_references needs training and test labels")
    train = binarize(train_labels, protocol, side="train_labels")  # (N, 14)
    test = binarize(test_labels, protocol, side="test_labels")  # (M, 14)
    candidates = np.unique(train, axis=0)  # the label sets training reports state
    scores = [_micro_prf(c, train)[2] for c in candidates]
    fixed = {
        "best_fixed_report": candidates[int(np.argmax(scores))],
        "all_positive": np.ones(len(OBSERVATIONS), dtype=bool),
        "majority": train.mean(0) > 0.5,
    }
    out = {}
    for name in REFERENCES:
        p, r, f1 = _micro_prf(fixed[name], test)
        out[name] = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f1),
            "protocol": f"{protocol}/all14/micro",
            "labels": {o: 1 for o, on in zip(OBSERVATIONS, fixed[name], strict=True) if on},
        }
    return out
