"""Atomic facts and the entailment step: the model's facts -> the 14-way label dict.

A fact (:class:`AtomicFact`) is what the model lists for a report: a short text, the CheXpert
observation it is about (or None for "Other") and its state (1 present, 0 absent,
-1 uncertain). The entailment rules, in order:

1. **Observation**: the answer's ``observation`` string is matched to a canonical name
   (:func:`orapo.observations.canonical_name`, any case) or to a spelling listed in
   ``aliases.yaml`` (``"effusion"`` -> Pleural Effusion). ``"Other"`` and anything unmatched
   give ``observation=None``: the fact is kept (and counted as unmapped when unmatched), it
   gives no label.
2. **State**: ``present`` / ``absent`` / ``uncertain`` (or a listed synonym) -> 1 / 0 / -1.
   Anything else is a schema error (the answer is retried).
3. **Aggregation** per observation, as in the CheXpert labeler: positive beats uncertain beats
   negative ("no effusion" and "small left effusion" -> 1).
4. **No Finding**: a ``("No Finding", present)`` fact is a global-normal statement and enters
   :func:`orapo.observations.apply_no_finding_rule` as ``No Finding = 1``; No Finding facts
   with another state are kept but never labelled (CheXpert's No Finding is never 0 or -1).
   The rule then sets No Finding: positive when nothing but Support Devices is positive or
   uncertain and the report says something; otherwise None.

>>> facts = [AtomicFact("no effusion", "Pleural Effusion", 0),
...          AtomicFact("small left effusion", "Pleural Effusion", 1)]
>>> facts_to_labels(facts)["Pleural Effusion"]
1
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orapo.observations import (
    NEGATIVE,
    NO_FINDING,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    LabelDict,
    apply_no_finding_rule,
    empty_labels,
)

ALIASES_PATH = Path(__file__).with_name("aliases.yaml")
OTHER = "Other"
#: State words of the answer schema and their label values.
STATE_WORDS: dict[str, int] = {"present": POSITIVE, "absent": NEGATIVE, "uncertain": UNCERTAIN}
STATE_NAMES: dict[int, str] = {v: k for k, v in STATE_WORDS.items()}
#: CheXpert aggregation: a higher rank wins (positive > uncertain > negative).
_RANK = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class AtomicFact:
    """One clinical fact of a report.

    ``observation``: one of the 14 names, or None ("Other": about none of them).
    ``state``: 1 present, 0 absent, -1 uncertain. ``source``: ``"llm"`` (the model said it) or
    ``"rule"`` (read off a rule-labeler label dict: hybrid mode or fallback).
    """

    text: str
    observation: str | None
    state: int
    source: str = "llm"

    def to_json(self) -> dict[str, Any]:
        """The answer-schema form: ``{"fact", "observation", "state"}`` (+ ``source``)."""
        return {
            "fact": self.text,
            "observation": self.observation or OTHER,
            "state": STATE_NAMES[self.state],
            "source": self.source,
        }


def _key(word: str) -> str:
    return _SPACES.sub(" ", str(word).strip().lower()).strip(" .:;,")


@functools.lru_cache(maxsize=4)
def load_aliases(path: Path = ALIASES_PATH) -> tuple[dict[str, str | None], dict[str, int]]:
    """``aliases.yaml`` -> (spelling -> canonical name or None for Other, word -> state).

    Raises ``ValueError`` naming the file for an unknown canonical name or state, or a
    spelling listed under two names.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the alias file: {error}") from None
    observations: dict[str, str | None] = {_key(n): n for n in OBSERVATIONS}
    observations[_key(OTHER)] = None
    for name, spellings in (data.get("observations") or {}).items():
        if name != OTHER and name not in OBSERVATIONS:
            raise ValueError(f"{path}: observations: unknown observation {name!r}")
        for spelling in spellings or ():
            _check_str(path, f"observations: {name}", spelling)
            key = _key(spelling)
            target = None if name == OTHER else name
            if key in observations and observations[key] != target:
                raise ValueError(
                    f"{path}: observations: {spelling!r} is listed under "
                    f"{observations[key] or OTHER!r} and {name!r}"
                )
            observations[key] = target
    states: dict[str, int] = dict(STATE_WORDS)
    for word, synonyms in (data.get("states") or {}).items():
        if word not in STATE_WORDS:
            raise ValueError(
                f"{path}: states: unknown state {word!r}; valid: present, absent, uncertain"
            )
        for synonym in synonyms or ():
            _check_str(path, f"states: {word}", synonym)
            states[_key(synonym)] = STATE_WORDS[word]
    return observations, states


def _check_str(path: Path, where: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(
            f"{path}: {where}: {value!r} is not a string (quote it: YAML reads "
            "yes/no/true/false as booleans)"
        )


def map_observation(word: str) -> tuple[str | None, bool]:
    """The answer's observation string -> (canonical name or None, matched?).

    ``("Other", True)`` and unknown words ``(None, False)`` both give no observation.

    >>> map_observation("pleural effusions")
    ('Pleural Effusion', True)
    >>> map_observation("hiatal hernia")
    (None, False)
    """
    observations, _ = load_aliases()
    key = _key(word)
    if key in observations:
        return observations[key], True
    return None, False


def map_state(word: str) -> int | None:
    """The answer's state string -> 1 / 0 / -1, or None when it is not a known state word.

    >>> map_state("Uncertain"), map_state("absent"), map_state("maybe")
    (-1, 0, None)
    """
    return load_aliases()[1].get(_key(word))


def facts_to_labels(facts: Iterable[AtomicFact]) -> LabelDict:
    """Facts -> all 14 observations (rules 3 and 4 of the module docstring)."""
    labels = empty_labels()
    for fact in facts:
        name = fact.observation
        if name is None:
            continue
        if name == NO_FINDING:
            if fact.state == POSITIVE:
                labels[NO_FINDING] = POSITIVE
            continue
        old = labels[name]
        if old is None or _RANK[fact.state] > _RANK[old]:
            labels[name] = fact.state
    return apply_no_finding_rule(labels)


def facts_from_labels(labels: Mapping[str, int | None], source: str = "rule") -> list[AtomicFact]:
    """A label dict -> one fact per mentioned observation (text ``"<name>: <state>"``).

    Used where the labels come from the rule labeler (hybrid mode, fallback), so every result
    has facts of the same type. No Finding appears only when positive.

    >>> facts_from_labels({"Cardiomegaly": 1, "Edema": None})
    [AtomicFact(text='Cardiomegaly: present', observation='Cardiomegaly', state=1, source='rule')]
    """
    out = []
    for name in OBSERVATIONS:
        state = labels.get(name)
        if state is None or (name == NO_FINDING and state != POSITIVE):
            continue
        out.append(AtomicFact(f"{name}: {STATE_NAMES[state]}", name, state, source))
    return out
