"""The OraPO objective: ``L = (1 - w) * L_grpo + w * L_dpo``."""

from __future__ import annotations

from torch import Tensor


def orapo_loss(
    grpo_loss: Tensor, dpo_loss: Tensor | None, w: float
) -> tuple[Tensor, dict[str, float]]:
    """Mix the two scalar losses with the weight ``w`` in ``[0, 1]``.

    ``w = 0`` returns ``grpo_loss`` itself (pure GRPO; ``dpo_loss`` may then be ``None`` and
    is not evaluated, so a NaN there cannot leak in); ``w = 1`` returns ``dpo_loss`` itself.

    Returns:
        ``(loss, metrics)`` with ``loss/grpo``, ``loss/dpo`` (NaN when ``dpo_loss`` is None),
        ``loss/total`` and ``mix/w``.
    """
    w = float(w)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"the mixing weight w must be in [0, 1], got {w}")
    if grpo_loss.dim() != 0 or (dpo_loss is not None and dpo_loss.dim() != 0):
        raise ValueError("orapo_loss mixes scalar losses; reduce the per-token loss first")
    if w == 0.0:
        loss = grpo_loss
    elif dpo_loss is None:
        raise ValueError(f"w={w} needs a dpo_loss; pass one, or w=0 for pure GRPO")
    elif w == 1.0:
        loss = dpo_loss
    else:
        loss = (1 - w) * grpo_loss + w * dpo_loss
    metrics = {
        "loss/grpo": float(grpo_loss.detach()),
        "loss/dpo": float("nan") if dpo_loss is None else float(dpo_loss.detach()),
        "loss/total": float(loss.detach()),
        "mix/w": w,
    }
    return loss, metrics
