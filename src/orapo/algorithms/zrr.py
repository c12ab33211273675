"""The ZRR controller: EMA of the Zero-Reward Rate -> the DPO mixing weight ``w``.

Our reading of the paper (it names ``alpha = 0.5``, ``w_min = 0.05``, ``w_max = 0.15`` and a
sharpening exponent ``gamma = 2.0`` but does not print the mapping):

* EMA, ``alpha`` = momentum (weight on the past)::

      ema_1 = zrr_1                                   (initialised with the first observation)
      ema_t = alpha * ema_{t-1} + (1 - alpha) * zrr_t

  The other common convention (``alpha`` weighs the new value) gives the same numbers at the
  paper's ``alpha = 0.5``.
* Mixing weight::

      w = w_min + (w_max - w_min) * ema ** gamma

  so ``w = w_min`` when no group is zero-reward and ``w = w_max`` when all are; ``gamma > 1``
  keeps ``w`` near ``w_min`` until the ZRR is large.

For ablations the controller also runs in constant mode: ``w`` is fixed (``constant_w = 0`` is
pure GRPO). The EMA is still tracked and logged in that mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: Valid values of ``ZRRController.mode``.
ZRR_MODES: tuple[str, ...] = ("ema", "constant")


def mixing_weight(
    ema: float, w_min: float = 0.05, w_max: float = 0.15, gamma: float = 2.0
) -> float:
    """OraPO mixing weight ``w = w_min + (w_max - w_min) * ema ** gamma`` (our reading).

    Args:
        ema: smoothed Zero-Reward Rate in ``[0, 1]``.
        w_min: weight at ``ema = 0`` (paper: 0.05).
        w_max: weight at ``ema = 1`` (paper: 0.15).
        gamma: sharpening exponent, ``> 0`` (paper: 2.0).

    Returns:
        ``w`` in ``[w_min, w_max]``.
    """
    ema = float(ema)
    if not 0.0 <= ema <= 1.0:  # also rejects NaN
        raise ValueError(f"ema must be in [0, 1], got {ema}")
    if not 0.0 <= w_min <= w_max <= 1.0:
        raise ValueError(f"need 0 <= w_min <= w_max <= 1, got w_min={w_min}, w_max={w_max}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return w_min + (w_max - w_min) * ema**gamma


@dataclass
class ZRRController:
    """EMA of the Zero-Reward Rate and the mixing weight it drives.

    Usage, once per training step, after the rewards are known::

        zrr = zero_reward_rate(rewards, k)
        controller.update(zrr)
        w = controller.weight()

    Only ``ema``, ``num_updates`` and ``num_skipped`` are state (``state_dict``); the rest is
    configuration, set from the run config.
    """

    alpha: float = 0.5  #: EMA momentum, weight on the previous EMA (paper: 0.5)
    w_min: float = 0.05  #: weight at ZRR EMA 0 (paper: 0.05)
    w_max: float = 0.15  #: weight at ZRR EMA 1 (paper: 0.15)
    gamma: float = 2.0  #: sharpening exponent (paper: 2.0)
    mode: str = "ema"  #: "ema" (paper) or "constant" (ablations: w = constant_w)
    constant_w: float = 0.0  #: the weight in constant mode; 0 is pure GRPO
    ema: float | None = field(default=None)  #: state: current EMA, None before any update
    num_updates: int = 0  #: state: observations folded into the EMA
    num_skipped: int = 0  #: state: NaN observations skipped (no group had a valid reward)

    def __post_init__(self) -> None:
        if self.mode not in ZRR_MODES:
            raise ValueError(
                f"unknown mode {self.mode!r}; valid values are: {', '.join(ZRR_MODES)}"
            )
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha (EMA momentum) must be in [0, 1), got {self.alpha}")
        if not 0.0 <= self.constant_w <= 1.0:
            raise ValueError(f"constant_w must be in [0, 1], got {self.constant_w}")
        mixing_weight(0.0, self.w_min, self.w_max, self.gamma)  # validates w_min, w_max, gamma

    def update(self, zrr: float) -> float | None:
        """Fold one step's Zero-Reward Rate into the EMA and return the new EMA.

        A NaN ``zrr`` (no group had a valid reward) leaves the EMA unchanged and is counted in
        ``num_skipped``.
        """
        zrr = float(zrr)
        if math.isnan(zrr):
            self.num_skipped += 1
            return self.ema
        if not 0.0 <= zrr <= 1.0:
            raise ValueError(f"a zero-reward rate must be in [0, 1], got {zrr}")
        self.ema = zrr if self.ema is None else self.alpha * self.ema + (1 - self.alpha) * zrr
        self.num_updates += 1
        return self.ema

    def weight(self) -> float:
        """The mixing weight for this step.

        Constant mode: ``constant_w``. EMA mode: ``mixing_weight(ema, ...)``; before the first
        update the EMA is taken as 0, so ``w = w_min``.
        """
        if self.mode == "constant":
            return self.constant_w
        ema = 0.0 if self.ema is None else self.ema
        return mixing_weight(ema, self.w_min, self.w_max, self.gamma)

    def metrics(self) -> dict[str, float]:
        """``zrr/ema`` (NaN before the first update). The weight a step used, ``mix/w``, is
        :func:`~orapo.algorithms.mix.orapo_loss`'s to log (pure GRPO uses 0 whatever the
        controller holds)."""
        return {"zrr/ema": math.nan if self.ema is None else self.ema}

    def state_dict(self) -> dict[str, Any]:
        """The state to save with a checkpoint (JSON-serialisable)."""
        return {"ema": self.ema, "num_updates": self.num_updates, "num_skipped": self.num_skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; unknown or missing keys raise."""
        expected = {"ema", "num_updates", "num_skipped"}
        if set(state) != expected:
            raise KeyError(
                f"ZRR controller state needs keys {sorted(expected)}, got {sorted(state)}"
            )
        ema = state["ema"]
        if ema is not None and not 0.0 <= float(ema) <= 1.0:
            raise ValueError(f"ZRR controller state: ema must be None or in [0, 1], got {ema}")
        self.ema = None if ema is None else float(ema)
        self.num_updates = int(state["num_updates"])
        self.num_skipped = int(state["num_skipped"])
