"""Clinical P/R/F1: worked values by hand, zero denominators, errors, and scikit-learn."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from orapo.metrics import (
    AVERAGES,
    PRF,
    PROTOCOLS,
    ClinicalMetrics,
    binarize,
    clinical_report,
    clinical_scores,
    confusion_counts,
    format_clinical_table,
    per_observation_markdown,
    prf_from_counts,
)
from orapo.observations import OBSERVATION_SETS, OBSERVATIONS, TOP5

# Three reports on the top5 set (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural
# Effusion). Uncertain labels sit where the two protocols disagree; report 2 has no positives.
PREDS = [
    {"Cardiomegaly": 1, "Edema": -1},
    {"Pleural Effusion": 1},
    {"Consolidation": 0},
]
REFS = [
    {"Cardiomegaly": 1, "Edema": 1},
    {"Pleural Effusion": -1, "Atelectasis": 1},
    {},
]


def assert_prf(prf: PRF, precision: float, recall: float, f1: float, support: int) -> None:
    assert prf.precision == pytest.approx(precision, abs=1e-12)
    assert prf.recall == pytest.approx(recall, abs=1e-12)
    assert prf.f1 == pytest.approx(f1, abs=1e-12)
    assert prf.support == support


def test_positive_protocol_worked_values():
    # positive: pred {Card}, {PE}, {}; ref {Card, Edema}, {Atel}, {}.
    # per observation (tp, fp, fn): Atel (0,0,1) Card (1,0,0) Cons (0,0,0) Edema (0,0,1) PE (0,1,0)
    res = clinical_scores(PREDS, REFS, "positive", "top5")
    assert (res.protocol, res.observation_set, res.n_reports) == ("positive", "top5", 3)
    assert_prf(res.micro, 1 / 2, 1 / 3, 2 / 5, 3)  # tp 1, fp 1, fn 2
    assert_prf(res.macro, 1 / 5, 1 / 5, 1 / 5, 3)  # only Cardiomegaly scores, 1.0
    # per report: (1,0,1) -> 1, 1/2, 2/3; (0,1,1) -> 0; (0,0,0) -> 0 by the zero rule
    assert_prf(res.example, 1 / 3, 1 / 6, 2 / 9, 3)
    assert res.n_empty_reports == 1
    assert_prf(res.per_observation["Cardiomegaly"], 1, 1, 1, 1)
    assert_prf(res.per_observation["Pleural Effusion"], 0, 0, 0, 0)
    assert_prf(res.per_observation["Consolidation"], 0, 0, 0, 0)  # no support, no predictions
    assert list(res.per_observation) == list(TOP5)


def test_uncertain_positive_protocol_worked_values():
    # uncertain-positive: pred {Card, Edema}, {PE}, {}; ref {Card, Edema}, {PE, Atel}, {}.
    # per observation: Atel (0,0,1) Card (1,0,0) Cons (0,0,0) Edema (1,0,0) PE (1,0,0)
    res = clinical_scores(PREDS, REFS, "uncertain-positive", "top5")
    assert res.protocol == "uncertain-positive"
    assert_prf(res.micro, 1.0, 3 / 4, 6 / 7, 4)  # tp 3, fp 0, fn 1
    assert_prf(res.macro, 3 / 5, 3 / 5, 3 / 5, 4)
    # per report: (2,0,0) -> 1,1,1; (1,0,1) -> 1, 1/2, 2/3; (0,0,0) -> 0
    assert_prf(res.example, 2 / 3, 1 / 2, 5 / 9, 4)
    assert res.n_empty_reports == 1


def test_all14_counts_no_finding_and_top5_does_not():
    preds = [{"No Finding": 1}, {"Fracture": 1, "Edema": 1}]
    refs = [{"No Finding": 1}, {"Edema": 1}]
    all14 = clinical_scores(preds, refs, "positive", "all14")
    assert_prf(all14.micro, 2 / 3, 1.0, 4 / 5, 2)  # No Finding tp, Edema tp, Fracture fp
    assert_prf(all14.per_observation["No Finding"], 1, 1, 1, 1)
    assert_prf(all14.macro, 2 / 14, 2 / 14, 2 / 14, 2)  # 12 observations score 0
    top5 = clinical_scores(preds, refs, "positive", "top5")
    assert_prf(top5.micro, 1, 1, 1, 1)
    assert top5.n_empty_reports == 1  # report 0 has nothing among the five


def test_zero_denominators_score_zero():
    empty = [{}, {"Edema": 0}, {"Edema": None}]
    res = clinical_scores(empty, empty, "uncertain-positive", "all14")
    for avg in AVERAGES:
        assert_prf(res.average(avg), 0, 0, 0, 0)
    assert res.n_empty_reports == 3
    # predictions but no reference positives: P = 0 (all false), R = 0 (0/0), F1 = 0
    res = clinical_scores([{"Edema": 1}], [{"Edema": 0}], "positive", "top5")
    assert_prf(res.micro, 0, 0, 0, 0)
    assert_prf(res.example, 0, 0, 0, 0)
    assert res.n_empty_reports == 0


def test_pure_functions():
    pred = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)  # (N=2, O=3)
    ref = np.array([[1, 0, 1], [0, 0, 1]], dtype=bool)
    assert confusion_counts(pred, ref, axis=0).tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert confusion_counts(pred, ref, axis=1).tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prf_from_counts(np.array([3, 1, 3])).tolist() == pytest.approx([0.75, 0.5, 0.6])
    assert prf_from_counts(np.zeros((2, 3))).tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="one shape"):
        confusion_counts(pred, ref[:, :2])


def test_binarize_reads_dataset_forms():
    rows = [{"Edema": 1.0, "Cardiomegaly": float("nan"), "Atelectasis": "-1"}]
    # top5 order: Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
    assert binarize(rows, "positive", "top5").astype(int).tolist() == [[0, 0, 0, 1, 0]]
    assert binarize(rows, "uncertain-positive", "top5").astype(int).tolist() == [[1, 0, 0, 1, 0]]


def test_accumulator_batches_equal_one_shot_and_reset():
    rng = np.random.default_rng(3)
    preds, refs = random_labels(rng, 50), random_labels(rng, 50)
    whole = clinical_scores(preds, refs, "uncertain-positive", "all14")
    m = ClinicalMetrics("uncertain-positive", "all14")
    for start in range(0, 50, 7):
        m.update(preds[start : start + 7], refs[start : start + 7])
    batched = m.compute()
    assert batched.n_reports == 50
    for avg in AVERAGES:
        for stat in ("precision", "recall", "f1", "support"):
            got, want = getattr(batched.average(avg), stat), getattr(whole.average(avg), stat)
            assert got == pytest.approx(want, abs=1e-12)
    assert batched.per_observation == whole.per_observation
    m.reset()
    with pytest.raises(ValueError, match="no reports"):
        m.compute()
    m.update(PREDS, REFS)
    assert m.compute().micro == clinical_scores(PREDS, REFS, "uncertain-positive").micro


def test_clear_errors():
    with pytest.raises(ValueError, match="2 preds and 3 refs"):
        clinical_scores(PREDS[:2], REFS)
    with pytest.raises(KeyError, match=r"preds\[1\]: unknown observation 'Cardiomegally'"):
        clinical_scores([{}, {"Cardiomegally": 1}], [{}, {}])
    # a misspelt name outside the chosen set is still an error, never silently ignored
    with pytest.raises(KeyError, match=r"refs\[0\]: unknown observation 'no finding'"):
        clinical_scores([{}], [{"no finding": 1}], observation_set="top5")
    with pytest.raises(ValueError, match=r"preds\[0\]\['Edema'\]: label value 2"):
        clinical_scores([{"Edema": 2}], [{}])
    with pytest.raises(TypeError, match=r"refs\[0\] must be a label dict"):
        clinical_scores([{}], [["Edema"]])
    with pytest.raises(ValueError, match="valid protocols are: positive, uncertain-positive"):
        ClinicalMetrics("uncertain")
    with pytest.raises(ValueError, match="valid sets are: all14, top5"):
        ClinicalMetrics("positive", "top14")


def test_report_keys_json_and_tables():
    report = clinical_report(PREDS, REFS)
    assert list(report) == [
        "positive/all14",
        "positive/top5",
        "uncertain-positive/all14",
        "uncertain-positive/top5",
    ]
    for key, result in report.items():
        data = json.loads(json.dumps(result.to_dict()))
        assert f"{data['protocol']}/{data['observation_set']}" == key
        assert set(AVERAGES) <= set(data) and data["n_reports"] == 3
        assert len(data["per_observation"]) == len(OBSERVATION_SETS[result.observation_set])
    assert report["uncertain-positive/top5"].micro.f1 == pytest.approx(6 / 7)
    flat = report["positive/top5"].flat()
    assert flat["clinical/positive/top5/micro_f1"] == pytest.approx(0.4)

    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(format_clinical_table(report))
    text = console.export_text()
    assert "uncertain-positive/top5" in text and "1.000 / 0.750 / 0.857" in text

    md = per_observation_markdown(report["positive/top5"])
    assert "`positive`" in md and "`top5`" in md
    assert "| Cardiomegaly | 1.000 | 1.000 | 1.000 | 1 |" in md
    assert "| **micro** | 0.500 | 0.333 | 0.400 | 3 |" in md
    assert md.count("\n|") == 2 + 5 + 3  # header, rule, observations, averages


# --- agreement with scikit-learn ------------------------------------------------------------


def random_labels(rng: np.random.Generator, n: int) -> list[dict]:
    """Sparse random label dicts over the 14 names: missing, None, 1, 0, -1, and some empty."""
    states = [1, 0, -1, None]
    out = []
    for _ in range(n):
        if rng.random() < 0.15:
            out.append({})
            continue
        report = {}
        for name in OBSERVATIONS:
            if rng.random() < 0.4:
                report[name] = states[rng.integers(len(states))]
        out.append(report)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("observation_set", list(OBSERVATION_SETS))
def test_agrees_with_sklearn(seed, protocol, observation_set):
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(seed)
    preds, refs = random_labels(rng, 80), random_labels(rng, 80)
    res = clinical_scores(preds, refs, protocol, observation_set)
    y_pred = binarize(preds, protocol, observation_set).astype(int)  # (N, O)
    y_true = binarize(refs, protocol, observation_set).astype(int)
    # the binarisation itself, checked without our code: the protocol's positive states
    positive = {1} if protocol == "positive" else {1, -1}
    names = OBSERVATION_SETS[observation_set]
    assert y_true.tolist() == [[int(r.get(n) in positive) for n in names] for r in refs]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ill-defined-metric warnings
        for ours, theirs in (("micro", "micro"), ("macro", "macro"), ("example", "samples")):
            p, r, f, _ = precision_recall_fscore_support(
                y_true, y_pred, average=theirs, zero_division=0
            )
            got = res.average(ours)
            assert (got.precision, got.recall, got.f1) == pytest.approx((p, r, f), abs=1e-9)
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for j, name in enumerate(names):
        got = res.per_observation[name]
        assert (got.precision, got.recall, got.f1) == pytest.approx((p[j], r[j], f[j]), abs=1e-9)
        assert got.support == s[j]
    assert res.micro.support == y_true.sum()
