"""The manifest: the one on-disk format every dataset in orapo becomes and every command reads.

A manifest is a JSONL file, one study per line::

    {"id": "synth-000017", "split": "train", "images": ["images/synth-000017.png"],
     "findings": "The heart is enlarged. ...", "impression": "Cardiomegaly.",
     "labels": {"Cardiomegaly": 1, "Pneumothorax": 0, ...}, "source": {...}}

Fields:

==============  ========  ===================================================================
field           required  meaning
==============  ========  ===================================================================
``id``          yes       non-empty string, unique in the file
``split``       yes       one of ``train``, ``val``, ``test``
``images``      yes       non-empty list of image paths, relative to the manifest's folder
                          (absolute paths are allowed for data that stays where it is)
``findings``    yes       FINDINGS section text (string, may be empty if impression is not)
``impression``  yes       IMPRESSION section text (string, may be empty if findings is not)
``labels``      no        observation name -> 1 / 0 / -1 / null (the 14 CheXpert names);
                          missing names mean not mentioned
``source``      no        free-form object: where the study and its labels came from
==============  ========  ===================================================================

:func:`read_manifest` validates every line and raises :class:`ManifestError` naming the file,
line number and field of the first bad line, or with ``skip_bad=True`` skips bad lines and
counts them by reason in :attr:`Manifest.skipped`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from orapo.atomic import atomic_write_text  # re-exported: callers write manifests with it
from orapo.errors import UserError
from orapo.observations import LabelDict, labels_to_dict_checked

SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_FIELDS: tuple[str, ...] = ("id", "split", "images", "findings", "impression")


class ManifestError(UserError, ValueError):
    """A manifest line that does not follow the format; the message names file, line, field."""


@dataclass
class Study:
    """One study of a manifest."""

    id: str
    split: str
    images: list[str]
    findings: str
    impression: str
    labels: LabelDict | None = None
    source: dict[str, Any] | None = None

    @property
    def report(self) -> str:
        """The full report text, as the policy is trained to write it."""
        return format_report(self.findings, self.impression)

    def image_paths(self, root: Path) -> list[Path]:
        """Image paths resolved against the manifest's folder ``root``."""
        return [p if p.is_absolute() else root / p for p in map(Path, self.images)]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "split": self.split,
            "images": list(self.images),
            "findings": self.findings,
            "impression": self.impression,
        }
        if self.labels is not None:
            out["labels"] = dict(self.labels)
        if self.source is not None:
            out["source"] = self.source
        return out


def format_report(findings: str, impression: str) -> str:
    """Join the two sections the way orapo writes and reads reports everywhere."""
    parts = []
    if findings.strip():
        parts.append(f"FINDINGS: {findings.strip()}")
    if impression.strip():
        parts.append(f"IMPRESSION: {impression.strip()}")
    return "\n".join(parts)


@dataclass
class Manifest:
    """The studies of one manifest file, with the folder image paths are relative to."""

    path: Path
    studies: list[Study]
    skipped: Counter = field(default_factory=Counter)

    @property
    def root(self) -> Path:
        return self.path.parent

    def split(self, name: str) -> list[Study]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits are: {', '.join(SPLITS)}")
        return [s for s in self.studies if s.split == name]

    def __len__(self) -> int:
        return len(self.studies)

    def __iter__(self) -> Iterator[Study]:
        return iter(self.studies)


def parse_study(obj: Any, where: str) -> Study:
    """Validate one decoded JSON object; ``where`` (``"file:line"``) prefixes every error."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: a study must be a JSON object, got {type(obj).__name__}")
    for name in REQUIRED_FIELDS:
        if name not in obj:
            raise ManifestError(f"{where}: missing required field {name!r}")
    if not isinstance(obj["id"], str) or not obj["id"].strip():
        raise ManifestError(f"{where}: field 'id' must be a non-empty string")
    if obj["split"] not in SPLITS:
        raise ManifestError(
            f"{where}: field 'split' is {obj['split']!r}; expected one of {', '.join(SPLITS)}"
        )
    images = obj["images"]
    if not isinstance(images, list) or not images:
        raise ManifestError(f"{where}: field 'images' must be a non-empty list of paths")
    for i, p in enumerate(images):
        if not isinstance(p, str) or not p:
            raise ManifestError(f"{where}: field 'images[{i}]' must be a non-empty string")
    for name in ("findings", "impression"):
        if not isinstance(obj[name], str):
            raise ManifestError(
                f"{where}: field {name!r} must be a string, got {type(obj[name]).__name__}"
            )
    if not obj["findings"].strip() and not obj["impression"].strip():
        raise ManifestError(f"{where}: fields 'findings' and 'impression' are both empty")
    labels = obj.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise ManifestError(f"{where}: field 'labels' must be an object or null")
        try:
            labels = labels_to_dict_checked(labels)
        except (KeyError, ValueError) as err:
            msg = err.args[0] if err.args else str(err)
            raise ManifestError(f"{where}: field 'labels': {msg}") from None
    source = obj.get("source")
    if source is not None and not isinstance(source, dict):
        raise ManifestError(f"{where}: field 'source' must be an object or null")
    return Study(
        id=obj["id"],
        split=obj["split"],
        images=list(images),
        findings=obj["findings"],
        impression=obj["impression"],
        labels=labels,
        source=source,
    )


class JsonLine(NamedTuple):
    """One non-blank line of a JSONL stream: ``where`` is ``name:line``; ``value`` the decoded
    JSON, or None with ``problem`` saying why it is not JSON."""

    line: int
    where: str
    value: Any
    problem: str | None


def read_jsonl(lines: Iterable[str], name: str) -> Iterator[JsonLine]:
    """The non-blank lines of a JSONL stream (a file, stdin, a list of strings), decoded; a
    line that is not JSON comes with ``problem = "invalid JSON (...)"`` so the caller decides
    whether it stops the read or is skipped."""
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            value, problem = json.loads(text), None
        except json.JSONDecodeError as err:
            value, problem = None, f"invalid JSON ({err.msg})"
        yield JsonLine(lineno, where, value, problem)


def _reason(message: str) -> str:
    """The part of an error message after ``file:line: `` (for counting skipped lines)."""
    return message.split(": ", 1)[1] if ": " in message else message


def read_manifest(path: str | os.PathLike, *, skip_bad: bool = False) -> Manifest:
    """Read and validate a manifest.

    Blank lines are ignored. The first bad line raises :class:`ManifestError` (e.g.
    ``data/m.jsonl:12: missing required field 'split'``); with ``skip_bad`` bad lines are
    skipped and counted by reason in ``Manifest.skipped``. Duplicate ids are bad lines too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    studies: list[Study] = []
    skipped: Counter = Counter()
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for line in read_jsonl(fh, str(path)):
            where = line.where
            try:
                if line.problem is not None:
                    raise ManifestError(f"{where}: {line.problem}")
                study = parse_study(line.value, where)
                if study.id in seen:
                    raise ManifestError(f"{where}: duplicate id {study.id!r}")
            except ManifestError as err:
                if not skip_bad:
                    raise
                skipped[_reason(str(err))] += 1
                continue
            seen.add(study.id)
            studies.append(study)
    return Manifest(path=path, studies=studies, skipped=skipped)


def write_manifest(path: str | os.PathLike, studies: Iterable[Study | Mapping[str, Any]]) -> int:
    """Validate and write studies as a manifest, atomically. Returns the number written."""
    lines = []
    seen: set[str] = set()
    for i, s in enumerate(studies):
        obj = s.to_json() if isinstance(s, Study) else dict(s)
        study = parse_study(obj, f"study #{i}")
        if study.id in seen:
            raise ManifestError(f"study #{i}: duplicate id {study.id!r}")
        seen.add(study.id)
        lines.append(json.dumps(study.to_json(), ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return len(lines)
