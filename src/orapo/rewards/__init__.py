"""Rewards for the generated reports, looked up by name in ``REWARDS``.

Each entry is a factory: ``make_reward(name, **options)`` returns a reward callable in TRL's
convention ``f(completions, **columns) -> list[float | None]`` (see
:mod:`orapo.rewards.common`), usable by the orapo trainer and by TRL's ``GRPOTrainer``.

==========  ==========================  ====================================================
name        columns read                score
==========  ==========================  ====================================================
``facts``   ``labels``, ``reference``   FactS: F_beta (beta = 2) of clinical facts
                                        (:mod:`orapo.rewards.facts`); needs a labeler
``bleu``    ``reference``               sentence BLEU-4, nltk, smoothing method1
``rouge_l`` ``reference``               ROUGE-L F-measure, rouge-score on the tokens of
                                        the ``text/rouge_l`` metric
==========  ==========================  ====================================================

>>> reward = make_reward("rouge_l")
>>> reward(["no acute findings"], reference=["No acute findings."])
[0.8571428571428571]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orapo.registry import Registry
from orapo.rewards.common import RewardFunction, completion_text
from orapo.rewards.facts import (
    Fact,
    FactOptions,
    FactScore,
    FactsReward,
    f_beta,
    label_facts,
    precision_recall_f_beta,
    score_labels,
)
from orapo.rewards.text import BleuReward, RougeLReward, tokenize

#: Reward factories by name: ``REWARDS.get(name)(**options)`` is a reward callable.
REWARDS: Registry[Callable[..., RewardFunction]] = Registry("reward")
REWARDS.register("facts")(FactsReward)
REWARDS.register("bleu")(BleuReward)
REWARDS.register("rouge_l")(RougeLReward)


def make_reward(name: str, **options: Any) -> RewardFunction:
    """Build the reward registered as ``name`` with its options (unknown names list the valid)."""
    return REWARDS.get(name)(**options)


__all__ = [
    "REWARDS",
    "BleuReward",
    "Fact",
    "FactOptions",
    "FactScore",
    "FactsReward",
    "RewardFunction",
    "RougeLReward",
    "completion_text",
    "f_beta",
    "label_facts",
    "make_reward",
    "precision_recall_f_beta",
    "score_labels",
    "tokenize",
]
