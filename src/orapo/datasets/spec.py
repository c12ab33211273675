"""What a dataset conversion is told and what a converter declares and returns.

:class:`PrepareOptions` is everything ``orapo data prepare`` can be told; a converter (one per
dataset, registered in :data:`DATASETS` as a :class:`DatasetSpec`) reads a distribution layout
and returns :class:`Collected` :class:`Candidate` studies. :func:`resolve_options` fills the
dataset's defaults, detects the layout under ``--root`` when ``--format`` is not given, and
rejects options that do not apply, each with a fix-it message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orapo.errors import UserError
from orapo.observations import LabelDict
from orapo.registry import Registry

if TYPE_CHECKING:
    from orapo.datasets.reporting import SkipLog, Tracker

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


class PrepareError(UserError, RuntimeError):
    """Input that cannot be converted (or any skip under ``--strict``); names file and line."""


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


@dataclass
class Candidate:
    """A study as a converter found it, before the shared checks of
    :func:`orapo.datasets.prepare.prepare`.

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


Collector = Callable[[PrepareOptions, "DatasetSpec", "SkipLog", "Tracker"], Collected]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its formats, files, columns, label sources and defaults.

    ``files`` and ``columns`` map keys (for ``--file KEY=PATH`` / ``--column KEY=NAME``) to the
    names of the distribution; ``options`` lists the dataset-specific options it reads (from
    :data:`DATASET_SPECIFIC_OPTIONS`); ``defaults`` fills options left at ``None``;
    ``layouts`` maps a format to the key of the file (or folder) whose presence under
    ``--root`` identifies its layout (:func:`detect_format`).
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
    layouts: Mapping[str, str] = field(default_factory=dict)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


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
        resolved.format = detect_format(spec, resolved)
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


def detect_format(spec: DatasetSpec, options: PrepareOptions) -> str:
    """The format whose layout is under ``--root``: the first of ``spec.formats`` whose file
    (``spec.layouts``) exists there; none: the first format, whose own check then names what
    is missing (with :func:`other_layouts` in its message)."""
    for name in spec.formats:
        key = spec.layouts.get(name)
        if key is not None and options.file(spec, key).exists():
            return name
    return spec.formats[0]


def other_layouts(spec: DatasetSpec, options: PrepareOptions) -> str:
    """For a message about a missing input, the dataset's other formats:
    ``"--format r2gen for the layout with ROOT/annotation.json"`` (joined with ``or``)."""
    return " or ".join(
        f"--format {name} for the layout with {options.file(spec, key)}"
        for name, key in spec.layouts.items()
        if name != options.format
    )
