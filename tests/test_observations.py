"""Worked values for the observation vocabulary, label conversion and the No Finding rule."""

import math

import pytest

from orapo import observations as obs


def test_fourteen_names_in_chexpert_order():
    assert len(obs.OBSERVATIONS) == 14
    assert obs.OBSERVATIONS[0] == "No Finding"
    assert obs.OBSERVATIONS[-1] == "Support Devices"
    assert obs.OBSERVATIONS.index("Pleural Effusion") == 10
    assert set(obs.TOP5) <= set(obs.OBSERVATIONS) and len(obs.TOP5) == 5


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, 1),
        (0, 0),
        (-1, -1),
        (None, None),
        (1.0, 1),
        (-1.0, -1),
        (float("nan"), None),
        ("1.0", 1),
        ("-1", -1),
        ("", None),
        (" ", None),
        ("nan", None),
        (True, 1),
    ],
)
def test_parse_state_accepts_dataset_forms(value, expected):
    assert obs.parse_state(value) == expected


@pytest.mark.parametrize("value", [2, 0.5, "yes", [1], "-2.0"])
def test_parse_state_rejects_other_values(value):
    with pytest.raises(ValueError, match="label"):
        obs.parse_state(value)


def test_vector_round_trip_and_missing_names():
    labels = {"Cardiomegaly": 1, "Edema": -1, "Pneumothorax": 0}
    vec = obs.labels_to_vector(labels)
    assert len(vec) == 14
    assert vec[2] == 1 and vec[5] == -1 and vec[9] == 0 and vec[0] is None
    back = obs.vector_to_labels(vec)
    assert back["Cardiomegaly"] == 1 and back["No Finding"] is None and len(back) == 14


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError, match="valid names are: No Finding"):
        obs.labels_to_vector({"Cardiomegally": 1})
    with pytest.raises(ValueError, match="14 entries"):
        obs.vector_to_labels([1, 0])


def test_canonical_name_is_case_insensitive():
    assert obs.canonical_name(" pleural EFFUSION ") == "Pleural Effusion"


@pytest.mark.parametrize(
    "labels, no_finding",
    [
        ({}, None),  # nothing said at all
        ({"No Finding": 1}, 1),  # a global normal statement
        ({"No Finding": 0}, None),  # ... only a positive one counts
        ({"Pneumothorax": 0, "Edema": 0}, 1),  # only negatives
        ({"Support Devices": 1}, 1),  # devices do not make a study abnormal
        ({"Cardiomegaly": 1}, None),
        ({"Edema": -1}, None),  # uncertain counts as abnormal
        ({"No Finding": 1, "Fracture": 1}, None),  # a stated No Finding is overruled
        ({"No Finding": None, "Pneumothorax": 0}, 1),
    ],
)
def test_no_finding_rule(labels, no_finding):
    out = obs.apply_no_finding_rule(labels)
    assert out["No Finding"] == no_finding
    assert len(out) == 14
    for name, state in labels.items():
        if name != "No Finding":
            assert out[name] == state


def test_positives_protocols():
    labels = {"Cardiomegaly": 1, "Edema": -1, "Pneumothorax": 0, "Fracture": None}
    assert obs.positives(labels) == {"Cardiomegaly"}
    assert obs.positives(labels, uncertain_positive=True) == {"Cardiomegaly", "Edema"}


def test_format_labels():
    assert obs.format_labels({"Cardiomegaly": 1, "Edema": -1, "Pneumothorax": 0}) == (
        "Cardiomegaly+, Edema?, Pneumothorax-"
    )
    assert obs.format_labels({}) == "(nothing mentioned)"
    assert math.isnan(float("nan"))
