"""Small training subsets: the paper's 400 and 1K studies, chosen deterministically.

``orapo data subset MANIFEST --n 1000 --strategy stratified --seed 0 -o OUT`` replaces one
split (``--split``, default ``train``) by ``n`` of its studies and keeps the other splits as
they are (the trainer needs val and test), writing a new manifest whose image paths are
rewritten relative to OUT's folder, and ``<OUT stem>.subset.json`` with the counts.

Strategies (registry :data:`STRATEGIES`; a strategy is ``f(studies, n, rng, **options) ->
chosen studies``):

- ``random``: ``n`` studies drawn uniformly.
- ``stratified`` (:func:`stratified_subset`), in two phases:

  1. *coverage*: for each observation with positives in the split, rarest first (fewest
     positives; ties in canonical order), add random positive studies until the subset holds
     ``min(min_per_observation, positives in the split)`` positives of it (default
     ``min_per_observation = ceil(n / 100)``, at least 1). Studies added for a rare finding
     count for every finding they carry.
  2. *fill*: studies are grouped into strata by their exact set of positive observations
     (``{"No Finding"}`` is the normal stratum). Each stratum's target is its share of the
     split, ``n * N_s / N``; the remaining places go to strata in proportion to how far
     they are below target (largest remainders first, ties in seeded random order), drawn at
     random inside each stratum. Normal studies therefore end near their share of the split,
     while phase 1 lifts the rare findings.

A positive is state 1 (``uncertain_positive`` counts -1 too). The pool is sorted by id
before any draw, so the same manifest content and seed give the same ids whatever the line
order.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orapo.atomic import atomic_write_text
from orapo.errors import UserError
from orapo.manifest import Study, read_manifest, write_manifest
from orapo.observations import OBSERVATIONS, positives
from orapo.registry import Registry


class SubsetError(UserError, ValueError):
    """A subset that cannot be drawn as asked (too large, unlabelled studies, ...)."""


Strategy = Callable[..., list[Study]]
STRATEGIES: Registry[Strategy] = Registry("subset strategy")


def study_positives(study: Study, uncertain_positive: bool = False) -> frozenset[str]:
    """The observations a study counts as positive (empty when it has no labels)."""
    return frozenset(positives(study.labels or {}, uncertain_positive=uncertain_positive))


def observation_counts(
    studies: Sequence[Study], uncertain_positive: bool = False
) -> dict[str, int]:
    """Observation name -> number of studies positive for it (all 14, canonical order)."""
    counts: Counter = Counter()
    for s in studies:
        counts.update(study_positives(s, uncertain_positive))
    return {name: counts.get(name, 0) for name in OBSERVATIONS}


def default_min_per_observation(n: int) -> int:
    """``ceil(n / 100)``, at least 1: 10 for the 1K subset, 4 for the 400 one."""
    return max(1, math.ceil(n / 100))


@STRATEGIES.register("random")
def random_subset(studies: Sequence[Study], n: int, rng: random.Random, **_: Any) -> list[Study]:
    """``n`` studies drawn uniformly without replacement."""
    return rng.sample(list(studies), n)


def _largest_remainder(shares: dict[Any, float], total: int, rng: random.Random) -> dict:
    """Integers summing to ``total`` proportional to ``shares`` (Hamilton's method).

    >>> _largest_remainder({"a": 1.0, "b": 1.0, "c": 2.0}, 4, random.Random(0))
    {'a': 1, 'b': 1, 'c': 2}
    """
    weight = sum(shares.values())
    if total <= 0 or weight <= 0:
        return {k: 0 for k in shares}
    exact = {k: total * v / weight for k, v in shares.items()}
    out = {k: math.floor(x) for k, x in exact.items()}
    left = total - sum(out.values())
    tiebreak = {k: rng.random() for k in shares}
    order = sorted(shares, key=lambda k: (-(exact[k] - out[k]), tiebreak[k]))
    for k in order[:left]:
        out[k] += 1
    return out


@STRATEGIES.register("stratified")
def stratified_subset(
    studies: Sequence[Study],
    n: int,
    rng: random.Random,
    *,
    min_per_observation: int | None = None,
    uncertain_positive: bool = False,
) -> list[Study]:
    """Coverage of every observation, then label-combination strata (module docstring)."""
    unlabelled = [s.id for s in studies if s.labels is None]
    if unlabelled:
        raise SubsetError(
            f"--strategy stratified needs labels; {len(unlabelled)} studies have none "
            f"(first: {unlabelled[0]}). Prepare with labels or use --strategy random."
        )
    m = default_min_per_observation(n) if min_per_observation is None else min_per_observation
    if m < 0:
        raise SubsetError("--min-per-observation must be >= 0")
    pos = {s.id: study_positives(s, uncertain_positive) for s in studies}
    chosen: dict[str, Study] = {}

    # Phase 1: coverage, rarest observation first.
    by_obs = {o: [s for s in studies if o in pos[s.id]] for o in OBSERVATIONS}
    rarest = sorted((o for o in OBSERVATIONS if by_obs[o]), key=lambda o: len(by_obs[o]))
    for o in rarest:
        have = sum(1 for sid in chosen if o in pos[sid])
        need = min(min(m, len(by_obs[o])) - have, n - len(chosen))
        if need <= 0:
            continue
        pool = [s for s in by_obs[o] if s.id not in chosen]
        for s in rng.sample(pool, min(need, len(pool))):
            chosen[s.id] = s

    # Phase 2: fill by label-combination strata towards each stratum's share of the split.
    strata: dict[tuple[str, ...], list[Study]] = {}
    for s in studies:
        strata.setdefault(tuple(sorted(pos[s.id])), []).append(s)
    have_in = Counter(tuple(sorted(pos[sid])) for sid in chosen)
    deficit = {
        k: max(0.0, n * len(members) / len(studies) - have_in[k]) for k, members in strata.items()
    }
    quotas = _largest_remainder(deficit, n - len(chosen), rng)
    for key in sorted(strata):
        free = [s for s in strata[key] if s.id not in chosen]
        for s in rng.sample(free, min(quotas[key], len(free))):
            chosen[s.id] = s
    if len(chosen) < n:  # rounding against a stratum's size: top up at random
        rest = [s for s in studies if s.id not in chosen]
        for s in rng.sample(rest, n - len(chosen)):
            chosen[s.id] = s
    return list(chosen.values())


@dataclass
class SubsetResult:
    manifest: Path
    summary_path: Path
    summary: dict[str, Any]
    chosen_ids: list[str]


def draw_subset(
    studies: Sequence[Study],
    n: int,
    strategy: str = "stratified",
    seed: int = 0,
    **options: Any,
) -> list[Study]:
    """``n`` of ``studies`` by ``strategy``, deterministic in (study ids, labels, seed).

    The result keeps the input order.
    """
    if n < 1:
        raise SubsetError(f"--n must be >= 1, got {n}")
    if n > len(studies):
        raise SubsetError(f"--n {n} is larger than the {len(studies)} studies to draw from")
    pool = sorted(studies, key=lambda s: s.id)
    picked = STRATEGIES.get(strategy)(pool, n, random.Random(seed), **options)
    ids = {s.id for s in picked}
    if len(ids) != n:
        raise AssertionError(f"strategy {strategy!r} returned {len(ids)} distinct studies, not {n}")
    return [s for s in studies if s.id in ids]


def _rebase(study: Study, old_root: Path, new_root: Path) -> Study:
    images = [
        p
        if os.path.isabs(p)
        else Path(os.path.relpath(os.path.abspath(old_root / p), new_root)).as_posix()
        for p in study.images
    ]
    return replace(study, images=images)


def make_subset(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    n: int,
    *,
    strategy: str = "stratified",
    seed: int = 0,
    split: str = "train",
    min_per_observation: int | None = None,
    uncertain_positive: bool = False,
) -> SubsetResult:
    """Write a manifest whose ``split`` is replaced by an ``n``-study subset (module docstring)."""
    source = read_manifest(manifest)
    pool = source.split(split)
    options: dict[str, Any] = {"uncertain_positive": uncertain_positive}
    if strategy == "stratified":
        options["min_per_observation"] = min_per_observation
    elif min_per_observation is not None:
        raise SubsetError("--min-per-observation applies to --strategy stratified only")
    chosen = draw_subset(pool, n, strategy, seed, **options)
    chosen_ids = {s.id for s in chosen}
    out_path = Path(out)
    out_root = Path(os.path.abspath(out_path.parent))
    old_root = Path(os.path.abspath(source.root))
    kept = [s for s in source.studies if s.split != split or s.id in chosen_ids]
    write_manifest(out_path, [_rebase(s, old_root, out_root) for s in kept])
    full = observation_counts(pool, uncertain_positive)
    sub = observation_counts(chosen, uncertain_positive)
    summary = {
        "source_manifest": str(manifest),
        "split": split,
        "n": n,
        "strategy": strategy,
        "seed": seed,
        "min_per_observation": (
            (default_min_per_observation(n) if min_per_observation is None else min_per_observation)
            if strategy == "stratified"
            else None
        ),
        "uncertain_positive": uncertain_positive,
        "split_size": len(pool),
        "other_splits_kept": dict(Counter(s.split for s in kept if s.split != split)),
        "positives": {name: {"split": full[name], "subset": sub[name]} for name in OBSERVATIONS},
    }
    summary_path = out_path.with_name(out_path.stem + ".subset.json")
    atomic_write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return SubsetResult(out_path, summary_path, summary, sorted(chosen_ids))


def render_subset_summary(summary: dict[str, Any], console: Any) -> None:
    """Rich table: positives per observation in the subset vs the full split."""
    from rich.table import Table

    n, total = summary["n"], summary["split_size"]
    table = Table(
        title=f"{summary['strategy']} subset of {n} / {total} {summary['split']} studies "
        f"(seed {summary['seed']})"
    )
    table.add_column("observation")
    table.add_column("split", justify="right")
    table.add_column("split %", justify="right")
    table.add_column("subset", justify="right")
    table.add_column("subset %", justify="right")
    for name, c in summary["positives"].items():
        table.add_row(
            name,
            str(c["split"]),
            f"{100 * c['split'] / total:.1f}",
            str(c["subset"]),
            f"{100 * c['subset'] / n:.1f}",
        )
    console.print(table)
