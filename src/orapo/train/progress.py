"""A rich progress bar with the live numbers a user watches: reward, ZRR, its EMA, w, loss."""

from __future__ import annotations

import math
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_SHOWN = (
    ("reward/mean", "reward"),
    ("zrr/raw", "zrr"),
    ("zrr/ema", "ema"),
    ("mix/w", "w"),
    ("loss/total", "loss"),
    ("loss/sft", "loss"),
    ("val/f1", "val F1"),
)


def format_live(metrics: dict[str, float]) -> str:
    parts = []
    for key, label in _SHOWN:
        v = metrics.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            parts.append(f"{label} {v:.3f}")
    return "  ".join(parts)


class TrainProgress:
    """Context manager around a rich Progress; a no-op on non-main processes."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.start = start
        self._last_val: float | None = None
        self._progress: Progress | None = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[live]}"),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.total, completed=self.start, live=""
            )
        return self

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        if self._progress is None:
            return
        if "val/f1" in metrics:
            self._last_val = metrics["val/f1"]
        shown = dict(metrics)
        if self._last_val is not None:
            shown["val/f1"] = self._last_val
        self._progress.update(self._task, completed=step, live=format_live(shown))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
