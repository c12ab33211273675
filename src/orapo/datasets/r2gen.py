"""R2Gen's ``annotation.json``: the layout many report-generation papers distribute.

::

    {"train": [{"id": "...", "study_id": 50414267, "subject_id": 10000032,
                "report": "There is no focal consolidation ...",
                "image_path": ["p10/p10000032/s50414267/02aa804e-....jpg"], "split": "train"},
               ...],
     "val": [...], "test": [...]}

``image_path`` entries are relative to the ``images/`` folder beside the file. MIMIC-CXR's
file has one entry per *image* (so a study with two images appears twice, same report);
IU X-ray's has one entry per study (``id`` like ``CXR2384_IM-0942``, two images, no
``study_id``). :func:`read_annotation` validates entries; :func:`group_entries` merges the
entries of one study and skips the ones that contradict each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.spec import PrepareError
from orapo.datasets.tables import require_file


@dataclass
class R2GenEntry:
    """One validated entry; ``split`` is already a manifest split; ``where`` names it."""

    id: str
    split: str
    report: str
    image_paths: list[str]
    study_id: str | None
    subject_id: str | None
    where: str


def _optional_id(value: object) -> str | None:
    """``50414267`` or ``"50414267"`` -> ``"50414267"``; absent -> None; else ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not an integer id")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    raise ValueError(f"{value!r} is not an integer id")


def _entry_problem(entry: object, key: str) -> str | None:
    if not isinstance(entry, dict):
        return f"an entry must be an object, got {type(entry).__name__}"
    for name in ("id", "report", "image_path"):
        if name not in entry:
            return f"missing field {name!r}"
    if not isinstance(entry["id"], str) or not entry["id"].strip():
        return "field 'id' must be a non-empty string"
    if not isinstance(entry["report"], str):
        return "field 'report' must be a string"
    paths = entry["image_path"]
    if not isinstance(paths, list) or not paths:
        return "field 'image_path' must be a non-empty list"
    if not all(isinstance(p, str) and p.strip() for p in paths):
        return "field 'image_path' must hold non-empty strings"
    if "split" in entry and entry["split"] != key:
        return f"field 'split' is {entry['split']!r} but the entry is listed under {key!r}"
    return None


def read_annotation(
    path: Path, split_map: Mapping[str, str], log: SkipLog, track: Tracker
) -> list[R2GenEntry]:
    """Validate and return the entries of ``path``; malformed entries are skipped and counted.

    Top-level keys are split names mapped through ``split_map``; an unknown key or a file that
    is not JSON raises :class:`PrepareError`.
    """
    require_file(path, "R2Gen annotation file", "set it with --file annotation=PATH")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PrepareError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise PrepareError(f"{path}: expected an object with train/val/test lists")
    entries: list[R2GenEntry] = []
    for key, items in data.items():
        if key not in split_map:
            raise PrepareError(
                f"{path}: unknown split {key!r}; known: {', '.join(sorted(split_map))} "
                f"(add it with --split-map {key}=train|val|test)"
            )
        if not isinstance(items, list):
            raise PrepareError(f"{path}: {key!r} must be a list of entries")
        for i, entry in enumerate(track(items, f"reading {path.name} [{key}]")):
            where = f"{path}: {key}[{i}]"
            problem = _entry_problem(entry, key)
            if problem is None:
                try:
                    study_id = _optional_id(entry.get("study_id"))
                    subject_id = _optional_id(entry.get("subject_id"))
                except ValueError as err:
                    problem = f"field study_id/subject_id: {err}"
            if problem is not None:
                log.skip("malformed entry", where, problem)
                continue
            entries.append(
                R2GenEntry(
                    id=entry["id"].strip(),
                    split=split_map[key],
                    report=entry["report"],
                    image_paths=[p.strip() for p in entry["image_path"]],
                    study_id=study_id,
                    subject_id=subject_id,
                    where=where,
                )
            )
    return entries


def group_entries(
    entries: list[R2GenEntry], study_key: Callable[[R2GenEntry], str], log: SkipLog
) -> list[list[R2GenEntry]]:
    """Group entries by study, in order of first appearance.

    A repeated entry ``id`` is skipped (``duplicate id``); a study whose entries disagree on
    the report text or the split is skipped whole (``conflicting entries``).
    """
    groups: dict[str, list[R2GenEntry]] = {}
    seen: dict[str, str] = {}
    for e in entries:
        if e.id in seen:
            log.skip("duplicate id", e.where, f"entry id {e.id!r} already at {seen[e.id]}")
            continue
        seen[e.id] = e.where
        groups.setdefault(study_key(e), []).append(e)
    out = []
    for key, group in groups.items():
        splits = {e.split for e in group}
        reports = {" ".join(e.report.split()) for e in group}
        if len(splits) > 1 or len(reports) > 1:
            what = "splits " + ", ".join(sorted(splits)) if len(splits) > 1 else "report texts"
            log.skip("conflicting entries", group[0].where, f"study {key}: different {what}")
            continue
        out.append(group)
    return out
