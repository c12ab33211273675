"""Small dataset trees in the layouts the datasets are distributed in, for tests.

Each ``build_*`` writes a tree under a folder (a pytest ``tmp_path``) and returns what a
correct conversion must produce: the kept study ids with their split, sections, labels and
image, and the expected skip counts by reason. The layouts follow the datasets' public
documentation (file names, gzip-compressed CSVs and their headers, report text shapes); the
report texts are written for these tests, not taken from the datasets.
"""

from __future__ import annotations

import csv
import gzip
import html
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

from PIL import Image

# shared/ lies beside the repository (as in CI); never copied into it.
OPENI_TGZ = Path(__file__).resolve().parents[2] / "shared/data/openi/openi-dev-reports.tgz"

CHEXPERT_ORDER = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)


# --------------------------------------------------------------------------- helpers


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """Write a CSV, gzip-compressed when the name ends in ``.gz``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = buf.getvalue().encode("utf-8")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_image(path: Path, shade: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=shade).save(path)


def label_row(values: dict[str, str]) -> list[str]:
    """The 14 label cells in the CSV column order, blank where not given."""
    return [values.get(name, "") for name in CHEXPERT_ORDER]


def expected_labels(values: dict[str, str]) -> dict[str, int | None]:
    return {name: (int(float(values[name])) if name in values else None) for name in CHEXPERT_ORDER}


# --------------------------------------------------------------------------- MIMIC-CXR

MIMIC_REPORTS = {
    # Standard layout: FINAL REPORT header, EXAMINATION / INDICATION / ... sections.
    ("10000032", "50414267"): (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n"
        " \n"
        " INDICATION:  ___F with cough and fever  // eval for pneumonia\n"
        " \n"
        " TECHNIQUE:  Chest PA and lateral\n"
        " \n"
        " COMPARISON:  None.\n"
        " \n"
        " FINDINGS: \n"
        " \n"
        " The lungs are clear without focal consolidation, pleural effusion or\n"
        " pneumothorax.  The cardiomediastinal silhouette is normal.  No acute osseous\n"
        " abnormality.\n"
        " \n"
        " IMPRESSION: \n"
        " \n"
        " No acute cardiopulmonary process.\n"
    ),
    # Wet read preamble, section text on the header line.
    ("10000032", "53189527"): (
        " WET READ: ___ ___ ___ 8:12 PM\n"
        "  Enlarged heart with mild interstitial edema.\n"
        " ______________________________________________________________________________\n"
        "                                 FINAL REPORT\n"
        " HISTORY:  Shortness of breath.\n"
        " \n"
        " FINDINGS:  Portable AP upright view of the chest.  The heart is enlarged.  There\n"
        " is mild pulmonary vascular congestion, possibly mild interstitial edema.  No\n"
        " pleural effusion.\n"
        " \n"
        " IMPRESSION:  Cardiomegaly with possible mild interstitial edema.\n"
    ),
    # Impression only, under a CONCLUSION header (normalised to impression).
    ("10000764", "57375967"): (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PORTABLE AP)\n"
        " \n"
        " INDICATION:  ___ year old woman with fever\n"
        " \n"
        " CONCLUSION: \n"
        " \n"
        " Right lower lobe consolidation, concerning for pneumonia.\n"
    ),
    # No section headers: the text after the first paragraph becomes the impression.
    ("10000898", "50771383"): (
        "                                 FINAL REPORT\n"
        " CHEST RADIOGRAPH PERFORMED ON ___\n"
        " \n"
        " Heart size is normal.  Lungs are clear.\n"
        " \n"
        " No pneumothorax.\n"
    ),
    # Lateral view only (skipped: no frontal view).
    ("10000935", "51178377"): (
        "                                 FINAL REPORT\n"
        " FINDINGS:  Lateral view only.  No effusion.\n"
        " \n"
        " IMPRESSION:  No acute process.\n"
    ),
    # Image listed but the JPG is missing (skipped: missing image).
    ("10000980", "54577367"): (
        "                                 FINAL REPORT\n"
        " IMPRESSION:  Small left pleural effusion.\n"
    ),
    # Headers but no findings / impression text (skipped: empty report).
    ("10001038", "58224503"): (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA AND LAT)\n"
        " \n"
        " INDICATION:  ___ year old man with cough\n"
        " \n"
        " FINDINGS: \n"
        " \n"
        " IMPRESSION: \n"
        " \n"
    ),
}

MIMIC_SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
MIMIC_METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]
# (dicom_id, subject, study, split, view, jpg written?)
MIMIC_IMAGES = [
    ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "10000032", "50414267", "train", "PA", 1),
    ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "10000032", "50414267", "train", "LATERAL", 1),
    ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "10000032", "53189527", "train", "AP", 1),
    ("e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c", "10000032", "53189527", "train", "LL", 1),
    ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "10000764", "57375967", "validate", "AP", 1),
    ("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "10000764", "57375967", "validate", "PA", 1),
    ("1b6ea8a3-aed3e6e0-b2d2e5ec-1f2e1ee6-a3ef1e9a", "10000898", "50771383", "test", "PA", 1),
    ("4d8a6c53-7d8a1f0c-cc8bd8ac-3cf5f4f4-5a5c7e6b", "10000935", "51178377", "train", "LATERAL", 1),
    ("9b1c2e1f-2b8a3d4c-5e6f7a8b-9c0d1e2f-3a4b5c6d", "10000980", "54577367", "train", "PA", 0),
    ("7c3e4d5f-6a7b8c9d-0e1f2a3b-4c5d6e7f-8a9b0c1d", "10001038", "58224503", "train", "PA", 1),
    ("5e6f7a8b-9c0d1e2f-3a4b5c6d-7e8f9a0b-1c2d3e4f", "10001122", "59999999", "train", "PA", 1),
]
MIMIC_CHEXPERT = {
    ("10000032", "50414267"): {"No Finding": "1.0"},
    ("10000032", "53189527"): {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"},
    ("10000764", "57375967"): {"Consolidation": "1.0", "Pneumonia": "-1.0"},
    ("10000898", "50771383"): {"No Finding": "1.0", "Pneumothorax": "0.0"},
    ("10000935", "51178377"): {"No Finding": "1.0"},
}
MIMIC_NEGBIO = {**MIMIC_CHEXPERT, ("10000898", "50771383"): {"Pneumothorax": "0.0"}}


def _mimic_folder(subject: str, study: str) -> Path:
    return Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def build_mimic(root: Path, reports_root: Path | None = None) -> dict:
    """MIMIC-CXR-JPG tree + MIMIC-CXR reports (under ``reports_root``, default ``root``)."""
    reports_root = reports_root or root
    split_rows = [[d, st, su, sp] for d, su, st, sp, _, _ in MIMIC_IMAGES]
    split_rows.insert(2, list(split_rows[0]))  # duplicate row
    split_rows.append(["0a1b2c3d-0000-0000-0000-000000000000", "5x123", "10000001", "train"])
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", MIMIC_SPLIT_HEADER, split_rows)
    meta = [
        [d, su, st, "CHEST (PA AND LAT)", v, 3056, 2544, 21800506, 213014.531, "", "", "Erect"]
        for d, su, st, _, v, _ in MIMIC_IMAGES
    ]
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_HEADER, meta)
    for name, table in (("chexpert", MIMIC_CHEXPERT), ("negbio", MIMIC_NEGBIO)):
        rows = [[su, st, *label_row(v)] for (su, st), v in table.items()]
        if name == "chexpert":  # a label row with a value that is not a label state
            rows.append(["10000980", "54577367", *label_row({"Edema": "maybe"})])
        write_csv(
            root / f"mimic-cxr-2.0.0-{name}.csv.gz",
            ["subject_id", "study_id", *CHEXPERT_ORDER],
            rows,
        )
    for d, su, st, _, _, written in MIMIC_IMAGES:
        if written:
            write_image(root / _mimic_folder(su, st) / f"{d}.jpg")
    for (su, st), text in MIMIC_REPORTS.items():
        path = reports_root / _mimic_folder(su, st).parent / f"s{st}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return {
        "kept": {
            "mimic-s50414267": {
                "split": "train",
                "image": "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",
                "findings": "The lungs are clear without focal consolidation, pleural effusion "
                "or pneumothorax. The cardiomediastinal silhouette is normal. No acute "
                "osseous abnormality.",
                "impression": "No acute cardiopulmonary process.",
            },
            "mimic-s53189527": {
                "split": "train",
                "image": "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",
                "findings": "Portable AP upright view of the chest. The heart is enlarged. "
                "There is mild pulmonary vascular congestion, possibly mild interstitial "
                "edema. No pleural effusion.",
                "impression": "Cardiomegaly with possible mild interstitial edema.",
            },
            "mimic-s57375967": {
                "split": "val",
                "image": "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4",
                "findings": "",
                "impression": "Right lower lobe consolidation, concerning for pneumonia.",
            },
            "mimic-s50771383": {
                "split": "test",
                "image": "1b6ea8a3-aed3e6e0-b2d2e5ec-1f2e1ee6-a3ef1e9a",
                "findings": "",
                "impression": "Heart size is normal. Lungs are clear. No pneumothorax.",
            },
        },
        "skipped": {
            "duplicate row": 1,
            "malformed row": 2,  # the split row with a bad study id, the label row "maybe"
            "no frontal view": 1,
            "missing image": 1,
            "empty report": 1,
            "missing report": 1,
        },
    }


def build_mimic_r2gen(root: Path) -> dict:
    """R2Gen's ``mimic_cxr`` folder: annotation.json (one entry per image) + images/."""
    report = "The lungs are clear. The heart is normal in size. No pleural effusion."

    def entry(dicom, subject, study, split, text=report, **extra):
        path = f"{_mimic_folder(subject, study).relative_to('files').as_posix()}/{dicom}.jpg"
        e = {
            "id": dicom,
            "study_id": int(study),
            "subject_id": int(subject),
            "report": text,
            "image_path": [path],
            "split": split,
        }
        e.update(extra)
        return e

    d = [m[0] for m in MIMIC_IMAGES]
    data = {
        "train": [
            entry(d[1], "10000032", "50414267", "train"),  # lateral listed first
            entry(d[0], "10000032", "50414267", "train"),
            entry(d[2], "10000032", "53189527", "train", "Heart is enlarged.  Mild edema."),
            entry(d[2], "10000032", "53189527", "train", "Heart is enlarged.  Mild edema."),
            {"id": "broken-entry", "image_path": ["p10/x.jpg"], "split": "train"},
            entry(d[9], "10001038", "58224503", "train", "   "),
            entry(d[8], "10000980", "54577367", "train", "Small effusion."),
            entry(d[7], "10000935", "51178377", "train", "Lateral only."),
        ],
        "val": [entry(d[5], "10000764", "57375967", "val", "Right lower lobe opacity.")],
        "test": [entry(d[6], "10000898", "50771383", "test", "No acute process.")],
    }
    (root / "annotation.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    for dicom, su, st, _, _, written in MIMIC_IMAGES:
        if written:
            rel = _mimic_folder(su, st).relative_to("files")
            write_image(root / "images" / rel / f"{dicom}.jpg")
    meta = [
        [dd, su, st, "CHEST (PA AND LAT)", v, 3056, 2544, 21800506, 213014.531, "", "", "Erect"]
        for dd, su, st, _, v, _ in MIMIC_IMAGES
    ]
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_METADATA_HEADER, meta)
    return {
        "kept": {
            "mimic-s50414267": ("train", d[0], report),
            "mimic-s53189527": ("train", d[2], "Heart is enlarged. Mild edema."),
            "mimic-s57375967": ("val", d[5], "Right lower lobe opacity."),
            "mimic-s50771383": ("test", d[6], "No acute process."),
        },
        "skipped": {
            "duplicate id": 1,
            "malformed entry": 1,
            "empty report": 1,
            "missing image": 1,
            "no frontal view": 1,
        },
    }


# --------------------------------------------------------------------------- CheXpert Plus

CHEXPERT_PLUS_HEADER = [
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "deid_patient_id",
    "patient_report_date_order",
    "report",
    "section_narrative",
    "section_clinical_history",
    "section_history",
    "section_comparison",
    "section_technique",
    "section_procedure_comments",
    "section_findings",
    "section_impression",
    "section_end_of_impression",
    "section_summary",
    "section_accession_number",
    "age",
    "sex",
    "race",
    "ethnicity",
    "interpreter_needed",
    "insurance_type",
    "recent_bmi",
    "deceased",
    "split",
]


def _cxp_row(path, fl, ap_pa, patient, findings, impression, split):
    report = (
        f"NARRATIVE:\nCHEST, ONE VIEW\n\nFINDINGS:\n{findings}\n\nIMPRESSION:\n{impression}\n"
        if findings or impression
        else ""
    )
    values = {
        "path_to_image": path,
        "path_to_dcm": path.replace(".jpg", ".dcm"),
        "frontal_lateral": fl,
        "ap_pa": ap_pa,
        "deid_patient_id": patient,
        "patient_report_date_order": "1",
        "report": report,
        "section_narrative": "CHEST, ONE VIEW",
        "section_clinical_history": "Shortness of breath, evaluate for effusion.",
        "section_history": "",
        "section_comparison": "None.",
        "section_technique": "",
        "section_procedure_comments": "",
        "section_findings": findings,
        "section_impression": impression,
        "section_end_of_impression": "",
        "section_summary": "",
        "section_accession_number": "",
        "age": "68",
        "sex": "Female",
        "race": "White",
        "ethnicity": "Non-Hispanic/Non-Latino",
        "interpreter_needed": "No",
        "insurance_type": "Medicare",
        "recent_bmi": "27.1",
        "deceased": "No",
        "split": split,
    }
    return [values[c] for c in CHEXPERT_PLUS_HEADER]


def build_chexpert_plus(root: Path) -> dict:
    """CheXpert Plus: the CSV, PNG/ images (the CSV names .jpg), chexbert_labels/*.json."""
    f1 = "The heart size is normal.\nThe lungs are clear, without effusion, or pneumothorax."
    rows = [
        _cxp_row(
            "train/patient00001/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            "patient00001",
            f1,
            "1. No acute cardiopulmonary process.",
            "train",
        ),
        _cxp_row(
            "train/patient00001/study1/view2_lateral.jpg",
            "Lateral",
            "",
            "patient00001",
            f1,
            "1. No acute cardiopulmonary process.",
            "train",
        ),
        _cxp_row(
            "train/patient00002/study1/view1_frontal.jpg",
            "Frontal",
            "PA",
            "patient00002",
            "",
            "Stable cardiomegaly.",
            "train",
        ),
        _cxp_row(
            "train/patient00003/study2/view1_lateral.jpg",
            "Lateral",
            "",
            "patient00003",
            "Lateral view: no effusion.",
            "Normal.",
            "train",
        ),
        _cxp_row(
            "valid/patient64541/study1/view1_frontal.jpg",
            "Frontal",
            "PA",
            "patient64541",
            "Right pleural effusion.  Support device in place.",
            "Effusion.",
            "valid",
        ),
        _cxp_row(
            "train/patient00004/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            "patient00004",
            "Left lower lobe opacity.",
            "Pneumonia possible.",
            "train",
        ),
        _cxp_row(
            "train/patient00005/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            "patient00005",
            "",
            "",
            "train",
        ),
        _cxp_row(
            "train/patient00006/study1/view1_frontal.jpg",
            "Frontal",
            "",
            "patient00006",
            "Mild cardiomegaly.",
            "Cardiomegaly.",
            "train",
        ),
        _cxp_row(
            "train/patient00007/study1/view1_frontal.jpg",
            "Frontal",
            "AP",
            "patient00007",
            "Clear lungs.",
            "Normal.",
            "bogus",
        ),
    ]
    rows.insert(2, list(rows[0]))  # duplicate row
    write_csv(root / "df_chexpert_plus_240401.csv", CHEXPERT_PLUS_HEADER, rows)
    for r in rows:
        rel = r[0]
        if "patient00004" in rel:
            continue  # missing image
        write_image((root / "PNG" / rel).with_suffix(".png"))
    labels = {
        "train/patient00001/study1/view1_frontal.jpg": {"No Finding": 1.0},
        "train/patient00001/study1/view2_lateral.jpg": {"No Finding": 1.0},
        "train/patient00002/study1/view1_frontal.jpg": {"Cardiomegaly": 1.0},
        "valid/patient64541/study1/view1_frontal.jpg": {
            "Pleural Effusion": 1.0,
            "Support Devices": 1.0,
            "Pneumothorax": 0.0,
        },
        "train/patient00006/study1/view1_frontal.jpg": {"Cardiomegaly": -1.0},
    }
    for name in ("findings_fixed.json", "report_fixed.json"):
        lines = []
        for path, values in labels.items():
            rec = {"path_to_image": path}
            rec.update({o: values.get(o) for o in CHEXPERT_ORDER})
            lines.append(json.dumps(rec))
        (root / "chexbert_labels").mkdir(parents=True, exist_ok=True)
        (root / "chexbert_labels" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "kept": {
            "chexpert-train-patient00001-study1": {
                "split": "train",
                "image": "PNG/train/patient00001/study1/view1_frontal.png",
                "findings": "The heart size is normal. The lungs are clear, without effusion, "
                "or pneumothorax.",
                "labels": {"No Finding": 1},
            },
            "chexpert-valid-patient64541-study1": {
                "split": "val",
                "image": "PNG/valid/patient64541/study1/view1_frontal.png",
                "findings": "Right pleural effusion. Support device in place.",
                "labels": {"Pleural Effusion": 1, "Support Devices": 1, "Pneumothorax": 0},
            },
            "chexpert-train-patient00006-study1": {
                "split": "train",
                "image": "PNG/train/patient00006/study1/view1_frontal.png",
                "findings": "Mild cardiomegaly.",
                "labels": {"Cardiomegaly": -1},
            },
        },
        "skipped": {
            "duplicate row": 1,
            "malformed row": 1,
            "no findings section": 1,
            "no frontal view": 1,
            "missing image": 1,
            "empty report": 1,
        },
    }


# --------------------------------------------------------------------------- IU X-ray


def build_iu_r2gen(root: Path) -> dict:
    """R2Gen's ``iu_xray`` folder: annotation.json (one entry per study) + images/<id>/N.png."""

    def entry(i, report, split, n_images=2):
        sid = f"CXR{i}_IM-{1000 + i:04d}"
        return {
            "id": sid,
            "report": report,
            "image_path": [f"{sid}/{k}.png" for k in range(n_images)],
            "split": split,
        }

    data = {
        "train": [
            entry(1, "The heart is normal in size. The lungs are clear.", "train"),
            entry(2, "Mild cardiomegaly. No effusion.", "train"),
            entry(2, "Mild cardiomegaly. No effusion.", "train"),  # duplicate id
            entry(3, "", "train"),  # empty report
            entry(4, "Left basilar atelectasis.", "train"),  # image removed below
            {"id": "CXR5_IM-1005", "report": "No acute disease.", "image_path": "x.png"},
        ],
        "val": [entry(6, "No pneumothorax.", "val")],
        "test": [entry(7, "Stable appearance of the chest.", "test", n_images=1)],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(data), encoding="utf-8")
    for items in data.values():
        for e in items:
            if isinstance(e["image_path"], list):
                for p in e["image_path"]:
                    write_image(root / "images" / p)
    (root / "images" / "CXR4_IM-1004" / "1.png").unlink()
    return {
        "kept": {
            "iu-CXR1_IM-1001": ("train", 2, "The heart is normal in size. The lungs are clear."),
            "iu-CXR2_IM-1002": ("train", 2, "Mild cardiomegaly. No effusion."),
            "iu-CXR6_IM-1006": ("val", 2, "No pneumothorax."),
            "iu-CXR7_IM-1007": ("test", 1, "Stable appearance of the chest."),
        },
        "skipped": {"duplicate id": 1, "empty report": 1, "missing image": 1, "malformed entry": 1},
    }


def extract_openi(dest: Path, limit: int) -> list[Path]:
    """Extract the first ``limit`` report files (numeric order) of the real Open-i tarball."""
    out = dest / "ecgen-radiology"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(OPENI_TGZ) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
        members.sort(key=lambda m: int(Path(m.name).stem))
        paths = []
        for m in members[:limit]:
            fh = tar.extractfile(m)
            assert fh is not None
            path = out / Path(m.name).name
            path.write_bytes(fh.read())
            paths.append(path)
    return paths


def openi_facts(path: Path) -> dict:
    """What a report file says, read with regular expressions (independent of orapo's parser)."""
    text = path.read_text(encoding="utf-8")

    def section(label: str) -> str:
        m = re.search(rf'<AbstractText Label="{label}">(.*?)</AbstractText>', text, re.S)
        if not m:
            return ""
        return " ".join(html.unescape(m.group(1)).split())

    return {
        "uid": re.search(r'<uId id="([^"]+)"', text).group(1),
        "findings": section("FINDINGS"),
        "impression": section("IMPRESSION"),
        "images": re.findall(r'<parentImage id="([^"]+)"', text),
    }


def build_openi(root: Path, limit: int = 300) -> dict:
    """Real Open-i reports + generated stand-in PNGs, with a few broken entries added."""
    paths = extract_openi(root, limit)
    facts = {p: openi_facts(p) for p in paths}
    missing_png = None
    for p, f in facts.items():
        for image in f["images"]:
            write_image(root / "NLMCXR_png" / f"{image}.png")
        usable = len(f["images"]) == 2 and (f["findings"] or f["impression"])
        if missing_png is None and p != paths[0] and usable:
            missing_png = (p, f["images"][1])
    assert missing_png is not None
    (root / "NLMCXR_png" / f"{missing_png[1]}.png").unlink()
    # A truncated XML file and a second file with the uId of the first report.
    (root / "ecgen-radiology" / "900001.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<eCitation>\n   <uId id="CXR900001"/>\n',
        encoding="utf-8",
    )
    shutil.copy(paths[0], root / "ecgen-radiology" / "900002.xml")

    kept, skipped = {}, {"unreadable report": 1, "duplicate id": 1}
    for p, f in facts.items():
        if not f["images"]:
            skipped["no images"] = skipped.get("no images", 0) + 1
        elif not f["findings"] and not f["impression"]:
            skipped["empty report"] = skipped.get("empty report", 0) + 1
        elif p == missing_png[0]:
            skipped["missing image"] = 1
        else:
            kept[f"iu-{f['uid']}"] = f
    return {"kept": kept, "skipped": skipped, "first": facts[paths[0]]}
