"""What a dataset conversion reports as it goes: the skip log and the progress bars.

Nothing is dropped silently: a skip names the file and line (or entry) and is counted by
reason in a :class:`SkipLog`; with ``strict`` the first skip raises
:class:`~orapo.datasets.spec.PrepareError` instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from orapo.datasets.spec import PrepareError


@dataclass
class SkipLog:
    """Counts what was skipped, by reason, with the first few messages of each reason.

    ``notes`` counts things that were kept but handled specially (e.g. studies labelled by the
    orapo labeler because the dataset's label file has no row for them).
    """

    strict: bool = False
    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        """Record one skipped row/entry/study; ``where`` is ``file:line`` or ``file: entry``."""
        message = f"{where}: {reason}" + (f": {detail}" if detail else "")
        if self.strict:
            raise PrepareError(f"{message} (--strict makes every skip an error)")
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.max_examples:
            shown.append(message)

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Tracker:
    """Thin wrapper over a rich Progress (or nothing): ``for x in tracker(items, "reading")``."""

    def __init__(self, progress: Any = None) -> None:
        self.progress = progress

    def __call__(
        self, items: Iterable[Any], description: str, total: int | None = None
    ) -> Iterator[Any]:
        if self.progress is None:
            yield from items
            return
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        task = self.progress.add_task(description, total=total)
        done = 0
        for item in items:
            yield item
            done += 1
            self.progress.update(task, completed=done)
        self.progress.update(task, total=done, completed=done)
