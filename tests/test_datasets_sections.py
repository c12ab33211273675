"""Worked values for report section extraction and the small pure helpers of orapo.datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from fixtures_datasets import MIMIC_REPORTS
from orapo.datasets.sections import (
    clean_text,
    findings_and_impression,
    normalize_section_name,
    split_sections,
)
from orapo.datasets.splits import hash_split, select_views


def test_standard_report_sections():
    r = findings_and_impression(MIMIC_REPORTS[("10000032", "50414267")])
    assert r.findings == (
        "The lungs are clear without focal consolidation, pleural effusion or pneumothorax. "
        "The cardiomediastinal silhouette is normal. No acute osseous abnormality."
    )
    assert r.impression == "No acute cardiopulmonary process."
    assert r.impression_from == "impression"
    names = [name for name, _ in split_sections(MIMIC_REPORTS[("10000032", "50414267")])]
    assert names == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]


def test_wet_read_and_text_on_header_line():
    r = findings_and_impression(MIMIC_REPORTS[("10000032", "53189527")])
    assert r.findings.startswith("Portable AP upright view of the chest. The heart is enlarged.")
    assert r.findings.endswith("No pleural effusion.")
    assert r.impression == "Cardiomegaly with possible mild interstitial edema."


def test_conclusion_is_impression_and_findings_may_be_missing():
    r = findings_and_impression(MIMIC_REPORTS[("10000764", "57375967")])
    assert (r.findings, r.impression) == (
        "",
        "Right lower lobe consolidation, concerning for pneumonia.",
    )


def test_no_headers_uses_text_after_first_paragraph():
    r = findings_and_impression(MIMIC_REPORTS[("10000898", "50771383")])
    assert r.findings == ""
    assert r.impression == "Heart size is normal. Lungs are clear. No pneumothorax."
    assert r.impression_from == "last_paragraph"


def test_empty_sections_give_empty_report():
    r = findings_and_impression(MIMIC_REPORTS[("10001038", "58224503")])
    assert (r.findings, r.impression, r.impression_from) == ("", "", "")


def test_comparison_fallback_and_last_section_wins():
    text = "\n COMPARISON:  Chest radiograph shows no change, lungs clear.\n"
    assert findings_and_impression(text).impression == (
        "Chest radiograph shows no change, lungs clear."
    )
    assert findings_and_impression(text).impression_from == "comparison"
    two = "\n FINDINGS:  first.\n \n FINDINGS:  second.\n \n IMPRESSION:  done.\n"
    assert findings_and_impression(two).findings == "second."


def test_header_first_line_is_not_a_new_section():
    # The repository skips to the next line after a header before looking for the next one.
    text = "\n FINDINGS:\n NOTE: lungs clear.\n \n IMPRESSION:  Normal.\n"
    r = findings_and_impression(text)
    assert r.findings == "NOTE: lungs clear."
    assert r.impression == "Normal."


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("IMPRESSION", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("PORTABLE SEMI-UPRIGHT", "findings"),
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("NOTIFICATION", "notification"),
        ("SOMETHING ELSE", "something else"),
    ],
)
def test_section_name_normalisation(header, name):
    assert normalize_section_name(header) == name


def test_clean_text():
    assert clean_text("  a\n b  \t c \n") == "a b c"


def test_hash_split_is_stable_and_proportional():
    keys = [f"CXR{i}" for i in range(4000)]
    splits = [hash_split(k, 0, (0.7, 0.1, 0.2)) for k in keys]
    assert splits == [hash_split(k, 0, (0.7, 0.1, 0.2)) for k in keys]
    counts = Counter(splits)
    assert abs(counts["train"] / 4000 - 0.7) < 0.03
    assert abs(counts["val"] / 4000 - 0.1) < 0.02
    assert abs(counts["test"] / 4000 - 0.2) < 0.03
    assert splits != [hash_split(k, 1, (0.7, 0.1, 0.2)) for k in keys]
    assert {hash_split(k, 0, (1.0, 0.0, 0.0)) for k in keys} == {"train"}


def test_select_views_preference_and_limit():
    images = [(Path("a"), "LATERAL"), (Path("b"), "AP"), (Path("c"), "PA"), (Path("d"), "PA")]
    assert select_views(images, ("PA", "AP"), 1) == [(Path("c"), "PA")]
    assert select_views(images, ("PA", "AP"), 0) == [
        (Path("c"), "PA"),
        (Path("d"), "PA"),
        (Path("b"), "AP"),
    ]
    assert select_views(images, ("ap",), 2) == [(Path("b"), "AP")]
    assert select_views(images, ("any",), 2) == images[:2]
    assert select_views([(Path("a"), "LATERAL")], ("PA", "AP"), 1) == []
