"""GRPO: the clipped per-token surrogate with a k3 KL penalty, and its reductions.

Shapes: ``N = B*K`` rollouts (sequences), ``T`` completion tokens (padded). Per-token tensors
are ``(N, T)``; ``mask`` is ``(N, T)``, true on real completion tokens. Padded positions may
hold anything (even inf or NaN): they are replaced before any arithmetic, so they reach neither
the loss nor the gradient.

Per-token loss (TRL 1.16 ``loss_type`` in grpo/bnpo/dapo/dr_grpo, ``importance_sampling_level
="token"``)::

    ratio  = exp(logp - logp_old)                         # (N, T)
    pg     = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
    kl     = exp(logp_ref - logp) - (logp_ref - logp) - 1  # k3 estimator of KL(pi || ref)
    loss_t = pg + beta * kl

``logp_old`` and ``logp_ref`` are detached here: gradient flows only into ``logp``.

Reductions (``REDUCTIONS``, by name) turn ``(N, T)`` into a scalar; each has a length bias:

* ``grpo`` (verl: ``seq-mean-token-mean``): mean over each sequence's tokens, then over
  sequences. Every sequence weighs the same, so a token of a length-L sequence weighs 1/L:
  short sequences get a larger per-token update, and for negative advantages long wrong
  sequences are penalised less per token (the length bias Dr. GRPO points out).
* ``dapo`` (verl: ``token-mean``; TRL's ``bnpo``, and TRL's ``dapo`` within one batch): sum over
  all valid tokens / their number. Every token in the batch weighs the same, so long sequences
  carry more total weight; the normaliser depends on the batch's token count, so a token's
  weight varies between batches.
* ``dr_grpo``: sum / (N * max_completion_length). A constant normaliser: every token weighs
  ``1 / (N * L_max)`` whatever its sequence's length or the batch's; the loss's scale shrinks
  with the actual lengths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from orapo.registry import Registry


def _check_tokens(name: str, x: Tensor, shape: torch.Size) -> None:
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)} (N, T), got {tuple(x.shape)}")


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with masked-out positions set to 0 (safe against inf/NaN padding, and its grad)."""
    return torch.where(mask, x, torch.zeros_like(x))


def _masked_mean(x: Tensor, mask: Tensor) -> float:
    n = int(mask.sum())
    return float(_masked(x, mask).sum()) / n if n else math.nan


def grpo_per_token_loss(
    logps: Tensor,
    old_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logps: Tensor | None = None,
    delta: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped GRPO surrogate plus ``beta`` times the k3 KL to the reference, per token.

    Args:
        logps: ``(N, T)`` log-probs of the sampled tokens under the policy being trained.
        old_logps: ``(N, T)`` log-probs under the policy that sampled them (detached here);
            ``None`` means on-policy (``logps.detach()``: ratio 1, gradient ``-A * grad logp``).
        advantages: ``(N,)`` per-sequence (or ``(N, T)`` per-token) advantages, detached here.
        mask: ``(N, T)`` bool (or 0/1), true on real completion tokens.
        eps_low: lower clip, ratio floor ``1 - eps_low``.
        eps_high: upper clip, ratio ceiling ``1 + eps_high`` (DAPO's clip-higher when larger).
        beta: KL coefficient; ``ref_logps`` is required when ``beta != 0``.
        ref_logps: ``(N, T)`` log-probs under the frozen reference (detached here). When given
            with ``beta = 0`` the KL is only measured (``grpo/kl_ref``).
        delta: optional cap on the unclipped ratio (TRL's two-sided clipping, ``args.delta``).

    Returns:
        ``(loss_t, metrics)``: ``loss_t`` is ``(N, T)``, 0 at masked positions; ``metrics``
        (no gradient, means over valid tokens, NaN when there are none): ``grpo/clip_frac_low``
        (ratio < 1 - eps_low where A < 0), ``grpo/clip_frac_high`` (ratio > 1 + eps_high where
        A > 0), ``grpo/clip_frac`` (either), ``grpo/ratio_mean``, ``grpo/ratio_max``,
        ``grpo/approx_kl_old`` (k3 KL(old || new): ``(ratio - 1) - log ratio``),
        ``grpo/kl_ref`` (k3 KL to the reference, only with ``ref_logps``), ``grpo/pg_loss``
        (mean of ``pg``), ``grpo/tokens`` (count of valid tokens).
    """
    if logps.dim() != 2:
        raise ValueError(f"logps must be 2-D (N, T), got shape {tuple(logps.shape)}")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got {eps_low}, {eps_high}")
    if beta != 0.0 and ref_logps is None:
        raise ValueError(f"beta={beta} needs ref_logps (reference log-probs); pass them or beta=0")
    mask = mask.bool()
    _check_tokens("mask", mask, logps.shape)
    old_logps = logps.detach() if old_logps is None else old_logps.detach()
    _check_tokens("old_logps", old_logps, logps.shape)
    adv = advantages.detach()
    if adv.dim() == 1:
        if adv.shape[0] != logps.shape[0]:
            raise ValueError(
                f"advantages has {adv.shape[0]} entries for {logps.shape[0]} sequences"
            )
        adv = adv.unsqueeze(1)  # (N, 1)
    else:
        _check_tokens("advantages", adv, logps.shape)
    adv = adv.to(logps.dtype)

    logp = _masked(logps, mask)  # (N, T) padding -> 0, so ratio = 1 and kl = 0 there
    log_ratio = logp - _masked(old_logps, mask)  # (N, T)
    ratio = torch.exp(log_ratio)  # (N, T)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)  # (N, T)
    capped = ratio if delta is None else torch.clamp(ratio, max=delta)
    pg = -torch.min(capped * adv, clipped * adv)  # (N, T)
    loss = pg
    kl = None
    if ref_logps is not None:
        _check_tokens("ref_logps", ref_logps, logps.shape)
        ref_diff = _masked(ref_logps.detach(), mask) - logp  # (N, T)
        kl = torch.exp(ref_diff) - ref_diff - 1  # (N, T) k3, >= 0
        if beta != 0.0:
            loss = pg + beta * kl
    loss = _masked(loss, mask)

    with torch.no_grad():
        low = (ratio < 1 - eps_low) & (adv < 0)
        high = (ratio > 1 + eps_high) & (adv > 0)
        n_tokens = int(mask.sum())
        metrics = {
            "grpo/clip_frac_low": _masked_mean(low.to(logps.dtype), mask),
            "grpo/clip_frac_high": _masked_mean(high.to(logps.dtype), mask),
            "grpo/clip_frac": _masked_mean((low | high).to(logps.dtype), mask),
            "grpo/ratio_mean": _masked_mean(ratio, mask),
            "grpo/ratio_max": float(ratio[mask].max()) if n_tokens else math.nan,
            "grpo/approx_kl_old": _masked_mean((ratio - 1) - log_ratio, mask),
            "grpo/pg_loss": _masked_mean(pg, mask),
            "grpo/tokens": float(n_tokens),
        }
        if kl is not None:
            metrics["grpo/kl_ref"] = _masked_mean(kl, mask)
    return loss, metrics


class Reduction(Protocol):
    def __call__(
        self, loss_t: Tensor, mask: Tensor, max_completion_length: int | None = None
    ) -> Tensor: ...


#: Per-token loss reductions by name (``grpo``, ``dapo``, ``dr_grpo`` and verl-style aliases).
REDUCTIONS: Registry[Reduction] = Registry("loss reduction")


def _register(*names: str) -> Callable[[Reduction], Reduction]:
    def add(fn: Reduction) -> Reduction:
        for name in names:
            REDUCTIONS.register(name)(fn)
        return fn

    return add


@_register("grpo", "seq-mean-token-mean")
def seq_mean_token_mean(
    loss_t: Tensor, mask: Tensor, max_completion_length: int | None = None
) -> Tensor:
    """``mean_i( sum_t m_it l_it / max(1, sum_t m_it) )`` over all N sequences.

    ``(N, T), (N, T) -> ()``. A sequence without valid tokens contributes 0 but still counts
    in the mean over N (as TRL). ``max_completion_length`` is ignored.
    """
    mask = mask.bool()
    per_seq = _masked(loss_t, mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (N,)
    return per_seq.mean()


@_register("dapo", "token-mean", "bnpo")
def token_mean(loss_t: Tensor, mask: Tensor, max_completion_length: int | None = None) -> Tensor:
    """``sum_it m_it l_it / max(1, sum_it m_it)``: ``(N, T), (N, T) -> ()``.

    ``max_completion_length`` is ignored.
    """
    mask = mask.bool()
    return _masked(loss_t, mask).sum() / mask.sum().clamp(min=1)


@_register("dr_grpo", "seq-sum-constant")
def sum_over_constant(
    loss_t: Tensor, mask: Tensor, max_completion_length: int | None = None
) -> Tensor:
    """``sum_it m_it l_it / (N * max_completion_length)``: ``(N, T), (N, T) -> ()``.

    ``max_completion_length`` (the generation limit L_max) is required and must be at least the
    longest sequence's number of valid tokens.
    """
    if max_completion_length is None or max_completion_length < 1:
        raise ValueError(
            f"the dr_grpo reduction needs max_completion_length >= 1, got {max_completion_length}"
        )
    mask = mask.bool()
    longest = int(mask.sum(-1).max()) if mask.numel() else 0
    if longest > max_completion_length:
        raise ValueError(
            f"a sequence has {longest} valid tokens, more than max_completion_length="
            f"{max_completion_length}"
        )
    return _masked(loss_t, mask).sum() / (loss_t.shape[0] * max_completion_length)


def reduce_loss(
    loss_t: Tensor, mask: Tensor, reduction: str = "grpo", max_completion_length: int | None = None
) -> Tensor:
    """Reduce a ``(N, T)`` per-token loss to a scalar with the reduction named ``reduction``."""
    _check_tokens("mask", mask, loss_t.shape)
    return REDUCTIONS.get(reduction)(loss_t, mask, max_completion_length)


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    reduction: str = "grpo",
    max_completion_length: int | None = None,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logps: Tensor | None = None,
    delta: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """:func:`grpo_per_token_loss` followed by :func:`reduce_loss`; returns ``(loss, metrics)``.

    ``loss`` is a scalar with gradient into ``logps`` only; ``metrics`` are those of
    :func:`grpo_per_token_loss`.
    """
    loss_t, metrics = grpo_per_token_loss(
        logps, old_logps, advantages, mask,
        eps_low=eps_low, eps_high=eps_high, beta=beta, ref_logps=ref_logps, delta=delta,
    )  # fmt: skip
    return reduce_loss(loss_t, mask, reduction, max_completion_length), metrics
