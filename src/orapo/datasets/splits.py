"""Where a study goes and which of its images are kept: hash splits and view selection."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path


def hash_split(key: str, seed: int, fractions: Sequence[float]) -> str:
    """Deterministic train/val/test assignment of ``key`` by a seeded hash.

    ``u = sha256(f"{seed}:{key}")`` read as a number in [0, 1); the split is the first whose
    cumulative fraction exceeds ``u``. A key's split does not depend on which other keys are
    present, so a subset of the files gets the same assignment as the whole.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    cumulative = 0.0
    for name, fraction in zip(("train", "val", "test"), fractions, strict=True):
        cumulative += fraction
        if u < cumulative:
            return name
    return "test"


def select_views(
    images: Sequence[tuple[Path, str]], views: Sequence[str] | None, max_images: int
) -> list[tuple[Path, str]]:
    """Pick images by view preference.

    ``images`` are ``(path, view)`` pairs in a stable order; ``views`` the accepted view names
    in order of preference (``None`` or ``("ANY",)``: every view, order kept); at most
    ``max_images`` are returned (0: all accepted). Views compare case-insensitively.
    """
    if views is None or [v.upper() for v in views] == ["ANY"]:
        chosen = list(images)
    else:
        rank = {v.upper(): i for i, v in enumerate(views)}
        accepted = [(p, v) for p, v in images if v.upper() in rank]
        chosen = sorted(accepted, key=lambda pv: rank[pv[1].upper()])  # stable within a view
    return chosen if max_images == 0 else chosen[:max_images]
