"""What every dataset converter shares: options, the skip log, candidates, and finishing.

A converter (one per dataset, registered in :data:`DATASETS`) reads a distribution layout and
returns :class:`Candidate` studies: id, split, source image paths, FINDINGS, IMPRESSION and,
when the dataset has its own labels, those. :func:`prepare` then does the same steps for every
dataset, in this order, each one counting what it skips:

1. duplicate ids: the first study with an id is kept, later ones are skipped;
2. check the required sections are non-empty (``--require``), then blank the sections not
   kept (``--sections``): skip reasons ``empty report``, ``no findings section``,
   ``no impression section``;
3. every image must exist (``missing image``) and, with ``--verify-images``, open with Pillow
   (``unreadable image``);
4. labels: the dataset's own, or the orapo labeler for the rest (counted in the summary);
5. image paths relative to the manifest's folder (or absolute, or copied beside it);
6. the manifest and ``prepare_summary.json`` are written atomically.

Nothing is dropped silently: a skip names the file and line (or entry) and is counted by
reason; with ``strict`` the first skip raises :class:`PrepareError` instead.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from orapo.manifest import Study, atomic_write_text, format_report, write_manifest
from orapo.observations import OBSERVATIONS, LabelDict, labels_to_dict_checked, parse_state
from orapo.registry import Registry

SECTIONS_CHOICES: tuple[str, ...] = ("both", "findings", "impression")
REQUIRE_CHOICES: tuple[str, ...] = ("any", "findings", "impression", "both")
#: Split names of the distributions -> manifest splits (extend with ``--split-map``).
DEFAULT_SPLIT_MAP: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
}
SUMMARY_NAME = "prepare_summary.json"
#: Batch size for the orapo labeler.
LABEL_BATCH = 256


class PrepareError(RuntimeError):
    """Input that cannot be converted (or any skip under ``--strict``); names file and line."""


# --------------------------------------------------------------------------- options


@dataclass
class PrepareOptions:
    """Everything ``orapo data prepare`` can be told. ``None`` means the dataset's default."""

    root: Path
    out: Path
    format: str | None = None
    labels: str = "auto"
    labeler: str = "rule"
    sections: str | None = None
    require: str | None = None
    views: tuple[str, ...] | None = None
    max_images: int | None = None
    reports_root: Path | None = None
    images_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    split_map: dict[str, str] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] | None = None
    seed: int | None = None
    r2gen_field: str | None = None
    copy_images: bool = False
    absolute_paths: bool = False
    verify_images: bool = False
    strict: bool = False
    manifest_name: str = "manifest.jsonl"

    def file(self, spec: DatasetSpec, key: str) -> Path:
        """Path of the dataset file ``key``: ``--file key=PATH`` or the default under root."""
        name = self.files.get(key, spec.files[key])
        path = Path(name)
        return path if path.is_absolute() else self.root / path

    def column(self, spec: DatasetSpec, key: str) -> str:
        return self.columns.get(key, spec.columns[key])

    def splits(self) -> dict[str, str]:
        return {**DEFAULT_SPLIT_MAP, **self.split_map}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out


# Options that only some datasets read; the others reject them (see DatasetSpec.options).
DATASET_SPECIFIC_OPTIONS: tuple[str, ...] = (
    "views",
    "reports_root",
    "split_fractions",
    "seed",
    "r2gen_field",
)


# --------------------------------------------------------------------------- skip log


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


# --------------------------------------------------------------------------- candidates


@dataclass
class Candidate:
    """A study as a converter found it, before the shared checks of :func:`prepare`.

    ``images`` are source paths (absolute or relative to the working directory), in order of
    preference; ``where`` names the file (and line) the study came from, for messages.
    ``labels`` are the dataset's own labels, or ``None`` when it has none for this study.
    """

    id: str
    split: str
    images: list[Path]
    findings: str
    impression: str
    where: str
    labels: LabelDict | None = None
    source: dict[str, Any] = field(default_factory=dict)


@dataclass
class Collected:
    """What a converter returns: candidates, the label source it used, the files it read."""

    candidates: list[Candidate]
    label_source: str
    inputs: dict[str, str] = field(default_factory=dict)


Collector = Callable[["PrepareOptions", "DatasetSpec", SkipLog, "Tracker"], Collected]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its formats, files, columns, label sources and defaults.

    ``files`` and ``columns`` map keys (for ``--file KEY=PATH`` / ``--column KEY=NAME``) to the
    names of the distribution; ``options`` lists the dataset-specific options it reads (from
    :data:`DATASET_SPECIFIC_OPTIONS`); ``defaults`` fills options left at ``None``.
    """

    name: str
    summary: str
    formats: tuple[str, ...]
    collect: Collector
    label_sources: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, str] = field(default_factory=dict)
    options: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


# --------------------------------------------------------------------------- progress


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


# --------------------------------------------------------------------------- tables


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")  # type: ignore[return-value]
    return path.open(encoding="utf-8", newline="")


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        extra = f"; {hint}" if hint else ""
        raise PrepareError(f"{what} {path} does not exist{extra}")
    return path


def read_table(
    path: Path,
    needed: Mapping[str, str],
    *,
    optional: Mapping[str, str] | None = None,
    option: str = "--column",
) -> Iterator[tuple[str, dict[str, str], str | None]]:
    """Read a CSV (``.csv`` or ``.csv.gz``), checking its header has the ``needed`` columns.

    ``needed`` maps keys to column names; ``optional`` columns are read when present (else
    ``""``). Yields ``(where, row, problem)`` per record, where ``where`` is ``file:line`` of
    the record's first line, ``row`` maps each *key* to its value, and ``problem`` is ``None``
    or why the row is malformed (wrong number of fields). A header missing columns raises
    :class:`PrepareError` naming the file, the missing columns and the ones present.
    """
    csv.field_size_limit(1 << 30)
    try:
        with open_text(path) as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise PrepareError(f"{path}: empty file, expected a CSV header") from None
            missing = [f"{name!r} ({key})" for key, name in needed.items() if name not in header]
            if missing:
                raise PrepareError(
                    f"{path}: missing column(s) {', '.join(missing)}; the file has: "
                    f"{', '.join(header)}. Name the right columns with {option} KEY=NAME."
                )
            index = {key: header.index(name) for key, name in needed.items()}
            for key, name in (optional or {}).items():
                index[key] = header.index(name) if name in header else -1
            previous = reader.line_num
            for record in reader:
                where = f"{path}:{previous + 1}"
                previous = reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                problem = None
                if len(record) != len(header):
                    problem = f"{len(record)} fields, the header has {len(header)}"
                row = {key: (record[i] if 0 <= i < len(record) else "") for key, i in index.items()}
                yield where, row, problem
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        if isinstance(err, FileNotFoundError):
            raise PrepareError(f"{path} does not exist") from None
        raise PrepareError(f"{path}: cannot be read as CSV ({err})") from None


def parse_label_row(values: Mapping[str, object]) -> LabelDict:
    """Observation name -> raw value (``"1.0"``, ``""``, ``-1``...) -> a label dict (all 14)."""
    out: LabelDict = {}
    for name in OBSERVATIONS:
        out[name] = parse_state(values.get(name))
    return out


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


# --------------------------------------------------------------------------- prepare


@dataclass
class PrepareResult:
    manifest: Path
    summary_path: Path
    summary: dict[str, Any]
    studies: list[Study]


def resolve_options(spec: DatasetSpec, options: PrepareOptions) -> PrepareOptions:
    """Fill dataset defaults and reject options that do not apply (with a fix-it message)."""
    for name in DATASET_SPECIFIC_OPTIONS:
        if getattr(options, name) is not None and name not in spec.options:
            flag = "--" + name.replace("_", "-")
            raise PrepareError(f"{flag} does not apply to dataset {spec.name!r}")
    filled = {
        name: value for name, value in spec.defaults.items() if getattr(options, name, None) is None
    }
    resolved = replace(options, **filled)
    if resolved.format is None:
        resolved.format = spec.formats[0]
    if resolved.format not in spec.formats:
        raise PrepareError(
            f"unknown format {resolved.format!r} for dataset {spec.name!r}; "
            f"valid formats are: {', '.join(spec.formats)}"
        )
    if resolved.sections not in SECTIONS_CHOICES:
        raise PrepareError(
            f"--sections {resolved.sections!r}; valid: {', '.join(SECTIONS_CHOICES)}"
        )
    if resolved.require not in REQUIRE_CHOICES:
        raise PrepareError(f"--require {resolved.require!r}; valid: {', '.join(REQUIRE_CHOICES)}")
    if resolved.sections != "both" and resolved.require not in ("any", resolved.sections):
        raise PrepareError(
            f"--require {resolved.require} cannot be met with --sections {resolved.sections} "
            f"(the other section is left empty); use --require any or --sections both"
        )
    if resolved.r2gen_field not in (None, "findings", "impression"):
        raise PrepareError(f"--r2gen-field {resolved.r2gen_field!r}; valid: findings, impression")
    if resolved.max_images is not None and resolved.max_images < 0:
        raise PrepareError("--max-images must be >= 0 (0 keeps every selected image)")
    fractions = resolved.split_fractions
    if fractions is not None and (
        len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6
    ):
        raise PrepareError(
            f"--split-fractions {fractions} must be three non-negative numbers summing to 1"
        )
    for key in resolved.files:
        if key not in spec.files:
            raise PrepareError(
                f"--file {key}=...: unknown file key for {spec.name!r}; "
                f"valid keys are: {', '.join(sorted(spec.files))}"
            )
    for key in resolved.columns:
        if key not in spec.columns:
            raise PrepareError(
                f"--column {key}=...: unknown column key for {spec.name!r}; "
                f"valid keys are: {', '.join(sorted(spec.columns)) or '(none)'}"
            )
    bad_targets = sorted(set(resolved.split_map.values()) - {"train", "val", "test"})
    if bad_targets:
        raise PrepareError(f"--split-map targets must be train, val or test, got {bad_targets}")
    valid_labels = ("auto", *spec.label_sources, "labeler", "none")
    if resolved.labels not in valid_labels:
        raise PrepareError(
            f"--labels {resolved.labels!r} for {spec.name!r}; valid: {', '.join(valid_labels)}"
        )
    if resolved.copy_images and resolved.absolute_paths:
        raise PrepareError("--copy-images and --absolute-paths exclude each other")
    return resolved


def choose_label_source(
    options: PrepareOptions, spec: DatasetSpec, files: Mapping[str, Path | None]
) -> str:
    """The label source to use: ``options.labels``, or for ``auto`` the first of the dataset's
    own sources whose file exists (``files`` maps source -> path), else ``"labeler"``."""
    if options.labels in ("labeler", "none"):
        return options.labels
    if options.labels == "auto":
        for name in spec.label_sources:
            path = files.get(name)
            if path is not None and path.is_file():
                return name
        return "labeler"
    path = files.get(options.labels)
    if path is None or not path.is_file():
        what = f"label file {path} does not exist" if path else "no label file was found"
        raise PrepareError(
            f"--labels {options.labels}: {what} (point to it with --file, or use --labels labeler)"
        )
    return options.labels


def _apply_sections(c: Candidate, options: PrepareOptions, log: SkipLog) -> bool:
    """Check ``--require`` on the study's text, then blank the sections not kept."""
    has_f, has_i = bool(c.findings.strip()), bool(c.impression.strip())
    if not has_f and not has_i:
        log.skip("empty report", c.where, f"study {c.id} has no findings or impression text")
        return False
    need_f = options.require in ("findings", "both") or options.sections == "findings"
    need_i = options.require in ("impression", "both") or options.sections == "impression"
    if need_f and not has_f:
        log.skip("no findings section", c.where, f"study {c.id}")
        return False
    if need_i and not has_i:
        log.skip("no impression section", c.where, f"study {c.id}")
        return False
    if options.sections == "findings":
        c.impression = ""
    elif options.sections == "impression":
        c.findings = ""
    return True


def _image_problem(path: Path, verify: bool) -> tuple[str, str] | None:
    if not path.is_file():
        return "missing image", f"{path} does not exist"
    if verify:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            return "unreadable image", f"{path}: {err}"
    return None


def _label_with_labeler(candidates: list[Candidate], name: str, track: Tracker) -> list[LabelDict]:
    from orapo.labeler import get_labeler

    labeler = get_labeler(name)
    texts = [format_report(c.findings, c.impression) for c in candidates]
    batches = [texts[i : i + LABEL_BATCH] for i in range(len(texts)) if i % LABEL_BATCH == 0]
    out: list[LabelDict] = []
    for batch in track(batches, f"labelling with labeler {name!r}"):
        out.extend(labels_to_dict_checked(d) for d in labeler.label_batch(batch))
    if len(out) != len(candidates):
        raise PrepareError(f"labeler {name!r} returned {len(out)} results for {len(texts)}")
    return out


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _manifest_paths(c: Candidate, options: PrepareOptions) -> list[str]:
    out_dir = os.path.abspath(options.out)
    paths = []
    for i, src in enumerate(c.images):
        if options.copy_images:
            dest = Path(out_dir) / "images" / _safe_name(c.id) / f"{i}_{src.name}"
            _copy_atomic(src, dest)
            paths.append(dest.relative_to(out_dir).as_posix())
        elif options.absolute_paths:
            paths.append(os.path.abspath(src))
        else:
            paths.append(Path(os.path.relpath(os.path.abspath(src), out_dir)).as_posix())
    return paths


def finish(
    collected: Collected,
    spec: DatasetSpec,
    options: PrepareOptions,
    log: SkipLog,
    track: Tracker,
) -> tuple[list[Study], Counter]:
    """Steps 1-5 of the module docstring: checked, labelled manifest studies."""
    kept: list[Candidate] = []
    seen: dict[str, str] = {}
    for c in track(collected.candidates, "checking studies"):
        if c.id in seen:
            log.skip("duplicate id", c.where, f"{c.id!r} already came from {seen[c.id]}")
            continue
        seen[c.id] = c.where
        if not _apply_sections(c, options, log):
            continue
        problem = None
        for path in c.images:
            problem = _image_problem(path, options.verify_images)
            if problem is not None:
                break
        if problem is not None:
            log.skip(problem[0], c.where, f"study {c.id}: {problem[1]}")
            continue
        kept.append(c)

    source = collected.label_source
    label_sources: Counter = Counter()
    if source == "none":
        for c in kept:
            c.labels = None
    else:
        need = [c for c in kept if source == "labeler" or c.labels is None]
        if source != "labeler" and need:
            log.note(f"no {source} labels for the study: labelled by the orapo labeler", len(need))
        if need:
            labelled = _label_with_labeler(need, options.labeler, track)
            for c, labels in zip(need, labelled, strict=True):
                c.labels = labels
                c.source["labels"] = f"labeler:{options.labeler}"
    for c in kept:
        c.source.setdefault("labels", source if c.labels is not None else "none")
        label_sources[c.source["labels"]] += 1

    studies = [
        Study(
            id=c.id,
            split=c.split,
            images=_manifest_paths(c, options),
            findings=c.findings,
            impression=c.impression,
            labels=c.labels,
            source={"dataset": spec.name, "format": options.format, **c.source},
        )
        for c in track(kept, "copying images" if options.copy_images else "writing paths")
    ]
    return studies, label_sources


def prepare(dataset: str, options: PrepareOptions, *, console: Any = None) -> PrepareResult:
    """Convert one dataset into ``options.out / options.manifest_name`` (module docstring).

    ``console`` (a rich Console) shows progress bars; ``None`` runs quietly.
    """
    spec = DATASETS.get(dataset)
    options = resolve_options(spec, options)
    if not options.root.is_dir():
        raise PrepareError(f"--root {options.root} is not a folder")
    log = SkipLog(strict=options.strict)
    if console is not None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        context: Any = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
    else:
        context = nullcontext(None)
    with context as progress:
        track = Tracker(progress)
        collected = spec.collect(options, spec, log, track)
        studies, label_sources = finish(collected, spec, options, log, track)
    manifest_path = options.out / options.manifest_name
    write_manifest(manifest_path, studies)
    summary = build_summary(spec, options, collected, log, studies, label_sources)
    summary_path = options.out / SUMMARY_NAME
    atomic_write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return PrepareResult(manifest_path, summary_path, summary, studies)


def build_summary(
    spec: DatasetSpec,
    options: PrepareOptions,
    collected: Collected,
    log: SkipLog,
    studies: list[Study],
    label_sources: Counter,
) -> dict[str, Any]:
    from orapo import __version__

    by_split = Counter(s.split for s in studies)
    return {
        "orapo_version": __version__,
        "dataset": spec.name,
        "format": options.format,
        "manifest": options.manifest_name,
        "inputs": collected.inputs,
        "options": options.to_json(),
        "kept": {
            "total": len(studies),
            **{name: by_split.get(name, 0) for name in ("train", "val", "test")},
        },
        "skipped": {
            "total": log.total,
            "by_reason": {
                reason: {"count": count, "examples": log.examples.get(reason, [])}
                for reason, count in sorted(log.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            },
        },
        "labels": {"requested": options.labels, "by_source": dict(sorted(label_sources.items()))},
        "notes": dict(sorted(log.notes.items())),
    }


def render_summary(summary: Mapping[str, Any], console: Any) -> None:
    """Print the kept / skipped tables of a prepare summary with rich."""
    from rich.table import Table

    kept = summary["kept"]
    table = Table(title=f"orapo data prepare {summary['dataset']}: kept and skipped")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    table.add_column("first example")
    for name in ("train", "val", "test"):
        table.add_row(f"kept: {name}", str(kept[name]), "")
    table.add_row("kept: total", str(kept["total"]), "", end_section=True)
    for reason, info in summary["skipped"]["by_reason"].items():
        table.add_row(f"skipped: {reason}", str(info["count"]), (info["examples"] or [""])[0])
    table.add_row("skipped: total", str(summary["skipped"]["total"]), "", end_section=True)
    for source, count in summary["labels"]["by_source"].items():
        table.add_row(f"labels: {source}", str(count), "")
    for note, count in summary["notes"].items():
        table.add_row(f"note: {note}", str(count), "")
    console.print(table)


def read_label_csv(
    path: Path,
    keys: Mapping[str, str],
    log: SkipLog,
    track: Tracker,
    *,
    normalize: Callable[[dict[str, str]], tuple[str, ...]] = lambda row: tuple(row.values()),
) -> dict[tuple[str, ...], LabelDict]:
    """Read a CheXpert-style label table: key columns plus the 14 observation columns.

    ``keys`` maps key names to column names (e.g. ``subject_id``, ``study_id``); the result
    maps ``normalize(key values)`` to a label dict (1.0 / 0.0 / -1.0 / blank -> 1 / 0 / -1 /
    None). Malformed rows (wrong field count, bad values) and repeated keys are skipped and
    counted; a header missing the key or observation columns raises :class:`PrepareError`.
    """
    needed = {**{f"key:{k}": v for k, v in keys.items()}, **{n: n for n in OBSERVATIONS}}
    out: dict[tuple[str, ...], LabelDict] = {}
    for where, row, problem in track(read_table(path, needed), f"reading {path.name}"):
        if problem is not None:
            log.skip("malformed row", where, problem)
            continue
        key_values = {k: row[f"key:{k}"].strip() for k in keys}
        if not all(key_values.values()):
            log.skip("malformed row", where, "empty key column")
            continue
        try:
            labels = parse_label_row(row)
        except ValueError as err:
            log.skip("malformed row", where, str(err))
            continue
        key = normalize(key_values)
        if key in out:
            log.skip("duplicate row", where, f"labels for {'/'.join(key)} given twice")
            continue
        out[key] = labels
    return out
