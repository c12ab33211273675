"""`orapo data subset`: deterministic, stratified subsets that cover every observation."""

from __future__ import annotations

import random

import pytest

from orapo.datasets.subset import (
    SubsetError,
    _largest_remainder,
    draw_subset,
    make_subset,
    observation_counts,
)
from orapo.manifest import Study, read_manifest, write_manifest
from orapo.observations import OBSERVATIONS, apply_no_finding_rule

#: Per-study positive probability of each finding in the synthetic split (Lung Lesion absent).
RATES = {
    "Enlarged Cardiomediastinum": 0.04,
    "Cardiomegaly": 0.2,
    "Lung Opacity": 0.22,
    "Edema": 0.12,
    "Consolidation": 0.05,
    "Pneumonia": 0.07,
    "Atelectasis": 0.2,
    "Pneumothorax": 0.04,
    "Pleural Effusion": 0.24,
    "Pleural Other": 0.003,
    "Fracture": 0.01,
    "Support Devices": 0.28,
}


def synthetic_studies(n: int, seed: int = 0, split: str = "train") -> list[Study]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        normal = rng.random() < 0.35
        labels = {
            name: (1 if (not normal or name == "Support Devices") and rng.random() < p else 0)
            for name, p in RATES.items()
        }
        out.append(
            Study(
                id=f"{split}-{i:05d}",
                split=split,
                images=[f"img/{split}-{i}.png"],
                findings="Findings text.",
                impression="",
                labels=apply_no_finding_rule(labels),
            )
        )
    return out


def _normal_share(studies):
    return sum(1 for s in studies if s.labels["No Finding"] == 1) / len(studies)


def test_largest_remainder_worked_values():
    rng = random.Random(0)
    assert _largest_remainder({"a": 1.0, "b": 1.0, "c": 2.0}, 4, rng) == {"a": 1, "b": 1, "c": 2}
    assert _largest_remainder({"a": 0.6, "b": 0.4}, 1, rng) == {"a": 1, "b": 0}
    assert _largest_remainder({"a": 0.0, "b": 0.0}, 3, rng) == {"a": 0, "b": 0}
    assert sum(_largest_remainder({i: 1.0 for i in range(7)}, 3, rng).values()) == 3


def test_small_worked_example():
    def study(i, positives):
        labels = {o: (1 if o in positives else 0) for o in OBSERVATIONS if o != "No Finding"}
        return Study(f"s{i}", "train", ["x.png"], "f", "", apply_no_finding_rule(labels))

    studies = [study(0, {"Fracture"}), study(1, {"Edema"}), study(2, {"Edema"})]
    studies += [study(i, set()) for i in range(3, 10)]
    for seed in range(5):
        chosen = draw_subset(studies, 3, "stratified", seed, min_per_observation=1)
        ids = {s.id for s in chosen}
        # Rarest first: the only fracture, one of the two edemas, then the one place left
        # goes to the normal stratum (target 3 * 7 / 10 = 2.1, none chosen yet).
        assert "s0" in ids
        assert len(ids & {"s1", "s2"}) == 1
        assert len(ids - {"s0", "s1", "s2"}) == 1


def test_stratified_covers_every_observation_and_keeps_normals():
    studies = synthetic_studies(3000)
    full = observation_counts(studies)
    assert full["Lung Lesion"] == 0 and 0 < full["Pleural Other"] < 10
    for n in (400, 1000):
        chosen = draw_subset(studies, n, "stratified", seed=0)
        assert len(chosen) == n == len({s.id for s in chosen})
        sub = observation_counts(chosen)
        m = -(-n // 100)
        for name in OBSERVATIONS:
            assert sub[name] >= min(m, full[name]), (n, name, sub[name], full[name])
        assert sub["Lung Lesion"] == 0
        assert abs(_normal_share(chosen) - _normal_share(studies)) < 0.05
    # A random subset of the same size misses the rarest finding with these numbers.
    rand = draw_subset(studies, 400, "random", seed=0)
    assert observation_counts(rand)["Pleural Other"] < min(4, full["Pleural Other"])


def test_subsets_are_deterministic():
    studies = synthetic_studies(800)
    a = [s.id for s in draw_subset(studies, 100, "stratified", seed=7)]
    shuffled = list(studies)
    random.Random(1).shuffle(shuffled)
    b = sorted(s.id for s in draw_subset(shuffled, 100, "stratified", seed=7))
    assert sorted(a) == b
    assert a != [s.id for s in draw_subset(studies, 100, "stratified", seed=8)]
    r1 = [s.id for s in draw_subset(studies, 100, "random", seed=7)]
    assert r1 == [s.id for s in draw_subset(studies, 100, "random", seed=7)]
    assert r1 != [s.id for s in draw_subset(studies, 100, "random", seed=9)]


def test_uncertain_positive_counts_minus_one():
    studies = synthetic_studies(200)
    studies[0].labels["Lung Lesion"] = -1
    assert observation_counts(studies)["Lung Lesion"] == 0
    assert observation_counts(studies, uncertain_positive=True)["Lung Lesion"] == 1
    chosen = draw_subset(studies, 20, "stratified", 0, uncertain_positive=True)
    assert studies[0].id in {s.id for s in chosen}


def test_make_subset_keeps_other_splits_and_rebases_paths(tmp_path):
    studies = (
        synthetic_studies(500) + synthetic_studies(40, 1, "val") + synthetic_studies(60, 2, "test")
    )
    src = tmp_path / "data" / "manifest.jsonl"
    write_manifest(src, studies)
    out = tmp_path / "subsets" / "train_100.jsonl"
    result = make_subset(src, out, 100, strategy="stratified", seed=3)
    sub = read_manifest(out)
    assert len(sub.split("train")) == 100 and len(sub.split("val")) == 40
    assert len(sub.split("test")) == 60
    assert sorted(s.id for s in sub.split("train")) == result.chosen_ids
    assert all(p.startswith("../data/img/") for s in sub for p in s.images)
    summary = result.summary
    assert (
        summary["positives"]["Cardiomegaly"]["split"]
        == observation_counts(studies[:500])["Cardiomegaly"]
    )
    assert summary["other_splits_kept"] == {"val": 40, "test": 60}
    assert (tmp_path / "subsets" / "train_100.subset.json").is_file()
    again = make_subset(src, tmp_path / "subsets" / "again.jsonl", 100, seed=3)
    assert again.chosen_ids == result.chosen_ids


def test_subset_errors(tmp_path):
    studies = synthetic_studies(50)
    with pytest.raises(SubsetError, match="larger than the 50 studies"):
        draw_subset(studies, 51)
    studies[3].labels = None
    with pytest.raises(SubsetError, match="1 studies have none"):
        draw_subset(studies, 10, "stratified")
    assert len(draw_subset(studies, 10, "random")) == 10
    with pytest.raises(KeyError, match="valid names are: random, stratified"):
        draw_subset(studies, 10, "greedy")
    src = tmp_path / "m.jsonl"
    write_manifest(src, synthetic_studies(30))
    with pytest.raises(SubsetError, match="applies to --strategy stratified only"):
        make_subset(src, tmp_path / "o.jsonl", 5, strategy="random", min_per_observation=2)
