"""`orapo data prepare iu-xray` on the real Open-i development reports.

The reports are read from ../shared/data/openi (never copied into the repository); the images
are not available here, so stand-in PNGs are generated for every ``parentImage`` id. The
expected studies are computed from the XML with regular expressions, independently of
orapo's parser.
"""

from __future__ import annotations

from collections import Counter

import pytest

from fixtures_datasets import OPENI_TGZ, build_openi
from orapo.datasets import PrepareOptions, prepare
from orapo.manifest import read_manifest

pytestmark = pytest.mark.skipif(not OPENI_TGZ.is_file(), reason=f"{OPENI_TGZ} not present")


@pytest.fixture(scope="module")
def openi(tmp_path_factory):
    root = tmp_path_factory.mktemp("openi")
    return root, build_openi(root, limit=300)


def test_openi_xml_studies_sections_and_skips(openi, tmp_path):
    root, expected = openi
    result = prepare("iu-xray", PrepareOptions(root=root, out=tmp_path / "out", labels="none"))
    manifest = read_manifest(result.manifest)
    studies = {s.id: s for s in manifest}
    assert set(studies) == set(expected["kept"])
    for sid, facts in expected["kept"].items():
        s = studies[sid]
        assert s.findings == facts["findings"]
        assert s.impression == facts["impression"]
        assert [p.rsplit("/", 1)[1] for p in s.images] == [f"{i}.png" for i in facts["images"]]
        assert all((manifest.root / p).is_file() for p in s.images)
        assert s.source["uid"] == sid[3:]
    first = studies[f"iu-{expected['first']['uid']}"]
    assert first.findings.startswith("The cardiac silhouette and mediastinum size are within")
    assert first.impression == "Normal chest x-XXXX."
    assert first.source["mesh_major"] == ["normal"]
    skipped = {k: v["count"] for k, v in result.summary["skipped"]["by_reason"].items()}
    assert skipped == expected["skipped"]
    assert skipped["no images"] > 0 and skipped["empty report"] > 0
    assert (
        "900001.xml:" in result.summary["skipped"]["by_reason"]["unreadable report"]["examples"][0]
    )
    # The seeded split is deterministic, close to 0.7 / 0.1 / 0.2 and depends on the seed.
    counts = Counter(s.split for s in manifest)
    n = len(manifest)
    assert abs(counts["train"] / n - 0.7) < 0.08 and abs(counts["test"] / n - 0.2) < 0.07
    again = prepare("iu-xray", PrepareOptions(root=root, out=tmp_path / "again", labels="none"))
    assert [(s.id, s.split) for s in again.studies] == [(s.id, s.split) for s in manifest]
    other = prepare(
        "iu-xray",
        PrepareOptions(
            root=root,
            out=tmp_path / "other",
            labels="none",
            seed=1,
            split_fractions=(0.5, 0.25, 0.25),
            max_images=1,
        ),
    )
    assert [s.split for s in other.studies] != [s.split for s in manifest]
    assert all(len(s.images) == 1 for s in other.studies)


def test_openi_labels_come_from_the_labeler(openi, tmp_path):
    from orapo.labeler import get_labeler
    from orapo.manifest import format_report

    root, expected = openi
    result = prepare("iu-xray", PrepareOptions(root=root, out=tmp_path / "out"))
    assert result.summary["labels"]["by_source"] == {"labeler:rule": len(expected["kept"])}
    studies = read_manifest(result.manifest).studies
    texts = [format_report(s.findings, s.impression) for s in studies]
    assert [s.labels for s in studies] == get_labeler("rule").label_batch(texts)
    assert all(s.source["labels"] == "labeler:rule" for s in studies)
