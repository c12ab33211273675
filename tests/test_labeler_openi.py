"""Open-i benchmark: MeSH judgement, naive baseline, scoring (benchmarks/labeler_openi.py)."""

from __future__ import annotations

import math

import pytest

from helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("labeler_openi")


def test_parse_term(bench):
    assert bench.parse_term("Pleural Effusion/right/small") == (
        "Pleural Effusion",
        {"right", "small"},
    )


def test_mesh_judgement_normal_and_uncoded(bench):
    normal = bench.mesh_judgement(["normal"])
    assert normal["No Finding"] == 1
    assert all(v == 0 for k, v in normal.items() if k != "No Finding")
    assert bench.mesh_judgement(["No Indexing"]) is None
    assert bench.mesh_judgement([]) is None


def test_mesh_judgement_clean_and_ambiguous(bench):
    j = bench.mesh_judgement(["Cardiomegaly/mild", "Opacity/lung/base/left"])
    assert j["Cardiomegaly"] == 1 and j["Lung Opacity"] == 1
    assert j["Consolidation"] is None and j["Pneumonia"] is None  # opacity: ambiguous
    assert j["Enlarged Cardiomediastinum"] is None
    assert j["Pneumothorax"] == 0 and j["No Finding"] == 0
    j = bench.mesh_judgement(["Cardiomegaly/borderline"])
    assert j["Cardiomegaly"] is None
    j = bench.mesh_judgement(["Calcified Granuloma/lung/base/right"])
    assert j["Lung Lesion"] is None and j["No Finding"] is None and j["Edema"] == 0
    j = bench.mesh_judgement(["Hydropneumothorax"])
    assert j["Pneumothorax"] == 1 and j["Pleural Effusion"] == 1
    j = bench.mesh_judgement(["Surgical Instruments/mediastinum", "Catheters, Indwelling/right"])
    assert j["Support Devices"] == 1  # a clean heading wins over an ambiguous one
    assert j["No Finding"] is None  # devices alone do not make a report abnormal
    j = bench.mesh_judgement(["Density/ribs/right/focal"])
    assert j["Lung Opacity"] == 0
    # a named chamber enlargement may or may not come with an enlarged silhouette
    j = bench.mesh_judgement(["Heart Atria/enlarged/left"])
    assert j["Cardiomegaly"] is None and j["Edema"] == 0
    assert bench.mesh_judgement(["Heart Ventricles/left/prominent"])["Cardiomegaly"] is None
    assert bench.mesh_judgement(["Heart Atria", "Cardiomegaly"])["Cardiomegaly"] == 1
    assert bench.mesh_judgement(["Fibrosis/diffuse"])["Lung Opacity"] is None


def test_naive_baseline(bench):
    naive = bench.NaiveLabeler()
    out = naive.label("Mild cardiomegaly. No pleural effusion.")
    assert out["Cardiomegaly"] == 1 and out["Pleural Effusion"] == 0
    assert out["No Finding"] is None
    assert naive.label("No pneumothorax.")["No Finding"] == 1
    assert all(v is None for v in naive.label("  ").values())


def test_score_and_summary(bench):
    gold = [{"Edema": 1, "Atelectasis": 0}, {"Edema": 0, "Atelectasis": None}]
    pred = [{"Edema": 1, "Atelectasis": 1}, {"Edema": -1, "Atelectasis": 1}]
    counts = bench.score(gold, pred)
    assert (counts["Edema"].tp, counts["Edema"].fp, counts["Edema"].fn) == (1, 0, 0)
    assert (counts["Atelectasis"].tp, counts["Atelectasis"].fp, counts["Atelectasis"].n) == (
        0,
        1,
        1,
    )
    lenient = bench.score(gold, pred, uncertain_positive=True)
    assert lenient["Edema"].fp == 1
    micro, macro = bench.summary(counts)
    assert (micro.tp, micro.fp, micro.fn) == (1, 1, 0)
    assert macro == 1.0  # Atelectasis has no gold positive: left out of the macro mean
    assert math.isnan(counts["Fracture"].f1)


def test_half_split_is_fixed(bench):
    assert bench.half_of("CXR4") == bench.half_of("CXR4")
    halves = {bench.half_of(f"CXR{i}") for i in range(50)}
    assert halves == {"dev", "check"}


@pytest.mark.slow
def test_open_i_smoke(bench):
    if not bench.DEFAULT_TGZ.is_file():
        pytest.skip(f"{bench.DEFAULT_TGZ} not available")
    from orapo.labeler import get_labeler

    reports = [r for r in bench.load_reports(bench.DEFAULT_TGZ) if r.half == "dev"][:400]
    gold, _, results = bench.run(reports, {"ours": get_labeler().label}, False)
    micro, _ = bench.summary(results["ours"])
    assert len(gold) > 350
    assert micro.f1 > 0.9
