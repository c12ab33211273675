"""Clinical labelers: report text -> the 14 CheXpert observations (1 / 0 / -1 / None).

>>> label_report("Mild cardiomegaly. No pleural effusion or pneumothorax.")["Pleural Effusion"]
0

``LABELERS`` maps names to labeler factories: ``"rule"`` (:class:`RuleLabeler`), and the LLM
fact extractor's ``"llm"`` and ``"hybrid"`` (``orapo.llm``, docs/llm.md; imported only when
one is built). :func:`get_labeler` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from orapo.labeler.rule import (
    Classified,
    Cue,
    Mention,
    RuleLabeler,
    aggregate,
    decide,
)
from orapo.labeler.vocab import normalize_text
from orapo.registry import Registry

__all__ = [
    "LABELERS",
    "Classified",
    "Cue",
    "Labeler",
    "Mention",
    "RuleLabeler",
    "aggregate",
    "decide",
    "get_labeler",
    "label_report",
    "normalize_text",
]


@runtime_checkable
class Labeler(Protocol):
    """What every labeler provides. Results hold all 14 observation names."""

    name: str

    def label(self, text: str) -> dict[str, int | None]: ...

    def label_batch(self, texts: Sequence[str]) -> list[dict[str, int | None]]: ...


def _llm(**options: Any) -> Labeler:
    """The ``"llm"`` labeler: ``orapo.llm.LLMLabeler(**options)``."""
    from orapo.llm.labeler import LLMLabeler

    return LLMLabeler(**options)


def _hybrid(**options: Any) -> Labeler:
    """The ``"hybrid"`` labeler: ``orapo.llm.hybrid_labeler(**options)``."""
    from orapo.llm.labeler import hybrid_labeler

    return hybrid_labeler(**options)


#: Labeler factories by name. The LLM ones import ``orapo.llm`` (an HTTP client, SQLite) only
#: when called, so the rule labeler loads neither; ``orapo.llm`` uses this package, not the
#: other way round.
LABELERS: Registry[Callable[..., Labeler]] = Registry("labeler")
LABELERS.register("rule")(RuleLabeler)
LABELERS.register("llm")(_llm)
LABELERS.register("hybrid")(_hybrid)


def get_labeler(name: str = "rule", **options) -> Labeler:
    """Build the labeler registered as ``name`` with ``options`` (unknown names list the valid
    ones). The default rule labeler with no options is built once and shared."""
    if name == "rule" and not options:
        return _default_rule()
    return LABELERS.get(name)(**options)


@lru_cache(maxsize=1)
def _default_rule() -> RuleLabeler:
    return RuleLabeler()


def label_report(text: str) -> dict[str, int | None]:
    """Label one report with the shared default rule labeler."""
    return _default_rule().label(text)
