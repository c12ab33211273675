"""The 14 CheXpert observations, their label states, and the No Finding rule.

Every part of orapo that speaks of findings (the synthetic world, the labeler, the rewards,
the metrics, the dataset converters) uses the names, order and states defined here.

Label states (the CheXpert convention):

====================  ======  ==============================================
state                 value   meaning
====================  ======  ==============================================
positive              ``1``   the report says the finding is present
negative              ``0``   the report says the finding is absent
uncertain             ``-1``  the report hedges ("possible", "cannot exclude")
not mentioned         None    the report does not speak of it (CSV: blank)
====================  ======  ==============================================

A *label dict* maps observation names to states; a *label vector* is the same information as a
tuple in canonical order, with ``None`` for not mentioned. ``O = 14`` in shape comments
everywhere in orapo.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"

#: The 14 observations in CheXpert's canonical order.
OBSERVATIONS: tuple[str, ...] = (
    NO_FINDING,
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    SUPPORT_DEVICES,
)

#: The 5-observation subset used by CheXbert-style "top5" metrics.
TOP5: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: Named observation sets, for metrics and CLI options.
OBSERVATION_SETS: dict[str, tuple[str, ...]] = {"all14": OBSERVATIONS, "top5": TOP5}

POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1
#: The valid label states; ``None`` is "not mentioned".
STATES: tuple[int | None, ...] = (POSITIVE, NEGATIVE, UNCERTAIN, None)

Label = int | None
LabelDict = dict[str, Label]

_INDEX = {name: i for i, name in enumerate(OBSERVATIONS)}
_LOWER = {name.lower(): name for name in OBSERVATIONS}


def index(name: str) -> int:
    """Position of observation ``name`` in :data:`OBSERVATIONS` (exact, case-sensitive name)."""
    try:
        return _INDEX[name]
    except KeyError:
        raise KeyError(unknown_observation_message(name)) from None


def canonical_name(name: str) -> str:
    """Return the canonical spelling of ``name``, matching case-insensitively.

    >>> canonical_name("pleural effusion")
    'Pleural Effusion'
    """
    try:
        return _LOWER[name.strip().lower()]
    except KeyError:
        raise KeyError(unknown_observation_message(name)) from None


def unknown_observation_message(name: str) -> str:
    return f"unknown observation {name!r}; valid names are: {', '.join(OBSERVATIONS)}"


def parse_state(value: object) -> Label:
    """Normalise one label value to ``1``, ``0``, ``-1`` or ``None``.

    Accepts the forms datasets use: ints, floats (``1.0``, ``-1.0``, NaN for blank), bools,
    the strings ``"1"``, ``"1.0"``, ``"-1"``, ``""`` and ``None``. Raises ``ValueError`` for
    anything else, naming the value.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return None
        if value in (1, 0, -1):
            return int(value)
        raise ValueError(f"label value {value!r} is not one of 1, 0, -1 or blank")
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in ("nan", "none", "null"):
            return None
        try:
            return parse_state(float(text))
        except ValueError:
            raise ValueError(f"label value {value!r} is not one of 1, 0, -1 or blank") from None
    raise ValueError(f"label value {value!r} of type {type(value).__name__} is not a label state")


def empty_labels() -> LabelDict:
    """A label dict with every observation not mentioned."""
    return {name: None for name in OBSERVATIONS}


def labels_to_vector(labels: Mapping[str, Label]) -> tuple[Label, ...]:
    """Label dict -> tuple of length O in canonical order; missing names are ``None``.

    Unknown names raise ``KeyError`` listing the valid ones.
    """
    for name in labels:
        if name not in _INDEX:
            raise KeyError(unknown_observation_message(name))
    return tuple(labels.get(name) for name in OBSERVATIONS)


def vector_to_labels(vector: Sequence[Label]) -> LabelDict:
    """Tuple or list of length O in canonical order -> label dict with all 14 names."""
    if len(vector) != len(OBSERVATIONS):
        raise ValueError(f"a label vector has {len(OBSERVATIONS)} entries, got {len(vector)}")
    return {name: parse_state(v) for name, v in zip(OBSERVATIONS, vector, strict=True)}


def positives(labels: Mapping[str, Label], *, uncertain_positive: bool = False) -> set[str]:
    """Names whose state counts as present: 1, and -1 too when ``uncertain_positive``."""
    wanted = (POSITIVE, UNCERTAIN) if uncertain_positive else (POSITIVE,)
    return {name for name, state in labels.items() if state in wanted}


def apply_no_finding_rule(labels: Mapping[str, Label]) -> LabelDict:
    """Return a copy of ``labels`` with No Finding set by CheXpert's rule, plus one condition.

    CheXpert: No Finding is positive (1) when no observation other than No Finding and Support
    Devices is positive or uncertain; otherwise it is not mentioned (None). It is never 0 or -1.

    orapo adds: the text must speak of the chest at all, i.e. at least one observation is
    mentioned in any state, or the input already marks No Finding positive (a labeler does so
    for global statements such as "normal chest radiograph"). A text that mentions nothing (a
    caption, a refusal, garbage) asserts no finding at all and gets No Finding None, not 1. On
    real reports this never differs from CheXpert, which always see a mention; it matters for
    generated text, where CheXpert's rule would reward saying nothing clinical with a correct
    No Finding fact. All 14 names are present in the result.

    >>> apply_no_finding_rule({"Cardiomegaly": 0})["No Finding"]
    1
    >>> apply_no_finding_rule({"Cardiomegaly": -1})["No Finding"] is None
    True
    >>> apply_no_finding_rule({})["No Finding"] is None
    True
    """
    out = empty_labels()
    out.update(labels_to_dict_checked(labels))
    abnormal = any(
        out[name] in (POSITIVE, UNCERTAIN)
        for name in OBSERVATIONS
        if name not in (NO_FINDING, SUPPORT_DEVICES)
    )
    speaks = out[NO_FINDING] == POSITIVE or any(
        out[name] is not None for name in OBSERVATIONS if name != NO_FINDING
    )
    out[NO_FINDING] = POSITIVE if speaks and not abnormal else None
    return out


def labels_to_dict_checked(labels: Mapping[str, object]) -> LabelDict:
    """Validate names and normalise states; returns a new dict (only the given names)."""
    out: LabelDict = {}
    for name, value in labels.items():
        if name not in _INDEX:
            raise KeyError(unknown_observation_message(name))
        out[name] = parse_state(value)
    return out


def format_labels(labels: Mapping[str, Label], names: Iterable[str] = OBSERVATIONS) -> str:
    """Short human-readable form: ``"Cardiomegaly+, Edema?, Pneumothorax-"``."""
    mark = {POSITIVE: "+", NEGATIVE: "-", UNCERTAIN: "?"}
    parts = [f"{name}{mark[labels[name]]}" for name in names if labels.get(name) is not None]
    return ", ".join(parts) if parts else "(nothing mentioned)"
