"""Oracle DPO: the ground-truth report as the chosen sequence, failed rollouts as rejected.

Shapes: ``B`` prompts, ``K`` rollouts per prompt; chosen tensors are ``(B,)`` (one ground-truth
report per prompt), rejected tensors ``(B*K,)`` ordered by group as the rewards are. Every
rollout ``j`` of prompt ``b`` that is a negative (``rejected_mask[b*K + j]``) forms one pair
``(chosen_b, rejected_bj)``; the rest form none.

Sigmoid DPO per pair (TRL's ``loss_type="sigmoid"``)::

    h_bj = (logp_c_b - ref_c_b) - (logp_r_bj - ref_r_bj)
    l_bj = -log sigmoid(beta * h_bj)

and the loss is the mean of ``l_bj`` over all pairs (so a prompt weighs by its number of
negatives). With no pair at all the loss is exactly 0, still attached to the graph, and its
gradient is 0 everywhere (not NaN). Sequence log-probs are token sums; with length
normalisation (:func:`sequence_logps` ``average=True``) they are per-token means, which is
TRL's ``sigmoid_norm``. Reference log-probs are detached here.

Negatives (:func:`select_negatives`, rules in ``NEGATIVE_RULES``): ``zero-reward`` (default:
the paper's "failed rollouts", ``|r| <= atol``), ``all`` rollouts, or those ``below`` a reward
threshold. A rollout whose reward is missing (NaN) is a negative only under ``all``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Valid values of ``select_negatives(rule=...)``.
NEGATIVE_RULES: tuple[str, ...] = ("zero-reward", "all", "below")


def select_negatives(
    rewards: Tensor,
    rule: str = "zero-reward",
    *,
    threshold: float | None = None,
    atol: float = 0.0,
) -> Tensor:
    """Which rollouts are DPO negatives.

    Args:
        rewards: ``(B*K,)`` rewards (NaN: missing).
        rule: ``"zero-reward"`` (``|r| <= atol``), ``"all"``, or ``"below"`` (``r < threshold``).
        threshold: required for ``"below"``, not allowed otherwise.
        atol: tolerance of ``"zero-reward"``.

    Returns:
        ``(B*K,)`` bool mask, true for negatives. Missing rewards are negatives only for ``all``.
    """
    if rule not in NEGATIVE_RULES:
        raise ValueError(
            f"unknown negative rule {rule!r}; valid values are: {', '.join(NEGATIVE_RULES)}"
        )
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B*K,), got shape {tuple(rewards.shape)}")
    if (rule == "below") != (threshold is not None):
        raise ValueError(f"threshold is required for rule 'below' and only for it (rule={rule!r})")
    if atol < 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    r = rewards.detach().float() if not rewards.is_floating_point() else rewards.detach()
    if rule == "all":
        return torch.ones_like(r, dtype=torch.bool)
    if rule == "zero-reward":
        return r.abs() <= atol  # NaN compares false
    return r < threshold  # NaN compares false


def sequence_logps(token_logps: Tensor, mask: Tensor, average: bool = False) -> Tensor:
    """Sequence log-probs from per-token ones: ``(N, T), (N, T) -> (N,)``.

    ``sum_t m_t logp_t``, or with ``average=True`` that sum / ``max(1, sum_t m_t)`` (length
    normalisation). Masked positions may hold anything, even inf or NaN.
    """
    if token_logps.shape != mask.shape or token_logps.dim() != 2:
        raise ValueError(
            f"token_logps and mask must both be (N, T), got {tuple(token_logps.shape)} and "
            f"{tuple(mask.shape)}"
        )
    mask = mask.bool()
    total = torch.where(mask, token_logps, torch.zeros_like(token_logps)).sum(-1)  # (N,)
    return total / mask.sum(-1).clamp(min=1) if average else total


def dpo_loss(
    policy_chosen_logps: Tensor,
    ref_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_rejected_logps: Tensor,
    rejected_mask: Tensor,
    *,
    beta: float = 0.1,
) -> tuple[Tensor, dict[str, float]]:
    """Sigmoid DPO of one chosen against the negatives among K rejected, per prompt.

    Args:
        policy_chosen_logps: ``(B,)`` policy log-prob of each prompt's ground-truth report.
        ref_chosen_logps: ``(B,)`` the same under the reference (detached here).
        policy_rejected_logps: ``(B*K,)`` policy log-probs of the rollouts, grouped by prompt.
        ref_rejected_logps: ``(B*K,)`` the same under the reference (detached here).
        rejected_mask: ``(B*K,)`` bool, true where the rollout is a negative.
        beta: DPO temperature (TRL default 0.1).

    Returns:
        ``(loss, metrics)``; ``loss`` is the mean of ``-log sigmoid(beta * h)`` over pairs, or 0
        with zero gradient when there are none. ``metrics`` (no gradient, means over pairs, NaN
        when there are none, rewards are ``beta * (logp - ref)``): ``dpo/pairs``,
        ``dpo/prompts_with_pairs`` (share of prompts with at least one negative),
        ``dpo/chosen_reward``, ``dpo/rejected_reward``, ``dpo/reward_margin`` (chosen minus
        rejected), ``dpo/accuracy`` (share of pairs with margin > 0), ``dpo/chosen_logps``,
        ``dpo/rejected_logps`` (policy log-probs).
    """
    b = policy_chosen_logps.shape[0]
    for name, x, n in (
        ("policy_chosen_logps", policy_chosen_logps, b),
        ("ref_chosen_logps", ref_chosen_logps, b),
        ("policy_rejected_logps", policy_rejected_logps, None),
        ("ref_rejected_logps", ref_rejected_logps, None),
        ("rejected_mask", rejected_mask, None),
    ):
        if x.dim() != 1 or (n is not None and x.shape[0] != n):
            raise ValueError(f"{name} must be 1-D of length {n or 'B*K'}, got {tuple(x.shape)}")
    nk = policy_rejected_logps.shape[0]
    if b == 0 or nk % b or ref_rejected_logps.shape[0] != nk or rejected_mask.shape[0] != nk:
        raise ValueError(
            f"rejected tensors must all have B*K entries for B={b} chosen; got "
            f"{nk}, {ref_rejected_logps.shape[0]} and {rejected_mask.shape[0]}"
        )
    k = nk // b
    pairs = rejected_mask.bool().view(b, k)  # (B, K)

    chosen_ratio = policy_chosen_logps - ref_chosen_logps.detach()  # (B,)
    rejected_ratio = policy_rejected_logps - ref_rejected_logps.detach()  # (B*K,)
    # Non-negatives may carry anything (inf, NaN): zero them before they touch the arithmetic.
    rejected_ratio = torch.where(
        pairs, rejected_ratio.view(b, k), torch.zeros_like(pairs, dtype=rejected_ratio.dtype)
    )
    h = chosen_ratio.unsqueeze(1) - rejected_ratio  # (B, K)
    per_pair = -F.logsigmoid(beta * h)  # (B, K)
    per_pair = torch.where(pairs, per_pair, torch.zeros_like(per_pair))
    n_pairs = int(pairs.sum())
    loss = per_pair.sum() / max(n_pairs, 1)

    with torch.no_grad():
        chosen_reward = (beta * chosen_ratio).unsqueeze(1).expand(b, k)[pairs]  # (P,)
        rejected_reward = beta * rejected_ratio[pairs]  # (P,)
        margin = chosen_reward - rejected_reward

        def mean(x: Tensor) -> float:
            return float(x.mean()) if x.numel() else math.nan

        metrics = {
            "dpo/pairs": float(n_pairs),
            "dpo/prompts_with_pairs": float(pairs.any(dim=1).float().mean()),
            "dpo/chosen_reward": mean(chosen_reward),
            "dpo/rejected_reward": mean(rejected_reward),
            "dpo/reward_margin": mean(margin),
            "dpo/accuracy": mean((margin > 0).float()),
            "dpo/chosen_logps": mean(policy_chosen_logps.unsqueeze(1).expand(b, k)[pairs]),
            "dpo/rejected_logps": mean(policy_rejected_logps.view(b, k)[pairs]),
        }
    return loss, metrics


def dpo_loss_from_tokens(
    policy_chosen_token_logps: Tensor,
    ref_chosen_token_logps: Tensor,
    chosen_token_mask: Tensor,
    policy_rejected_token_logps: Tensor,
    ref_rejected_token_logps: Tensor,
    rejected_token_mask: Tensor,
    rejected_mask: Tensor,
    *,
    beta: float = 0.1,
    length_normalize: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """:func:`dpo_loss` on per-token log-probs.

    Chosen per-token tensors are ``(B, Tc)``, rejected ones ``(B*K, Tr)``, each with its token
    mask; ``rejected_mask`` is ``(B*K,)``. Sequence log-probs are token sums, or per-token
    means with ``length_normalize=True`` (applied to policy and reference alike, as TRL's
    ``sigmoid_norm``).
    """
    avg = length_normalize
    return dpo_loss(
        sequence_logps(policy_chosen_token_logps, chosen_token_mask, avg),
        sequence_logps(ref_chosen_token_logps, chosen_token_mask, avg),
        sequence_logps(policy_rejected_token_logps, rejected_token_mask, avg),
        sequence_logps(ref_rejected_token_logps, rejected_token_mask, avg),
        rejected_mask,
        beta=beta,
    )
