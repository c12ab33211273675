"""MIMIC-CXR (``mimic-cxr``): MIMIC-CXR-JPG images + MIMIC-CXR free-text reports, or R2Gen.

Format ``mimic-cxr-jpg`` (default), the PhysioNet layout (MIMIC-CXR-JPG 2.0.0 / 2.1.0)::

    ROOT/mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,...,ViewPosition,...
    ROOT/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id,study_id,<14 observations>
    ROOT/mimic-cxr-2.0.0-negbio.csv.gz     (same columns)
    ROOT/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    REPORTS/files/p10/p10000032/s50414267.txt   (MIMIC-CXR mimic-cxr-reports.zip;
                                                 REPORTS = --reports-root, default ROOT)

One manifest study per study id (``mimic-s<study_id>``), with the official split
(train / validate / test -> train / val / test). Images: the study's images whose
``ViewPosition`` is in ``--views`` (default ``PA,AP``: PA first, then AP; ``any`` keeps every
view), ordered by that preference then by the split file's order, at most ``--max-images``
(default 1). FINDINGS / IMPRESSION come from the report by :mod:`orapo.datasets.sections`.
Labels: ``chexpert`` (``mimic-cxr-2.0.0-chexpert.csv.gz``, the default when present) or
``negbio``, keyed by (subject_id, study_id); studies without a label row go to the labeler.
The CheXpert/NegBio labels were computed by the dataset's authors on the impression (or the
fallback section), not on the text kept here; ``--labels labeler`` labels the kept text.

Format ``r2gen``: ``ROOT/annotation.json`` + ``ROOT/images/`` (R2Gen's ``mimic_cxr``
folder; chosen without ``--format`` when ``annotation.json`` is there and the split CSV is
not). Entries are per image; they are grouped by ``study_id``. The report text goes to the
section named by ``--r2gen-field`` (default ``findings``: R2Gen's reports are the findings
section). View selection applies when the metadata CSV is found (``--file metadata=PATH``,
default ``ROOT/mimic-cxr-2.0.0-metadata.csv.gz``); without it the first ``--max-images``
images are kept and the summary counts those studies under a note.
"""

from __future__ import annotations

from pathlib import Path

from orapo.datasets.r2gen import group_entries, read_annotation
from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.sections import clean_text, findings_and_impression
from orapo.datasets.spec import (
    DATASETS,
    Candidate,
    Collected,
    DatasetSpec,
    PrepareError,
    PrepareOptions,
    choose_label_source,
    other_layouts,
)
from orapo.datasets.splits import select_views
from orapo.datasets.tables import read_label_csv, read_table, require_file
from orapo.observations import LabelDict

FILES = {
    "split": "mimic-cxr-2.0.0-split.csv.gz",
    "metadata": "mimic-cxr-2.0.0-metadata.csv.gz",
    "chexpert": "mimic-cxr-2.0.0-chexpert.csv.gz",
    "negbio": "mimic-cxr-2.0.0-negbio.csv.gz",
    "annotation": "annotation.json",
}
COLUMNS = {
    "dicom_id": "dicom_id",
    "study_id": "study_id",
    "subject_id": "subject_id",
    "split": "split",
    "view": "ViewPosition",
}
LABEL_FILE_KEYS = {"chexpert": "chexpert", "negbio": "negbio"}
#: Manifest ``source.labels`` names of the dataset's own label sources.
LABEL_SOURCE_NAMES = {"chexpert": "chexpert-csv", "negbio": "negbio-csv"}


def study_folder(subject_id: str, study_id: str) -> Path:
    """``("10000032", "50414267")`` -> ``files/p10/p10000032/s50414267``."""
    return Path("files") / f"p{subject_id[:2]}" / f"p{subject_id}" / f"s{study_id}"


def _read_views(
    path: Path, options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker
) -> dict[str, str]:
    """dicom_id -> ViewPosition (blank stays blank) from the metadata CSV."""
    needed = {k: options.column(spec, k) for k in ("dicom_id", "view")}
    views: dict[str, str] = {}
    for where, row, problem in track(read_table(path, needed), f"reading {path.name}"):
        dicom = row["dicom_id"].strip()
        if problem is not None or not dicom:
            log.skip("malformed row", where, problem or "empty dicom_id")
            continue
        if dicom in views:
            log.skip("duplicate row", where, f"dicom_id {dicom} listed twice")
            continue
        views[dicom] = row["view"].strip()
    return views


def _read_labels(
    source: str, options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker
) -> dict[tuple[str, ...], LabelDict]:
    if source not in LABEL_FILE_KEYS:
        return {}
    path = options.file(spec, LABEL_FILE_KEYS[source])
    keys = {k: options.column(spec, k) for k in ("subject_id", "study_id")}
    return read_label_csv(path, keys, log, track)


def _label_files(options: PrepareOptions, spec: DatasetSpec) -> dict[str, Path | None]:
    return {name: options.file(spec, key) for name, key in LABEL_FILE_KEYS.items()}


def collect(options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker) -> Collected:
    if options.format == "r2gen":
        return _collect_r2gen(options, spec, log, track)
    if options.r2gen_field is not None:
        raise PrepareError("--r2gen-field applies to --format r2gen only")
    return _collect_jpg(options, spec, log, track)


def _collect_jpg(
    options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker
) -> Collected:
    split_path = require_file(
        options.file(spec, "split"),
        "MIMIC-CXR-JPG split file",
        f"set it with --file split=PATH, or use {other_layouts(spec, options)}",
    )
    any_view = [v.upper() for v in options.views or ()] == ["ANY"]
    meta_path = options.file(spec, "metadata")
    if not any_view:
        require_file(meta_path, "MIMIC-CXR-JPG metadata file", "or use --views any")
    label_source = choose_label_source(options, spec, _label_files(options, spec))
    images_root = options.images_dir or options.root
    reports_root = options.reports_root or options.root
    inputs = {"split": str(split_path), "images": str(images_root), "reports": str(reports_root)}

    # The split file: one row per image -> studies in first-appearance order.
    needed = {k: options.column(spec, k) for k in ("dicom_id", "study_id", "subject_id", "split")}
    splits = options.splits()
    studies: dict[str, dict] = {}
    seen_dicoms: dict[str, str] = {}
    for where, row, problem in track(read_table(split_path, needed), f"reading {split_path.name}"):
        dicom, study, subject, split = (row[k].strip() for k in needed)
        if problem is None and not dicom:
            problem = "empty dicom_id"
        if problem is None and not (study.isdigit() and subject.isdigit()):
            problem = f"study_id {study!r} / subject_id {subject!r} are not integers"
        if problem is None and split not in splits:
            problem = f"unknown split {split!r} (map it with --split-map {split}=train|val|test)"
        if problem is not None:
            log.skip("malformed row", where, problem)
            continue
        if dicom in seen_dicoms:
            log.skip("duplicate row", where, f"dicom_id {dicom} already at {seen_dicoms[dicom]}")
            continue
        seen_dicoms[dicom] = where
        entry = studies.setdefault(
            study,
            {"subject": subject, "subjects": set(), "splits": set(), "dicoms": [], "where": where},
        )
        entry["splits"].add(splits[split])
        entry["subjects"].add(subject)
        entry["dicoms"].append(dicom)

    views = {} if any_view else _read_views(meta_path, options, spec, log, track)
    if not any_view:
        inputs["metadata"] = str(meta_path)
    labels = _read_labels(label_source, options, spec, log, track)
    if label_source in LABEL_FILE_KEYS:
        inputs["labels"] = str(options.file(spec, LABEL_FILE_KEYS[label_source]))

    candidates: list[Candidate] = []
    for study, entry in track(list(studies.items()), "reading reports"):
        where = entry["where"]
        if len(entry["splits"]) > 1 or len(entry["subjects"]) > 1:
            log.skip(
                "conflicting rows",
                where,
                f"study {study} has images in splits {sorted(entry['splits'])} "
                f"/ subjects {sorted(entry['subjects'])}",
            )
            continue
        subject = entry["subject"]
        folder = study_folder(subject, study)
        pairs = [(images_root / folder / f"{d}.jpg", views.get(d, "")) for d in entry["dicoms"]]
        chosen = select_views(pairs, options.views, options.max_images or 0)
        if not chosen:
            found = ", ".join(sorted({v or "(blank)" for _, v in pairs}))
            log.skip("no frontal view", where, f"study {study}: views {found}")
            continue
        report_path = reports_root / folder.parent / f"s{study}.txt"
        try:
            text = report_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.skip("missing report", where, f"study {study}: {report_path} does not exist")
            continue
        except (OSError, UnicodeDecodeError) as err:
            log.skip("unreadable report", where, f"{report_path}: {err}")
            continue
        sections = findings_and_impression(text)
        key = (subject, study)
        source_name = LABEL_SOURCE_NAMES.get(label_source, label_source)
        study_labels = labels.get(key)
        candidates.append(
            Candidate(
                id=f"mimic-s{study}",
                split=entry["splits"].pop(),
                images=[p for p, _ in chosen],
                findings=sections.findings,
                impression=sections.impression,
                where=str(report_path),
                labels=study_labels,
                source={
                    "subject_id": subject,
                    "study_id": study,
                    "dicom_ids": [p.stem for p, _ in chosen],
                    "views": [v for _, v in chosen],
                    "report": (folder.parent / f"s{study}.txt").as_posix(),
                    "impression_from": sections.impression_from,
                    **({"labels": source_name} if study_labels is not None else {}),
                },
            )
        )
    return Collected(candidates, LABEL_SOURCE_NAMES.get(label_source, label_source), inputs)


def _collect_r2gen(
    options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker
) -> Collected:
    path = options.file(spec, "annotation")
    images_root = options.images_dir or options.root / "images"
    entries = read_annotation(path, options.splits(), log, track)
    meta_path = options.file(spec, "metadata")
    any_view = [v.upper() for v in options.views or ()] == ["ANY"]
    use_views = not any_view and meta_path.is_file()
    views = _read_views(meta_path, options, spec, log, track) if use_views else {}
    label_source = choose_label_source(options, spec, _label_files(options, spec))
    labels = _read_labels(label_source, options, spec, log, track)
    inputs = {"annotation": str(path), "images": str(images_root)}
    if use_views:
        inputs["metadata"] = str(meta_path)
    if label_source in LABEL_FILE_KEYS:
        inputs["labels"] = str(options.file(spec, LABEL_FILE_KEYS[label_source]))

    groups = group_entries(entries, lambda e: e.study_id or e.id, log)
    candidates = []
    source_name = LABEL_SOURCE_NAMES.get(label_source, label_source)
    for group in track(groups, "grouping studies"):
        first = group[0]
        paths = [p for e in group for p in e.image_paths]
        unique = list(dict.fromkeys(paths))
        pairs = [(images_root / p, views.get(Path(p).stem, "")) for p in unique]
        if use_views:
            chosen = select_views(pairs, options.views, options.max_images or 0)
            if not chosen:
                found = ", ".join(sorted({v or "(unknown)" for _, v in pairs}))
                log.skip("no frontal view", first.where, f"study {first.study_id}: views {found}")
                continue
        else:
            chosen = select_views(pairs, None, options.max_images or 0)
            if not any_view:
                log.note("no metadata file: view position unknown, first image(s) kept")
        report = clean_text(first.report)
        field = options.r2gen_field or "findings"
        key = (first.subject_id or "", first.study_id or "")
        study_labels = labels.get(key)
        study_id = first.study_id
        candidates.append(
            Candidate(
                id=f"mimic-s{study_id}" if study_id else f"mimic-{first.id}",
                split=first.split,
                images=[p for p, _ in chosen],
                findings=report if field == "findings" else "",
                impression=report if field == "impression" else "",
                where=first.where,
                labels=study_labels,
                source={
                    "subject_id": first.subject_id,
                    "study_id": study_id,
                    "entry_ids": [e.id for e in group],
                    "views": [v for _, v in chosen] if use_views else None,
                    **({"labels": source_name} if study_labels is not None else {}),
                },
            )
        )
    return Collected(candidates, source_name, inputs)


DATASETS.register("mimic-cxr")(
    DatasetSpec(
        name="mimic-cxr",
        summary="MIMIC-CXR-JPG images + MIMIC-CXR reports (or R2Gen annotation.json)",
        formats=("mimic-cxr-jpg", "r2gen"),
        collect=collect,
        label_sources=("chexpert", "negbio"),
        files=FILES,
        columns=COLUMNS,
        options=frozenset({"views", "reports_root", "r2gen_field"}),
        defaults={
            "sections": "both",
            "require": "any",
            "views": ("PA", "AP"),
            "max_images": 1,
        },
        layouts={"mimic-cxr-jpg": "split", "r2gen": "annotation"},
    )
)
