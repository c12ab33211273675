"""Counts and prevalences of any manifest: studies per split, label states per observation.

Works on every valid manifest (synthetic or converted from a real dataset). Studies without a
``labels`` field are counted as unlabelled and left out of the per-observation counts; a
labelled study that does not name an observation counts as "not mentioned" for it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orapo.atomic import atomic_path
from orapo.manifest import SPLITS, Manifest
from orapo.observations import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN

#: Column order of the state counts.
STATE_NAMES: dict[int | None, str] = {
    POSITIVE: "positive",
    NEGATIVE: "negative",
    UNCERTAIN: "uncertain",
    None: "not mentioned",
}


@dataclass
class ManifestStats:
    """Counts of one manifest (or of one split of it)."""

    path: str
    studies: int = 0
    images: int = 0
    splits: Counter = field(default_factory=Counter)
    unlabelled: int = 0
    # observation -> state (1, 0, -1, None) -> count, over labelled studies
    states: dict[str, Counter] = field(default_factory=lambda: {n: Counter() for n in OBSERVATIONS})
    skipped: Counter = field(default_factory=Counter)

    @property
    def labelled(self) -> int:
        return self.studies - self.unlabelled

    def share(self, name: str, state: int | None) -> float:
        """Fraction of labelled studies with ``state`` for observation ``name`` (NaN if none)."""
        return self.states[name][state] / self.labelled if self.labelled else float("nan")


def manifest_stats(manifest: Manifest, split: str | None = None) -> ManifestStats:
    """Count studies, splits and label states (of ``split`` only, when given)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    stats = ManifestStats(path=str(manifest.path), skipped=Counter(manifest.skipped))
    for study in manifest:
        if split is not None and study.split != split:
            continue
        stats.studies += 1
        stats.images += len(study.images)
        stats.splits[study.split] += 1
        if study.labels is None:
            stats.unlabelled += 1
            continue
        for name in OBSERVATIONS:
            stats.states[name][study.labels.get(name)] += 1
    return stats


def stats_table(stats: ManifestStats):
    """A rich Table: one row per observation, count and share per label state."""
    from rich.table import Table

    table = Table(title=f"{stats.path}: {stats.labelled} labelled studies")
    table.add_column("observation")
    for state_name in STATE_NAMES.values():
        table.add_column(state_name, justify="right")
    for name in OBSERVATIONS:
        cells = []
        for state in STATE_NAMES:
            count = stats.states[name][state]
            share = stats.share(name, state)
            cells.append(f"{count} ({share:.1%})" if stats.labelled else "0")
        table.add_row(name, *cells)
    return table


def split_table(stats: ManifestStats):
    """A rich Table of studies per split."""
    from rich.table import Table

    table = Table(title="studies per split")
    table.add_column("split")
    table.add_column("studies", justify="right")
    for name in SPLITS:
        table.add_row(name, str(stats.splits[name]))
    table.add_row("total", str(stats.studies))
    if stats.unlabelled:
        table.add_row("unlabelled", str(stats.unlabelled))
    return table


def plot_stats(stats: ManifestStats, path: str | Path) -> Path:
    """Horizontal stacked bars (positive, uncertain, negative share) per observation, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = list(OBSERVATIONS)[::-1]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    left = [0.0] * len(names)
    colours = {POSITIVE: "#c0392b", UNCERTAIN: "#f39c12", NEGATIVE: "#2e86c1"}
    for state, colour in colours.items():
        shares = [stats.share(n, state) if stats.labelled else 0.0 for n in names]
        ax.barh(names, shares, left=left, color=colour, label=STATE_NAMES[state])
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of {stats.labelled} labelled studies (rest: not mentioned)")
    split_text = ", ".join(f"{s} {stats.splits[s]}" for s in SPLITS)
    ax.set_title(f"{Path(stats.path).name}: {split_text}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
