"""What every orapo reward shares: the TRL calling convention and per-sample failure handling.

A reward is a callable ``f(completions, **columns) -> list[float | None]`` (TRL's convention):
``completions`` are the generated reports (strings, or TRL's conversational form, a list of
messages whose last one is the assistant's), dataset columns arrive as keyword lists of the
same length (``reference=[...]``, ``labels=[...]``), and other keywords TRL adds (``prompts``,
``completion_ids``, ``trainer_state``, ...) are accepted and ignored. A sample the reward cannot
score gets ``None``; the reward never raises for one bad sample. Each failure is logged with
its sample index and counted by reason in ``reward.failures``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

logger = logging.getLogger("orapo.rewards")


class RewardFunction(Protocol):
    """``f(completions, **columns) -> list[float | None]``, one score per completion."""

    __name__: str

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float | None]: ...


class SampleError(ValueError):
    """One sample cannot be scored; ``reason`` is a short category for the failure counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the content of the last message of a list.

    Message content may be a string or a list of parts (``{"type": "text", "text": ...}``).
    Raises :class:`SampleError` for anything else.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            parts = [p.get("text", "") for p in content if isinstance(p, Mapping)]
            if len(parts) == len(content) and all(isinstance(p, str) for p in parts):
                return "".join(parts)
    raise SampleError("bad completion", f"not a string or a list of messages: {completion!r:.80}")


def column(columns: Mapping[str, Any], name: str, n: int) -> Sequence[Any] | None:
    """The dataset column ``name`` (a list of length ``n``) or None when it was not passed.

    A column of the wrong length is a caller error for the whole batch, so it raises.
    """
    values = columns.get(name)
    if values is None:
        return None
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != n:
        got = len(values) if isinstance(values, Sequence) else type(values).__name__
        raise ValueError(
            f"column {name!r} must be a list with one entry per completion ({n}), got {got}"
        )
    return values


class FailureLog:
    """Counts per-sample failures by reason and logs each with its index."""

    def __init__(self, reward_name: str) -> None:
        self.reward_name = reward_name
        self.failures: Counter[str] = Counter()

    def record(self, index: int, error: Exception) -> None:
        reason = error.reason if isinstance(error, SampleError) else type(error).__name__
        self.failures[reason] += 1
        logger.warning("%s reward: sample %d not scored (None): %s", self.reward_name, index, error)
