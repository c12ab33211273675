"""The OraPO algorithm core: pure tensor functions, no model, no config objects.

Glossary: ``B`` prompts (images), ``K`` rollouts per prompt, ``N = B*K`` rollouts, ``T``
completion tokens. Per-rollout tensors are ``(B*K,)`` ordered by group (rollouts of prompt 0
first). Losses return ``(value, metrics)``; metric keys are namespaced and defined in
``docs/algorithms.md``.

One training step, in the order the trainer calls them (tiny numbers, B=2, K=2, T=3):

>>> import torch
>>> from orapo import algorithms as alg
>>> rewards = alg.rewards_to_tensor([0.0, 0.0, 0.5, 1.0])  # (B*K,) a reward's output
>>> zrr = alg.zero_reward_rate(rewards, k=2)                # share of all-zero groups
>>> zrr
0.5
>>> controller = alg.ZRRController()                        # alpha=0.5, w in [0.05, 0.15]
>>> controller.update(zrr)                                  # EMA of the ZRR
0.5
>>> w = controller.weight()                                 # = alg.mixing_weight(0.5)
>>> round(w, 4)
0.075
>>> adv = alg.group_advantages(rewards, k=2)                # (B*K,)
>>> logps = torch.full((4, 3), -1.0, requires_grad=True)    # (N, T) policy token log-probs
>>> mask = torch.tensor([[1, 1, 0]] * 4, dtype=torch.bool)  # (N, T) real completion tokens
>>> l_grpo, m_grpo = alg.grpo_loss(logps, logps.detach(), adv, mask, reduction="grpo")
>>> negatives = alg.select_negatives(rewards, "zero-reward")  # (B*K,) failed rollouts
>>> chosen = torch.tensor([-5.0, -6.0], requires_grad=True)   # (B,) ground-truth report
>>> l_dpo, m_dpo = alg.dpo_loss(chosen, chosen.detach() - 1, logps.sum(-1),
...                             logps.detach().sum(-1), negatives, beta=0.1)
>>> loss, m_mix = alg.orapo_loss(l_grpo, l_dpo, w)
>>> loss.backward()
"""

from orapo.algorithms.advantages import (
    ADVANTAGE_SCALES,
    group_advantages,
    informative_groups,
    reward_metrics,
    rewards_to_tensor,
    zero_reward_groups,
    zero_reward_rate,
)
from orapo.algorithms.dpo import (
    NEGATIVE_RULES,
    dpo_loss,
    dpo_loss_from_tokens,
    select_negatives,
    sequence_logps,
)
from orapo.algorithms.grpo import (
    REDUCTIONS,
    grpo_loss,
    grpo_per_token_loss,
    reduce_loss,
    seq_mean_token_mean,
    sum_over_constant,
    token_mean,
)
from orapo.algorithms.mix import orapo_loss
from orapo.algorithms.sft import sft_loss
from orapo.algorithms.zrr import ZRR_MODES, ZRRController, mixing_weight

__all__ = [
    "ADVANTAGE_SCALES",
    "NEGATIVE_RULES",
    "REDUCTIONS",
    "ZRR_MODES",
    "ZRRController",
    "dpo_loss",
    "dpo_loss_from_tokens",
    "grpo_loss",
    "grpo_per_token_loss",
    "group_advantages",
    "informative_groups",
    "mixing_weight",
    "orapo_loss",
    "reduce_loss",
    "reward_metrics",
    "rewards_to_tensor",
    "select_negatives",
    "seq_mean_token_mean",
    "sequence_logps",
    "sft_loss",
    "sum_over_constant",
    "token_mean",
    "zero_reward_groups",
    "zero_reward_rate",
]
