"""`orapo data prepare` on small trees in each distribution layout (tests/fixtures_datasets.py).

Each test checks the manifest validates, holds the right studies with the right split,
sections, labels and image paths, and that every broken entry is reported by reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fixtures_datasets import (
    CHEXPERT_PLUS_HEADER,
    build_chexpert_plus,
    build_iu_r2gen,
    build_mimic,
    build_mimic_r2gen,
    write_csv,
)
from orapo.datasets import PrepareError, PrepareOptions, prepare
from orapo.datasets.cli import register
from orapo.manifest import read_manifest


def _skipped(summary: dict) -> dict[str, int]:
    return {k: v["count"] for k, v in summary["skipped"]["by_reason"].items()}


def _by_id(manifest_path: Path) -> dict:
    return {s.id: s for s in read_manifest(manifest_path)}


# --------------------------------------------------------------------------- MIMIC-CXR


def test_mimic_cxr_jpg(tmp_path):
    root, reports, out = tmp_path / "mimic-cxr-jpg", tmp_path / "mimic-cxr", tmp_path / "out"
    expected = build_mimic(root, reports_root=reports)
    result = prepare(
        "mimic-cxr",
        PrepareOptions(root=root, out=out, reports_root=reports, labels="chexpert"),
    )
    studies = _by_id(out / "manifest.jsonl")
    assert set(studies) == set(expected["kept"])
    for sid, exp in expected["kept"].items():
        s = studies[sid]
        assert s.split == exp["split"]
        assert s.findings == exp["findings"]
        assert s.impression == exp["impression"]
        assert len(s.images) == 1 and Path(s.images[0]).stem == exp["image"]
        assert not os.path.isabs(s.images[0])
        sub, st = s.source["subject_id"], s.source["study_id"]
        folder = root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{st}"
        assert (out / s.images[0]).resolve() == (folder / f"{exp['image']}.jpg").resolve()
        assert s.source["dataset"] == "mimic-cxr"
        assert s.source["labels"] == "chexpert-csv"
    assert studies["mimic-s53189527"].labels["Cardiomegaly"] == 1
    assert studies["mimic-s53189527"].labels["Edema"] == -1
    assert studies["mimic-s53189527"].labels["Pleural Effusion"] == 0
    assert studies["mimic-s53189527"].labels["Pneumonia"] is None
    assert studies["mimic-s50414267"].source["views"] == ["PA"]
    assert studies["mimic-s50771383"].source["impression_from"] == "last_paragraph"
    assert _skipped(result.summary) == expected["skipped"]
    assert result.summary["kept"] == {"total": 4, "train": 2, "val": 1, "test": 1}
    on_disk = json.loads((out / "prepare_summary.json").read_text())
    assert on_disk == result.summary
    examples = on_disk["skipped"]["by_reason"]["malformed row"]["examples"]
    assert any("mimic-cxr-2.0.0-split.csv.gz:14" in e for e in examples)
    assert any("mimic-cxr-2.0.0-chexpert.csv.gz:7" in e and "maybe" in e for e in examples)


def test_mimic_negbio_views_and_max_images(tmp_path):
    root, out = tmp_path / "m", tmp_path / "out"
    build_mimic(root)
    result = prepare(
        "mimic-cxr",
        PrepareOptions(root=root, out=out, labels="negbio", views=("AP", "PA"), max_images=2),
    )
    studies = _by_id(result.manifest)
    assert studies["mimic-s50771383"].labels["No Finding"] is None  # negbio row differs
    assert studies["mimic-s50771383"].source["labels"] == "negbio-csv"
    val = studies["mimic-s57375967"]
    assert val.source["views"] == ["AP", "PA"]  # AP preferred now, both kept
    assert len(val.images) == 2
    assert "malformed row" in _skipped(result.summary)  # the split row; negbio has no bad row
    assert _skipped(result.summary)["malformed row"] == 1


def test_mimic_views_any_keeps_laterals(tmp_path):
    root, out = tmp_path / "m", tmp_path / "out"
    build_mimic(root)
    result = prepare("mimic-cxr", PrepareOptions(root=root, out=out, labels="none", views=("any",)))
    assert "no frontal view" not in _skipped(result.summary)
    assert "mimic-s51178377" in _by_id(result.manifest)
    assert all(s.labels is None for s in result.studies)


def test_mimic_strict_names_file_and_line(tmp_path):
    root = tmp_path / "m"
    build_mimic(root)
    with pytest.raises(PrepareError, match=r"split\.csv\.gz:4: duplicate row"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=tmp_path / "o", strict=True))


def test_mimic_missing_columns_named(tmp_path):
    root = tmp_path / "m"
    build_mimic(root)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study", "subject_id"], [])
    with pytest.raises(PrepareError) as err:
        prepare("mimic-cxr", PrepareOptions(root=root, out=tmp_path / "o"))
    msg = str(err.value)
    assert "mimic-cxr-2.0.0-split.csv.gz" in msg
    assert "'study_id'" in msg and "'split'" in msg and "--column" in msg


def test_mimic_column_override(tmp_path):
    root = tmp_path / "m"
    build_mimic(root)
    import gzip

    path = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode().replace("ViewPosition", "view_position")
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(PrepareError, match="ViewPosition"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=tmp_path / "o", labels="none"))
    result = prepare(
        "mimic-cxr",
        PrepareOptions(
            root=root, out=tmp_path / "o", labels="none", columns={"view": "view_position"}
        ),
    )
    assert result.summary["kept"]["total"] == 4


def test_mimic_r2gen(tmp_path):
    root, out = tmp_path / "mimic_cxr", tmp_path / "out"
    expected = build_mimic_r2gen(root)
    result = prepare("mimic-cxr", PrepareOptions(root=root, out=out, format="r2gen", labels="none"))
    studies = _by_id(result.manifest)
    assert set(studies) == set(expected["kept"])
    for sid, (split, dicom, report) in expected["kept"].items():
        s = studies[sid]
        assert (s.split, Path(s.images[0]).stem, s.findings, s.impression) == (
            split,
            dicom,
            report,
            "",
        )
        assert len(s.images) == 1
    assert len(studies["mimic-s50414267"].source["entry_ids"]) == 2
    assert _skipped(result.summary) == expected["skipped"]
    assert result.summary["format"] == "r2gen"


def test_mimic_r2gen_without_metadata_notes_unknown_views(tmp_path):
    root, out = tmp_path / "mimic_cxr", tmp_path / "out"
    build_mimic_r2gen(root)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    result = prepare(
        "mimic-cxr",
        PrepareOptions(root=root, out=out, format="r2gen", labels="none", r2gen_field="impression"),
    )
    studies = _by_id(result.manifest)
    # Without view positions the first listed image (here the lateral) is kept, and said so.
    assert Path(studies["mimic-s50414267"].images[0]).stem.startswith("174413ec")
    assert studies["mimic-s50414267"].findings == ""
    assert studies["mimic-s50414267"].impression.startswith("The lungs are clear.")
    assert "mimic-s51178377" in studies  # the lateral-only study is kept too
    # One note per study grouped from the file (7), including the two skipped afterwards.
    assert sum(result.summary["notes"].values()) == 7


# --------------------------------------------------------------------------- CheXpert Plus


def test_chexpert_plus_findings_setting(tmp_path):
    root, out = tmp_path / "chexpert_plus", tmp_path / "out"
    expected = build_chexpert_plus(root)
    result = prepare("chexpert-plus", PrepareOptions(root=root, out=out))
    studies = _by_id(result.manifest)
    assert set(studies) == set(expected["kept"])
    for sid, exp in expected["kept"].items():
        s = studies[sid]
        assert s.split == exp["split"]
        assert s.findings == exp["findings"]
        assert s.impression == ""  # the benchmark's findings setting
        assert (out / s.images[0]).resolve() == (root / exp["image"]).resolve()
        full = {k: v for k, v in s.labels.items() if v is not None}
        assert full == exp["labels"]
        assert s.source["labels"] == "chexbert"
    assert studies["chexpert-train-patient00006-study1"].source["views"] == ["FRONTAL"]
    assert _skipped(result.summary) == expected["skipped"]
    assert result.summary["inputs"]["labels"].endswith("findings_fixed.json")


def test_chexpert_plus_both_sections_and_split_map(tmp_path):
    root, out = tmp_path / "cxp", tmp_path / "out"
    build_chexpert_plus(root)
    result = prepare(
        "chexpert-plus",
        PrepareOptions(
            root=root,
            out=out,
            sections="both",
            require="any",
            split_map={"valid": "test"},
            absolute_paths=True,
        ),
    )
    studies = _by_id(result.manifest)
    assert studies["chexpert-valid-patient64541-study1"].split == "test"
    assert studies["chexpert-train-patient00002-study1"].impression == "Stable cardiomegaly."
    assert studies["chexpert-train-patient00002-study1"].findings == ""
    assert studies["chexpert-train-patient00001-study1"].impression == (
        "1. No acute cardiopulmonary process."
    )
    assert all(os.path.isabs(p) for s in studies.values() for p in s.images)
    assert result.summary["inputs"]["labels"].endswith("report_fixed.json")
    assert "no findings section" not in _skipped(result.summary)


def test_chexpert_plus_files_disagree(tmp_path):
    root = tmp_path / "cxp"
    build_chexpert_plus(root)
    header = [c for c in CHEXPERT_PLUS_HEADER if c not in ("ap_pa", "section_findings")]
    write_csv(root / "other.csv", header, [])
    with pytest.raises(PrepareError) as err:
        prepare(
            "chexpert-plus",
            PrepareOptions(root=root, out=tmp_path / "o", files={"csv": "other.csv"}),
        )
    msg = str(err.value)
    assert "other.csv" in msg and "'ap_pa'" in msg and "'section_findings'" in msg
    # A label file keyed by another column is named too.
    lines = (root / "chexbert_labels" / "findings_fixed.json").read_text().splitlines()
    renamed = [line.replace('"path_to_image"', '"image"') for line in lines]
    (root / "chexbert_labels" / "findings_fixed.json").write_text("\n".join(renamed))
    with pytest.raises(PrepareError, match=r"findings_fixed\.json.*'path_to_image'"):
        prepare("chexpert-plus", PrepareOptions(root=root, out=tmp_path / "o"))
    result = prepare(
        "chexpert-plus",
        PrepareOptions(root=root, out=tmp_path / "o", columns={"labels_key": "image"}),
    )
    assert result.summary["labels"]["by_source"] == {"chexbert": 3}


def test_chexpert_plus_verify_and_copy_images(tmp_path):
    root, out = tmp_path / "cxp", tmp_path / "out"
    build_chexpert_plus(root)
    (root / "PNG/valid/patient64541/study1/view1_frontal.png").write_bytes(b"not an image")
    result = prepare(
        "chexpert-plus",
        PrepareOptions(root=root, out=out, verify_images=True, copy_images=True),
    )
    assert _skipped(result.summary)["unreadable image"] == 1
    for s in result.studies:
        assert s.images[0].startswith("images/")
        assert (out / s.images[0]).is_file()
    assert len(result.studies) == 2


# --------------------------------------------------------------------------- IU X-ray (R2Gen)


def test_iu_r2gen(tmp_path):
    root, out = tmp_path / "iu_xray", tmp_path / "out"
    expected = build_iu_r2gen(root)
    result = prepare("iu-xray", PrepareOptions(root=root, out=out, format="r2gen", labels="none"))
    studies = _by_id(result.manifest)
    assert set(studies) == set(expected["kept"])
    for sid, (split, n_images, report) in expected["kept"].items():
        s = studies[sid]
        assert (s.split, len(s.images), s.findings) == (split, n_images, report)
        assert all((out / p).is_file() for p in s.images)
    assert _skipped(result.summary) == expected["skipped"]


def test_r2gen_layout_is_detected_without_format(tmp_path):
    """``--root`` holding annotation.json + images/ (R2Gen's form) prepares without --format;
    a root with neither layout names both the missing file and the other layout's flag."""
    for dataset, build in (("iu-xray", build_iu_r2gen), ("mimic-cxr", build_mimic_r2gen)):
        root, out = tmp_path / dataset, tmp_path / f"{dataset}-out"
        expected = build(root)
        result = prepare(dataset, PrepareOptions(root=root, out=out, labels="none"))
        assert result.summary["format"] == "r2gen"
        assert len(result.studies) == len(expected["kept"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="ecgen-radiology does not exist.*--format r2gen"):
        prepare("iu-xray", PrepareOptions(root=empty, out=tmp_path / "o"))
    with pytest.raises(PrepareError, match="split.csv.gz does not exist.*--format r2gen"):
        prepare("mimic-cxr", PrepareOptions(root=empty, out=tmp_path / "o"))


# --------------------------------------------------------------------------- options, CLI


def test_option_errors(tmp_path):
    root = tmp_path / "m"
    build_mimic(root)
    out = tmp_path / "o"
    with pytest.raises(KeyError, match="valid names are: chexpert-plus, iu-xray, mimic-cxr"):
        prepare("mimic", PrepareOptions(root=root, out=out))
    with pytest.raises(PrepareError, match="--split-fractions does not apply"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=out, split_fractions=(0.5, 0.5, 0)))
    with pytest.raises(PrepareError, match="valid formats are: mimic-cxr-jpg, r2gen"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=out, format="xml"))
    with pytest.raises(PrepareError, match="unknown file key"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=out, files={"labelz": "x"}))
    with pytest.raises(
        PrepareError, match="--labels 'chexbert' for 'mimic-cxr'; valid: auto, chexpert, negbio"
    ):
        prepare("mimic-cxr", PrepareOptions(root=root, out=out, labels="chexbert"))
    with pytest.raises(PrepareError, match="cannot be met"):
        prepare(
            "mimic-cxr", PrepareOptions(root=root, out=out, sections="findings", require="both")
        )
    (root / "mimic-cxr-2.0.0-negbio.csv.gz").unlink()
    with pytest.raises(PrepareError, match="negbio.csv.gz does not exist"):
        prepare("mimic-cxr", PrepareOptions(root=root, out=out, labels="negbio"))
    assert not (out / "manifest.jsonl").exists()


def test_cli_prepare_and_subset(tmp_path):
    root, out = tmp_path / "m", tmp_path / "out"
    build_mimic(root)
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "prepare",
            "mimic-cxr",
            "--root",
            str(root),
            "--out",
            str(out),
            "--labels",
            "chexpert",
            "--views",
            "PA,AP",
            "--file",
            "split=mimic-cxr-2.0.0-split.csv.gz",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "skipped: no frontal view" in res.output and "kept: total" in res.output
    assert len(read_manifest(out / "manifest.jsonl")) == 4
    res = runner.invoke(
        app,
        [
            "subset",
            str(out / "manifest.jsonl"),
            "--n",
            "2",
            "--seed",
            "3",
            "-o",
            str(out / "s.jsonl"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Cardiomegaly" in res.output
    sub = read_manifest(out / "s.jsonl")
    assert len(sub.split("train")) == 2 and len(sub.split("val")) == 1
    res = runner.invoke(
        app, ["prepare", "mimic-cxr", "--root", str(root), "--out", str(out), "--seed", "1"]
    )
    assert res.exit_code == 1
    assert "--seed does not apply" in res.output
    res = runner.invoke(app, ["prepare", "--help"])
    assert res.exit_code == 0 and "--reports-root" in res.output


# --------------------------------------------------------------------------- labeler fallback


def test_studies_without_dataset_labels_go_to_the_labeler(tmp_path):
    import gzip

    from orapo.labeler import get_labeler
    from orapo.manifest import format_report

    root, out = tmp_path / "m", tmp_path / "out"
    build_mimic(root)
    path = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
    kept_lines = [line for line in lines if ",53189527," not in line]
    assert len(kept_lines) == len(lines) - 1
    path.write_bytes(gzip.compress("".join(kept_lines).encode()))
    result = prepare("mimic-cxr", PrepareOptions(root=root, out=out))  # auto -> chexpert csv
    studies = _by_id(result.manifest)
    s = studies["mimic-s53189527"]
    assert s.source["labels"] == "labeler:rule"
    expected = get_labeler("rule").label_batch([format_report(s.findings, s.impression)])[0]
    assert s.labels == expected
    assert s.labels["Cardiomegaly"] == 1
    assert result.summary["labels"]["by_source"] == {"chexpert-csv": 3, "labeler:rule": 1}
    assert list(result.summary["notes"].values()) == [1]
    # --labels labeler labels every study with the orapo labeler.
    all_rule = prepare("mimic-cxr", PrepareOptions(root=root, out=out, labels="labeler"))
    assert all_rule.summary["labels"]["by_source"] == {"labeler:rule": 4}
