"""CheXpert Plus (``chexpert-plus``): the report CSV, the image folder, CheXbert labels.

Layout we assume (Stanford AIMI release of 2024-04-01; column and file names are
configurable because releases differ)::

    ROOT/df_chexpert_plus_240401.csv       (--file csv=PATH) one row per image, columns:
        path_to_image, path_to_dcm, frontal_lateral, ap_pa, deid_patient_id,
        patient_report_date_order, report, section_narrative, section_clinical_history,
        section_history, section_comparison, section_technique, section_procedure_comments,
        section_findings, section_impression, section_end_of_impression, section_summary,
        section_accession_number, age, sex, race, ethnicity, interpreter_needed,
        insurance_type, recent_bmi, deceased, split
    ROOT/PNG/train/patient00001/study1/view1_frontal.png      (--images-dir; default ROOT/PNG
                                                             when it exists, else ROOT)
    ROOT/chexbert_labels/{findings,impression,report}_fixed.json   (--file labels=PATH)
        JSON lines {"path_to_image": "train/.../view1_frontal.jpg", "Atelectasis": 1.0, ...};
        a CSV with a key column and the 14 observation columns works too.

Only the columns ``path_to_image``, ``frontal_lateral``, ``ap_pa``, ``section_findings``,
``section_impression`` and ``split`` are read (``deid_patient_id`` when present); rename them
with ``--column KEY=NAME`` (keys: path, frontal_lateral, ap_pa, patient, findings,
impression, split, labels_key). A header without them is an error naming the file and the
missing columns.

- Study: the folder of ``path_to_image`` (``train/patient00001/study1``), study id
  ``chexpert-train-patient00001-study1``. Its rows must agree on split and section texts
  (else ``conflicting rows``).
- Image file: ``<images-dir>/<path_to_image>``; when that file does not exist the same path
  with suffix ``.png`` and then ``.jpg`` is tried (the CSV names ``.jpg`` files, the release
  ships PNG).
- Views: a row's view is its ``ap_pa`` value (``PA``, ``AP``, ...) when ``frontal_lateral``
  is ``Frontal`` (``FRONTAL`` when ``ap_pa`` is blank), else ``LATERAL``. Default
  ``--views PA,AP,FRONTAL`` and ``--max-images 1``.
- Setting: by default the report-generation benchmark's *findings* setting: only the
  findings section is kept and studies with an empty findings section are skipped (``no
  findings section`` / ``empty report``); ``--sections both --require any`` keeps both
  sections.
- Split: the CSV's ``split`` (``train``, ``valid``) through the split map (``valid`` ->
  ``val``); the release has no test split; ``--split-map valid=test`` uses the validation
  studies as the test split.
- Labels: CheXbert labels (``chexbert``) from the labels file when present, by default the one
  that matches ``--sections`` (``findings_fixed.json`` / ``impression_fixed.json`` /
  ``report_fixed.json``, looked for under ``chexbert_labels/``, ``CheXpert_Labels/``,
  ``labels/`` and ROOT). Keys are compared without their file suffix. A study takes the
  labels of its first selected image (else of any of its images); studies without a row are
  labelled by the orapo labeler and counted.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from orapo.datasets.reporting import SkipLog, Tracker
from orapo.datasets.sections import clean_text
from orapo.datasets.spec import (
    DATASETS,
    Candidate,
    Collected,
    DatasetSpec,
    PrepareError,
    PrepareOptions,
    choose_label_source,
)
from orapo.datasets.splits import select_views
from orapo.datasets.tables import parse_label_row, read_label_csv, read_table, require_file
from orapo.observations import OBSERVATIONS, LabelDict

FILES = {"csv": "df_chexpert_plus_240401.csv", "labels": ""}
COLUMNS = {
    "path": "path_to_image",
    "frontal_lateral": "frontal_lateral",
    "ap_pa": "ap_pa",
    "patient": "deid_patient_id",
    "findings": "section_findings",
    "impression": "section_impression",
    "split": "split",
    "labels_key": "path_to_image",
}
LABEL_FOLDERS = ("chexbert_labels", "CheXpert_Labels", "labels", ".")
LABEL_FILE_FOR_SECTIONS = {
    "findings": "findings_fixed.json",
    "impression": "impression_fixed.json",
    "both": "report_fixed.json",
}


def image_key(path: str) -> str:
    """``"train\\\\p1/study1/view1_frontal.jpg"`` -> ``"train/p1/study1/view1_frontal"``."""
    posix = PurePosixPath(path.strip().replace("\\", "/"))
    return str(posix.with_suffix("")) if posix.suffix else str(posix)


def labels_file(options: PrepareOptions, spec: DatasetSpec) -> Path | None:
    """The labels file: ``--file labels=PATH``, else the first default name that exists."""
    if options.files.get("labels"):
        return options.file(spec, "labels")
    name = LABEL_FILE_FOR_SECTIONS[options.sections or "findings"]
    for folder in LABEL_FOLDERS:
        path = options.root / folder / name
        if path.is_file():
            return path
    return None


def _read_json_labels(path: Path, key: str, log: SkipLog, track: Tracker) -> dict:
    """JSON lines (or one JSON list) of ``{key: path, <observation>: value, ...}`` records."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as err:
            raise PrepareError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        where_of = lambda i: f"{path}: record {i}"  # noqa: E731
    else:
        records = [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]
        where_of = lambda i: f"{path}:{i}"  # noqa: E731
    out: dict[tuple[str, ...], LabelDict] = {}
    checked = False
    for i, record in track(records, f"reading {path.name}"):
        where = where_of(i)
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except json.JSONDecodeError as err:
                log.skip("malformed row", where, f"invalid JSON ({err.msg})")
                continue
        if not isinstance(record, dict):
            log.skip("malformed row", where, "a label record must be a JSON object")
            continue
        missing = [n for n in (key, *OBSERVATIONS) if n not in record]
        if not checked:
            if missing:
                raise PrepareError(
                    f"{path}: the first record lacks {', '.join(map(repr, missing))}; it has "
                    f"{', '.join(map(repr, record))}. Set the key with --column labels_key=NAME."
                )
            checked = True
        if missing:
            log.skip("malformed row", where, f"missing {', '.join(map(repr, missing))}")
            continue
        try:
            labels = parse_label_row(record)
        except ValueError as err:
            log.skip("malformed row", where, str(err))
            continue
        k = (image_key(str(record[key])),)
        if k in out:
            log.skip("duplicate row", where, f"labels for {k[0]} given twice")
            continue
        out[k] = labels
    return out


def read_labels(path: Path, key: str, log: SkipLog, track: Tracker) -> dict:
    """Labels keyed by ``(image_key(path_to_image),)`` from a JSON(L) or CSV file."""
    if path.name.endswith((".csv", ".csv.gz")):
        return read_label_csv(
            path, {"path": key}, log, track, normalize=lambda row: (image_key(row["path"]),)
        )
    return _read_json_labels(path, key, log, track)


def _resolve_image(images_dir: Path, relative: str) -> Path:
    path = images_dir / relative
    if path.is_file():
        return path
    for suffix in (".png", ".jpg"):
        other = path.with_suffix(suffix)
        if other.is_file():
            return other
    return path


def _view(frontal_lateral: str, ap_pa: str) -> str:
    if frontal_lateral.strip().lower() == "frontal":
        return ap_pa.strip().upper() or "FRONTAL"
    return "LATERAL"


def collect(options: PrepareOptions, spec: DatasetSpec, log: SkipLog, track: Tracker) -> Collected:
    csv_path = require_file(options.file(spec, "csv"), "CheXpert Plus CSV", "set --file csv=PATH")
    images_dir = options.images_dir or (
        options.root / "PNG" if (options.root / "PNG").is_dir() else options.root
    )
    lab_path = labels_file(options, spec)
    label_source = choose_label_source(options, spec, {"chexbert": lab_path})
    inputs = {"csv": str(csv_path), "images": str(images_dir)}
    labels: dict = {}
    if label_source == "chexbert" and lab_path is not None:
        labels = read_labels(lab_path, options.column(spec, "labels_key"), log, track)
        inputs["labels"] = str(lab_path)

    needed = {
        k: options.column(spec, k)
        for k in ("path", "frontal_lateral", "ap_pa", "findings", "impression", "split")
    }
    optional = {"patient": options.column(spec, "patient")}
    splits = options.splits()
    studies: dict[str, dict] = {}
    seen: dict[str, str] = {}
    rows = read_table(csv_path, needed, optional=optional)
    for where, row, problem in track(rows, f"reading {csv_path.name}"):
        path = row["path"].strip().replace("\\", "/")
        split = row["split"].strip()
        if problem is None and not path:
            problem = "empty path_to_image"
        if problem is None and split not in splits:
            problem = f"unknown split {split!r} (map it with --split-map {split}=train|val|test)"
        if problem is not None:
            log.skip("malformed row", where, problem)
            continue
        if path in seen:
            log.skip("duplicate row", where, f"{path} already at {seen[path]}")
            continue
        seen[path] = where
        study = str(PurePosixPath(path).parent)
        entry = studies.setdefault(study, {"where": where, "rows": []})
        entry["rows"].append(
            {
                "path": path,
                "view": _view(row["frontal_lateral"], row["ap_pa"]),
                "split": splits[split],
                "findings": clean_text(row["findings"]),
                "impression": clean_text(row["impression"]),
                "patient": row["patient"].strip(),
            }
        )

    candidates = []
    for study, entry in track(list(studies.items()), "grouping studies"):
        rows_ = entry["rows"]
        first = rows_[0]
        differ = [k for k in ("split", "findings", "impression") if len({r[k] for r in rows_}) > 1]
        if differ:
            log.skip("conflicting rows", entry["where"], f"study {study}: different {differ}")
            continue
        pairs = [(Path(r["path"]), r["view"]) for r in rows_]
        chosen = select_views(pairs, options.views, options.max_images or 0)
        if not chosen:
            found = ", ".join(sorted({v for _, v in pairs}))
            log.skip("no frontal view", entry["where"], f"study {study}: views {found}")
            continue
        keys = [image_key(p.as_posix()) for p, _ in chosen] + [image_key(r["path"]) for r in rows_]
        study_labels = next((labels[(k,)] for k in keys if (k,) in labels), None)
        candidates.append(
            Candidate(
                id="chexpert-" + study.replace("/", "-"),
                split=first["split"],
                images=[_resolve_image(images_dir, p.as_posix()) for p, _ in chosen],
                findings=first["findings"],
                impression=first["impression"],
                where=entry["where"],
                labels=study_labels,
                source={
                    "study": study,
                    "patient_id": first["patient"] or None,
                    "paths": [p.as_posix() for p, _ in chosen],
                    "views": [v for _, v in chosen],
                    **({"labels": "chexbert"} if study_labels is not None else {}),
                },
            )
        )
    return Collected(candidates, label_source, inputs)


DATASETS.register("chexpert-plus")(
    DatasetSpec(
        name="chexpert-plus",
        summary="CheXpert Plus: report CSV + PNG images + CheXbert labels",
        formats=("csv",),
        collect=collect,
        label_sources=("chexbert",),
        files=FILES,
        columns=COLUMNS,
        options=frozenset({"views"}),
        defaults={
            "sections": "findings",
            "require": "findings",
            "views": ("PA", "AP", "FRONTAL"),
            "max_images": 1,
        },
    )
)
