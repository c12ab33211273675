"""Manifest validation: good files load, bad lines give errors naming file, line and field."""

import json

import pytest

from orapo.manifest import (
    ManifestError,
    Study,
    format_report,
    read_manifest,
    write_manifest,
)

GOOD = {
    "id": "s1",
    "split": "train",
    "images": ["images/s1.png"],
    "findings": "The heart is enlarged.",
    "impression": "Cardiomegaly.",
    "labels": {"Cardiomegaly": 1, "Pneumothorax": 0, "Edema": None},
    "source": {"dataset": "test"},
}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_round_trip(tmp_path):
    studies = [Study(**GOOD), Study(**{**GOOD, "id": "s2", "split": "test", "labels": None})]
    path = tmp_path / "m.jsonl"
    assert write_manifest(path, studies) == 2
    m = read_manifest(path)
    assert [s.id for s in m] == ["s1", "s2"]
    assert m.studies[0].labels == {"Cardiomegaly": 1, "Pneumothorax": 0, "Edema": None}
    assert m.studies[1].labels is None
    assert [s.id for s in m.split("test")] == ["s2"]
    assert m.studies[0].image_paths(m.root) == [tmp_path / "images/s1.png"]
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"


def test_report_joins_sections():
    assert format_report("A.", "B.") == "FINDINGS: A.\nIMPRESSION: B."
    assert format_report("", "B.") == "IMPRESSION: B."
    assert Study(**GOOD).report == "FINDINGS: The heart is enlarged.\nIMPRESSION: Cardiomegaly."


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "invalid JSON"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "split"}),
            "missing required field 'split'",
        ),
        (json.dumps({**GOOD, "split": "training"}), "field 'split' is 'training'"),
        (json.dumps({**GOOD, "images": "a.png"}), "field 'images' must be a non-empty list"),
        (json.dumps({**GOOD, "images": []}), "field 'images' must be a non-empty list"),
        (json.dumps({**GOOD, "findings": 3}), "field 'findings' must be a string, got int"),
        (json.dumps({**GOOD, "findings": " ", "impression": ""}), "both empty"),
        (
            json.dumps({**GOOD, "labels": {"Cardiomegally": 1}}),
            "unknown observation 'Cardiomegally'",
        ),
        (json.dumps({**GOOD, "labels": {"Edema": 2}}), "field 'labels': label value 2"),
        (json.dumps({**GOOD, "id": ""}), "field 'id' must be a non-empty string"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, line, message):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), "", line])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert f"{path}:3: " in str(err.value)
    assert message in str(err.value)


def test_duplicate_id_is_an_error(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [json.dumps(GOOD), json.dumps(GOOD)])
    with pytest.raises(ManifestError, match=r":2: duplicate id 's1'"):
        read_manifest(path)


def test_skip_bad_counts_by_reason(tmp_path):
    lines = [
        json.dumps(GOOD),
        "{oops",
        json.dumps({**GOOD, "id": "s2", "split": "dev"}),
        json.dumps({**GOOD, "id": "s3"}),
        json.dumps(GOOD),
    ]
    m = read_manifest(write_lines(tmp_path / "m.jsonl", lines), skip_bad=True)
    assert [s.id for s in m] == ["s1", "s3"]
    assert sum(m.skipped.values()) == 3
    assert m.skipped["duplicate id 's1'"] == 1


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_rejects_invalid_study(tmp_path):
    with pytest.raises(ManifestError, match="study #0: missing required field 'images'"):
        write_manifest(tmp_path / "m.jsonl", [{k: v for k, v in GOOD.items() if k != "images"}])
    assert not (tmp_path / "m.jsonl").exists()
