"""The rule labeler reproduces the synthetic world's gold labels (orapo.synth)."""

from __future__ import annotations

import pytest

from orapo.labeler import get_labeler
from orapo.manifest import read_manifest
from orapo.observations import OBSERVATIONS

synth = pytest.importorskip("orapo.synth")


def test_labeler_reproduces_synthetic_gold_labels(tmp_path):
    path = synth.generate(
        tmp_path / "world", 400, seed=11, write_images=False, progress=False, contact_sheet=False
    )
    manifest = read_manifest(path)
    assert len(manifest) == 400
    lab = get_labeler("rule")
    agree = total = 0
    misses: dict[tuple, int] = {}
    for study in manifest:
        gold = study.labels or {}
        predicted = lab.label(study.report)
        for name in OBSERVATIONS:
            total += 1
            if gold.get(name) == predicted[name]:  # a missing gold key is None
                agree += 1
            else:
                key = (name, gold.get(name), predicted[name])
                misses[key] = misses.get(key, 0) + 1
    assert agree / total >= 0.99, sorted(misses.items(), key=lambda kv: -kv[1])[:10]
