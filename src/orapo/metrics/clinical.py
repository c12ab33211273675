"""Clinical efficacy: precision, recall and F1 between predicted and reference label dicts.

A labeler (rule-based CheXpert, CheXbert, ...) turns each generated and each reference report
into a *label dict* (observation name -> 1 / 0 / -1 / None, a missing key meaning not
mentioned; see :mod:`orapo.observations`). This module scores the predicted dicts against the
reference dicts in four small steps, each a pure function::

    label dicts --binarize--> (N, O) bool --confusion_counts--> (O, 3) or (N, 3) tp/fp/fn
                --prf_from_counts--> P/R/F1 --average--> micro / macro / example

``N`` reports, ``O`` observations of the chosen set (14 for ``all14``, 5 for ``top5``).
:class:`ClinicalMetrics` accumulates counts over batches (``update`` / ``compute`` /
``reset``); :func:`clinical_scores` is the one-shot form and :func:`clinical_report` computes
the four protocol x observation-set combinations that papers report.

Protocols (which label states count as positive; everything else, blank included, is 0):

=======================  ===============  =================================================
name                     positive states  convention
=======================  ===============  =================================================
``positive``             ``1``            R2Gen "CE" (rule-based CheXpert labeler, -1 -> 0)
``uncertain-positive``   ``1``, ``-1``    CheXbert ``rrg`` mode of f1chexbert
=======================  ===============  =================================================

Averages:

* ``micro``: P/R/F1 of the counts summed over all reports and observations.
* ``macro``: P/R/F1 per observation, then the unweighted mean over the O observations.
* ``example``: P/R/F1 per report over its observations, then the mean over the N reports
  (PromptMRG's "example-based" CE).

Zero denominators (one rule everywhere, scikit-learn's ``zero_division=0``): a ratio whose
denominator is 0 is 0. Precision with no predicted positives is 0, recall with no reference
positives is 0, and F1 = 2 tp / (2 tp + fp + fn) is 0 when tp + fp + fn = 0. Nothing is
excluded from a mean, so

* in ``macro``, an observation with no reference positives and no predicted positives scores
  P = R = F1 = 0 and still counts among the O observations (its ``support`` is 0 in
  ``per_observation``, which flags it);
* in ``example``, a report with no positives on either side scores P = R = F1 = 0 and still
  counts among the N reports (:attr:`ClinicalResult.n_empty_reports` says how many).

This is what ``sklearn.metrics.precision_recall_fscore_support(..., zero_division=0)`` does
for ``average="micro"``, ``"macro"`` and ``"samples"``, what R2Gen and f1chexbert get from
scikit-learn's defaults, and what PromptMRG's example-based code computes (``nan_to_num``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from orapo.observations import (
    OBSERVATION_SETS,
    POSITIVE,
    UNCERTAIN,
    Label,
    parse_state,
    unknown_observation_message,
)

#: Protocol names, in the order reports list them.
PROTOCOLS: tuple[str, ...] = ("positive", "uncertain-positive")
#: Average names, in the order tables show them.
AVERAGES: tuple[str, ...] = ("micro", "macro", "example")

#: Protocol name -> the label states it counts as positive.
POSITIVE_STATES: dict[str, frozenset[int]] = {
    "positive": frozenset({POSITIVE}),
    "uncertain-positive": frozenset({POSITIVE, UNCERTAIN}),
}

_VALID_NAMES = frozenset(OBSERVATION_SETS["all14"])


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is a known protocol name; else ``ValueError`` listing them."""
    if protocol not in POSITIVE_STATES:
        raise ValueError(
            f"unknown clinical protocol {protocol!r}; valid protocols are: {', '.join(PROTOCOLS)}"
        )
    return protocol


def observation_names(observation_set: str) -> tuple[str, ...]:
    """The observation names of a named set (``all14``, ``top5``); else ``ValueError``."""
    try:
        return OBSERVATION_SETS[observation_set]
    except KeyError:
        valid = ", ".join(OBSERVATION_SETS)
        raise ValueError(
            f"unknown observation set {observation_set!r}; valid sets are: {valid}"
        ) from None


# --- step 1: label dicts -> binary matrix -------------------------------------------------


def binarize(
    labels: Sequence[Mapping[str, Label]],
    protocol: str = "positive",
    observation_set: str = "all14",
    *,
    side: str = "labels",
) -> np.ndarray:
    """Label dicts -> (N, O) bool matrix: True where the state counts as positive.

    ``labels[i]`` maps observation names to ``1`` / ``0`` / ``-1`` / ``None`` (values are read
    with :func:`orapo.observations.parse_state`, so ``1.0`` and NaN work too); a missing name is
    not mentioned. Every key must be one of the 14 observation names (exact spelling), even
    those outside ``observation_set``, so a misspelt name is never ignored. ``side`` names the
    argument in error messages (``"preds"``, ``"refs"``).

    >>> binarize([{"Edema": -1, "Cardiomegaly": 1}], "uncertain-positive", "top5").astype(int)
    array([[0, 1, 0, 1, 0]])
    """
    wanted = POSITIVE_STATES[check_protocol(protocol)]
    names = observation_names(observation_set)
    out = np.zeros((len(labels), len(names)), dtype=bool)  # (N, O)
    for i, report in enumerate(labels):
        if not isinstance(report, Mapping):
            raise TypeError(
                f"{side}[{i}] must be a label dict (observation name -> state), "
                f"got {type(report).__name__}"
            )
        states: dict[str, Label] = {}
        for name, value in report.items():
            if name not in _VALID_NAMES:
                raise KeyError(f"{side}[{i}]: {unknown_observation_message(name)}")
            try:
                states[name] = parse_state(value)
            except ValueError as err:
                raise ValueError(f"{side}[{i}][{name!r}]: {err}") from None
        for j, name in enumerate(names):
            out[i, j] = states.get(name) in wanted
    return out


# --- step 2: binary matrices -> confusion counts ------------------------------------------


def confusion_counts(pred: np.ndarray, ref: np.ndarray, axis: int = 0) -> np.ndarray:
    """Two (N, O) bool matrices -> int64 counts with columns (tp, fp, fn).

    ``axis=0`` sums over reports and gives (O, 3), one row per observation; ``axis=1`` sums
    over observations and gives (N, 3), one row per report.

    >>> confusion_counts(np.array([[1, 1, 0]], bool), np.array([[1, 0, 1]], bool))
    array([[1, 0, 0],
           [0, 1, 0],
           [0, 0, 1]])
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and ref must be (N, O) matrices of one shape, got {pred.shape} and {ref.shape}"
        )
    tp = (pred & ref).sum(axis)
    fp = (pred & ~ref).sum(axis)
    fn = (~pred & ref).sum(axis)
    return np.stack([tp, fp, fn], axis=-1).astype(np.int64)


# --- step 3: counts -> precision, recall, F1 ----------------------------------------------


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with 0 where ``den == 0`` (the zero-denominator rule)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def prf_from_counts(counts: np.ndarray) -> np.ndarray:
    """(..., 3) counts (tp, fp, fn) -> (..., 3) float64 (precision, recall, F1).

    P = tp / (tp + fp), R = tp / (tp + fn), F1 = 2 tp / (2 tp + fp + fn) (the harmonic mean of
    P and R, written so it needs no P and R); each is 0 where its denominator is 0.

    >>> prf_from_counts(np.array([[2, 2, 0], [0, 0, 0]])).tolist()
    [[0.5, 1.0, 0.6666666666666666], [0.0, 0.0, 0.0]]
    """
    counts = np.asarray(counts, dtype=np.int64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    precision = safe_divide(tp, tp + fp)
    recall = safe_divide(tp, tp + fn)
    f1 = safe_divide(2 * tp, 2 * tp + fp + fn)
    return np.stack([precision, recall, f1], axis=-1)


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PRF:
    """Precision, recall, F1, and support (the number of reference positives they cover)."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass
class ClinicalResult:
    """Scores of one protocol on one observation set over ``n_reports`` report pairs.

    ``micro`` / ``macro`` / ``example`` are the three averages (see the module docstring);
    their ``support`` is the total number of reference positives. ``per_observation`` maps each
    observation of the set, in canonical order, to its own P/R/F1 and support.
    ``n_empty_reports`` counts reports with no positives in prediction or reference; under the
    zero-denominator rule they score 0 in the ``example`` average.
    """

    protocol: str
    observation_set: str
    n_reports: int
    micro: PRF
    macro: PRF
    example: PRF
    per_observation: dict[str, PRF]
    n_empty_reports: int = 0

    @property
    def name(self) -> str:
        """``"<protocol>/<observation_set>"``, the key :func:`clinical_report` uses."""
        return f"{self.protocol}/{self.observation_set}"

    def average(self, name: str) -> PRF:
        """The PRF of average ``name`` (``micro``, ``macro``, ``example``)."""
        if name not in AVERAGES:
            raise ValueError(f"unknown average {name!r}; valid averages are: {', '.join(AVERAGES)}")
        return getattr(self, name)

    def to_dict(self) -> dict:
        """JSON-ready dict; carries the protocol and observation set names."""
        return {
            "protocol": self.protocol,
            "observation_set": self.observation_set,
            "n_reports": self.n_reports,
            "n_empty_reports": self.n_empty_reports,
            **{avg: self.average(avg).to_dict() for avg in AVERAGES},
            "per_observation": {k: v.to_dict() for k, v in self.per_observation.items()},
        }

    def flat(self, prefix: str = "clinical") -> dict[str, float]:
        """Namespaced scalars for loggers, e.g. ``clinical/positive/all14/micro_f1``."""
        out: dict[str, float] = {}
        for avg in AVERAGES:
            prf = self.average(avg)
            for stat in ("precision", "recall", "f1"):
                out[f"{prefix}/{self.name}/{avg}_{stat}"] = getattr(prf, stat)
        return out


def _prf(row: np.ndarray, support: int) -> PRF:
    return PRF(float(row[0]), float(row[1]), float(row[2]), int(support))


# --- the accumulator ----------------------------------------------------------------------


class ClinicalMetrics:
    """Accumulates confusion counts over batches of (predicted, reference) label dicts.

    ``update`` adds a batch, ``compute`` returns a :class:`ClinicalResult` for everything added
    since the last ``reset``. State is O(O) numbers, whatever the number of reports: per
    observation counts (O, 3) for micro/macro, and for ``example`` the running sum of per-report
    P/R/F1 with the number of reports.

    >>> m = ClinicalMetrics("positive", "top5")
    >>> m.update([{"Edema": 1}], [{"Edema": 1, "Cardiomegaly": 1}])
    >>> m.compute().micro
    PRF(precision=1.0, recall=0.5, f1=0.6666666666666666, support=2)
    """

    def __init__(self, protocol: str = "positive", observation_set: str = "all14") -> None:
        self.protocol = check_protocol(protocol)
        self.observation_set = observation_set
        self.names = observation_names(observation_set)
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self._counts = np.zeros((len(self.names), 3), dtype=np.int64)  # (O, 3)
        self._example_sum = np.zeros(3, dtype=np.float64)  # sum over reports of (P, R, F1)
        self._n_reports = 0
        self._n_empty = 0

    def update(
        self,
        preds: Sequence[Mapping[str, Label]],
        refs: Sequence[Mapping[str, Label]],
    ) -> None:
        """Add a batch: ``preds[i]`` is the label dict of generated report i, ``refs[i]`` of
        its reference. Raises ``ValueError`` when the lengths differ, ``KeyError`` for an
        unknown observation name, ``ValueError`` for a value that is not a label state."""
        if len(preds) != len(refs):
            raise ValueError(
                f"preds and refs must have one label dict per report; got {len(preds)} preds "
                f"and {len(refs)} refs"
            )
        pred = binarize(preds, self.protocol, self.observation_set, side="preds")  # (N, O)
        ref = binarize(refs, self.protocol, self.observation_set, side="refs")  # (N, O)
        self._counts += confusion_counts(pred, ref, axis=0)
        per_report = confusion_counts(pred, ref, axis=1)  # (N, 3)
        self._example_sum += prf_from_counts(per_report).sum(axis=0)
        self._n_reports += len(preds)
        self._n_empty += int((per_report.sum(axis=1) == 0).sum())

    @property
    def n_reports(self) -> int:
        return self._n_reports

    def compute(self) -> ClinicalResult:
        """Scores over everything added since ``reset``; ``ValueError`` if nothing was."""
        if self._n_reports == 0:
            raise ValueError("no reports to score: call update() with at least one report first")
        per_obs = prf_from_counts(self._counts)  # (O, 3)
        support = self._counts[:, 0] + self._counts[:, 2]  # (O,) reference positives
        total = int(support.sum())
        return ClinicalResult(
            protocol=self.protocol,
            observation_set=self.observation_set,
            n_reports=self._n_reports,
            micro=_prf(prf_from_counts(self._counts.sum(axis=0)), total),
            macro=_prf(per_obs.mean(axis=0), total),
            example=_prf(self._example_sum / self._n_reports, total),
            per_observation={
                name: _prf(per_obs[j], support[j]) for j, name in enumerate(self.names)
            },
            n_empty_reports=self._n_empty,
        )


# --- one-shot forms -----------------------------------------------------------------------


def clinical_scores(
    preds: Sequence[Mapping[str, Label]],
    refs: Sequence[Mapping[str, Label]],
    protocol: str = "positive",
    observation_set: str = "all14",
) -> ClinicalResult:
    """Score predicted label dicts against reference label dicts under one protocol."""
    metrics = ClinicalMetrics(protocol, observation_set)
    metrics.update(preds, refs)
    return metrics.compute()


def clinical_report(
    preds: Sequence[Mapping[str, Label]],
    refs: Sequence[Mapping[str, Label]],
) -> dict[str, ClinicalResult]:
    """Every protocol on every observation set, keyed ``"<protocol>/<observation_set>"``:
    ``positive/all14``, ``positive/top5``, ``uncertain-positive/all14``,
    ``uncertain-positive/top5``."""
    out: dict[str, ClinicalResult] = {}
    for protocol in PROTOCOLS:
        for observation_set in OBSERVATION_SETS:
            result = clinical_scores(preds, refs, protocol, observation_set)
            out[result.name] = result
    return out
