"""Group-relative advantages and the Zero-Reward Rate (ZRR).

Dimensions (the orapo glossary): ``B`` prompts (images) in the batch, ``K`` rollouts per
prompt, so rewards are a flat ``(B*K,)`` tensor ordered by group: rollouts ``0..K-1`` belong to
prompt 0, ``K..2K-1`` to prompt 1, and so on (TRL's ``repeat_interleave`` order).

Missing rewards. A reward that failed for one sample is ``None`` in the reward function's
output and NaN here. The rule, the same as TRL 1.16's for unscorable completions:

1. group statistics (mean, std) are taken over the valid (non-NaN) rewards only;
2. a sample with a missing reward gets advantage 0 (it neither pushes nor pulls the policy);
3. where fewer than two valid rewards are left (in the group, or in the batch for
   ``scale="batch"``) the std is undefined; every advantage there is 0 (with at most one valid
   reward per group, ``r - mean`` is 0 anyway).

For the ZRR, a group counts as zero-reward when all of its valid rewards are zero; a group
with no valid reward at all says nothing about the policy and is left out of both numerator
and denominator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Valid values of ``group_advantages(scale=...)``.
ADVANTAGE_SCALES: tuple[str, ...] = ("group", "batch", "none")


def _grouped(rewards: Tensor, k: int) -> Tensor:
    """Check ``rewards`` is ``(B*K,)`` and return it as a float ``(B, K)`` view, detached."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (rollouts per prompt) must be a positive int, got {k!r}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D of shape (B*K,), got shape {tuple(rewards.shape)}")
    if rewards.numel() == 0 or rewards.numel() % k:
        raise ValueError(
            f"rewards has {rewards.numel()} entries, which is not a positive multiple of k={k}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.detach().view(-1, k)  # (B, K)


def rewards_to_tensor(values: Sequence[float | None], dtype: torch.dtype = torch.float32) -> Tensor:
    """A reward function's output (``None`` = failed sample) as a ``(B*K,)`` tensor, NaN for None.

    >>> rewards_to_tensor([0.5, None, 1.0])
    tensor([0.5000,    nan, 1.0000])
    """
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=dtype)


def group_advantages(rewards: Tensor, k: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """GRPO advantages: each reward relative to its group of K rollouts.

    ``A_i = (r_i - mean_g(r)) / (std(r) + eps)`` with

    * ``scale="group"``: ``std`` is the unbiased (N-1) std of the rollout's own group (GRPO);
    * ``scale="batch"``: ``std`` is the unbiased std over the whole batch (TRL's
      ``scale_rewards="batch"``); the mean is still the group's;
    * ``scale="none"``: no division, ``A_i = r_i - mean_g(r)`` (Dr. GRPO).

    Groups whose valid rewards are all equal get ``A = 0``. NaN rewards are missing: they are
    left out of the statistics and get ``A = 0`` (module docstring, rules 1-3).

    Args:
        rewards: ``(B*K,)`` rewards ordered by group; NaN marks a missing reward.
        k: rollouts per prompt (group size K).
        scale: ``"group"``, ``"batch"`` or ``"none"``.
        eps: added to the std before dividing (TRL: 1e-4); must be >= 0.

    Returns:
        ``(B*K,)`` advantages, same float dtype as ``rewards``, without gradient.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(
            f"unknown scale {scale!r}; valid values are: {', '.join(ADVANTAGE_SCALES)}"
        )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    r = _grouped(rewards, k)  # (B, K)
    valid = ~torch.isnan(r)  # (B, K)
    n = valid.sum(dim=1, keepdim=True)  # (B, 1) valid rewards per group
    r0 = torch.where(valid, r, torch.zeros_like(r))  # (B, K) NaN -> 0 for the sums
    mean = r0.sum(dim=1, keepdim=True) / n.clamp(min=1)  # (B, 1)
    centred = torch.where(valid, r - mean, torch.zeros_like(r))  # (B, K), 0 where missing
    if scale == "none":
        return centred.reshape(-1)
    if scale == "group":
        var = (centred**2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)  # (B, 1) unbiased
    else:  # "batch"
        n_all = valid.sum()
        mean_all = r0.sum() / n_all.clamp(min=1)
        dev = torch.where(valid, r - mean_all, torch.zeros_like(r))
        var = (dev**2).sum() / (n_all - 1).clamp(min=1)  # () unbiased, over all valid rewards
    # Where fewer than 2 rewards are valid, var is 0 here and centred is 0, so A = 0 (rule 3);
    # the guard keeps equal-reward groups at 0 (not 0/0) even with eps = 0.
    denom = (var.sqrt() + eps).expand_as(centred)  # (B, K)
    adv = torch.where(denom > 0, centred / denom.clamp(min=torch.finfo(r.dtype).tiny), 0.0)
    return adv.reshape(-1)


def zero_reward_groups(rewards: Tensor, k: int, atol: float = 0.0) -> Tensor:
    """Which groups are zero-reward: every valid reward has ``|r| <= atol``.

    Args:
        rewards: ``(B*K,)`` rewards ordered by group; NaN marks a missing reward.
        k: rollouts per prompt.
        atol: rewards with ``|r| <= atol`` count as zero.

    Returns:
        ``(B,)`` bool; ``False`` for a group with no valid reward (it is not counted).
    """
    if atol < 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    r = _grouped(rewards, k)  # (B, K)
    valid = ~torch.isnan(r)
    zero_or_missing = (r.abs() <= atol) | ~valid  # (B, K)
    return zero_or_missing.all(dim=1) & valid.any(dim=1)  # (B,)


def informative_groups(rewards: Tensor, k: int, atol: float = 0.0) -> Tensor:
    """Which groups carry a GRPO signal: at least two valid rewards, not all equal.

    DAPO's dynamic sampling keeps these and refills the batch in place of the others (a
    group whose rewards are all equal has zero advantage everywhere).

    Args:
        rewards: ``(B*K,)`` rewards ordered by group; NaN marks a missing reward.
        k: rollouts per prompt.
        atol: valid rewards whose spread (max - min) is ``<= atol`` count as equal.

    Returns:
        ``(B,)`` bool.

    >>> informative_groups(torch.tensor([0.0, 0.0, 0.2, 0.5, 1.0, float("nan")]), 2).tolist()
    [False, True, False]
    """
    if atol < 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    r = _grouped(rewards, k)  # (B, K)
    valid = ~torch.isnan(r)
    hi = torch.where(valid, r, torch.full_like(r, -math.inf)).amax(dim=1)  # (B,)
    lo = torch.where(valid, r, torch.full_like(r, math.inf)).amin(dim=1)  # (B,)
    return (valid.sum(dim=1) >= 2) & (hi - lo > atol)


def zero_reward_rate(rewards: Tensor, k: int, atol: float = 0.0) -> float:
    """Zero-Reward Rate: the share of groups whose K rewards are all zero.

    ``ZRR = #{groups with every valid |r| <= atol} / #{groups with at least one valid r}``.
    Missing (NaN) rewards are ignored; a group with no valid reward is left out of both counts.
    Returns NaN when no group has a valid reward (the controller then keeps its state).

    Args:
        rewards: ``(B*K,)`` rewards ordered by group.
        k: rollouts per prompt.
        atol: rewards with ``|r| <= atol`` count as zero (0.0: exactly zero).

    Returns:
        The rate in ``[0, 1]`` as a Python float, or NaN (see above).
    """
    zero = zero_reward_groups(rewards, k, atol)  # (B,)
    counted = (~torch.isnan(_grouped(rewards, k))).any(dim=1)  # (B,)
    n = int(counted.sum())
    return float(zero.sum()) / n if n else math.nan


@torch.no_grad()
def reward_metrics(rewards: Tensor, k: int, atol: float = 0.0) -> dict[str, float]:
    """Logging diagnostics of one batch of rewards (``(B*K,)``, grouped by K).

    Keys: ``reward/mean``, ``reward/std`` (unbiased, over valid rewards), ``reward/missing``
    (count of NaN rewards), ``reward/frac_zero_std`` (share of groups with at least two valid
    rewards whose valid rewards are all equal: no GRPO signal), ``zrr/raw``.
    """
    r = _grouped(rewards, k)  # (B, K)
    valid = ~torch.isnan(r)
    flat = r[valid]
    n_valid = valid.sum(dim=1)  # (B,)
    hi = torch.where(valid, r, torch.full_like(r, -math.inf)).amax(dim=1)
    lo = torch.where(valid, r, torch.full_like(r, math.inf)).amin(dim=1)
    scored = n_valid >= 2
    flat_zero_std = (hi == lo) & scored
    return {
        "reward/mean": float(flat.mean()) if flat.numel() else math.nan,
        "reward/std": float(flat.std()) if flat.numel() > 1 else math.nan,
        "reward/missing": float((~valid).sum()),
        "reward/frac_zero_std": (
            float(flat_zero_std.sum()) / int(scored.sum()) if int(scored.sum()) else math.nan
        ),
        "zrr/raw": zero_reward_rate(rewards, k, atol),
    }
