"""Per-token log-probabilities without materialising (N x T x V) float32 logits.

Shapes: N completions, T completion tokens, H hidden size, V vocabulary.

The naive computation is::

    logits = lm_head(hidden).float()                          # (N, T, V)
    logp = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0] * mask

:func:`token_logprobs` computes the same numbers from the hidden states in chunks of at most
``chunk_tokens`` real (mask = 1) tokens; under autograd each chunk is checkpointed, so the
backward pass recomputes a chunk's logits instead of keeping every chunk's logits alive.
This is TRL's ``selective_log_softmax`` idea taken one step further (TRL still builds the full
logits tensor of a batch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def selective_log_softmax(logits: Tensor, index: Tensor) -> Tensor:
    """``log_softmax(logits.float(), -1).gather(-1, index[..., None])[..., 0]``.

    logits (..., V) any float dtype, index (...) long -> (...) float32. Computes logsumexp
    instead of the full log-softmax, so only the gathered values are kept.
    """
    logits = logits.float()
    picked = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_logprobs(
    lm_head: Callable[[Tensor], Tensor], hidden: Tensor, targets: Tensor, suppress: Tensor | None
) -> Tensor:
    """hidden (n, H), targets (n,) -> (n,) float32; ``suppress`` token ids get probability 0."""
    logits = lm_head(hidden).float()  # (n, V)
    if suppress is not None and suppress.numel():
        logits = logits.index_fill(-1, suppress, float("-inf"))
    return selective_log_softmax(logits, targets)


def token_logprobs(
    hidden: Tensor,
    lm_head: Callable[[Tensor], Tensor],
    targets: Tensor,
    mask: Tensor,
    chunk_tokens: int = 1024,
    suppress: Tensor | None = None,
) -> Tensor:
    """Log-probs of ``targets`` under ``lm_head(hidden)``, computed chunk by chunk.

    hidden (N, T, H): the final (normed) hidden state at the position *before* each target.
    targets (N, T) long; mask (N, T) 0/1 -> (N, T) float32, exactly 0 where mask is 0.
    Only masked-in tokens are computed. ``suppress`` (S,) token ids are removed from the
    distribution (logit -inf before the softmax), as generation removes them. With grad
    enabled and ``hidden`` requiring grad, each chunk is wrapped in ``torch.utils.checkpoint``
    (its logits are recomputed in backward).
    """
    if hidden.shape[:2] != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"shape mismatch: hidden {tuple(hidden.shape)}, targets {tuple(targets.shape)}, "
            f"mask {tuple(mask.shape)}"
        )
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    keep = mask.reshape(-1).bool()  # (N*T,)
    flat_h = hidden.reshape(-1, hidden.shape[-1])[keep]  # (M, H)
    flat_t = targets.reshape(-1)[keep]  # (M,)
    use_ckpt = torch.is_grad_enabled() and flat_h.requires_grad
    parts = []
    for start in range(0, flat_h.shape[0], chunk_tokens):
        h = flat_h[start : start + chunk_tokens]
        t = flat_t[start : start + chunk_tokens]
        if use_ckpt:
            parts.append(checkpoint(_chunk_logprobs, lm_head, h, t, suppress, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(lm_head, h, t, suppress))
    values = torch.cat(parts) if parts else flat_h.new_zeros(0, dtype=torch.float32)
    out = torch.zeros(keep.shape[0], dtype=torch.float32, device=hidden.device)
    out = out.masked_scatter(keep, values)
    return out.view(targets.shape)


def naive_token_logprobs(
    logits: Tensor, targets: Tensor, mask: Tensor, suppress: Tensor | None = None
) -> Tensor:
    """Reference implementation: full float32 log-softmax. logits (N, T, V) -> (N, T)."""
    logits = logits.float()
    if suppress is not None and suppress.numel():
        logits = logits.index_fill(-1, suppress, float("-inf"))
    logp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp * mask.to(logp.dtype)
