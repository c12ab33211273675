"""Supervised next-token loss on given completions (the SFT ablation and base pre-training)."""

from __future__ import annotations

from torch import Tensor


def sft_loss(
    logps: Tensor, mask: Tensor, normalizer: float | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Mean negative log-likelihood per real token: ``-sum(logps * mask) / sum(mask)``.

    Args:
        logps: ``(N, T)`` per-token log-probs of the target completions under the policy.
        mask: ``(N, T)`` 1 for real tokens, 0 for padding.
        normalizer: divide by this instead of ``sum(mask)``. Data-parallel training passes
            ``global_tokens / world_size`` so that the averaged gradient equals the token mean
            over the global batch (what one process would compute).

    Returns:
        ``(loss, metrics)`` with ``loss/sft`` (the same value, detached) and ``sft/tokens``.

    >>> import torch
    >>> loss, m = sft_loss(torch.tensor([[-1.0, -3.0, -9.0]]), torch.tensor([[1, 1, 0]]))
    >>> float(loss), m["sft/tokens"]
    (2.0, 2.0)
    """
    if logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and mask {tuple(mask.shape)} differ")
    m = mask.to(logps.dtype)
    tokens = m.sum()
    denominator = tokens.clamp(min=1) if normalizer is None else normalizer
    loss = -(logps * m).sum() / denominator
    return loss, {"loss/sft": float(loss.detach()), "sft/tokens": float(tokens)}
