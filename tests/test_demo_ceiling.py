"""Linear-probe ceilings of the demo budget (benchmarks/demo_ceiling.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import load_benchmark, tiny_world


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("demo_ceiling")


def test_probe_reads_a_separable_label_and_keeps_a_constant_one(bench):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = np.stack([(x[:, 0] > 0).astype(int), np.zeros(60, dtype=int), np.ones(60, dtype=int)], 1)
    x_test = rng.normal(size=(40, 5))
    pred = bench.probe(x, y, x_test, c=10.0)
    assert pred.shape == (40, 3)
    assert (pred[:, 0] == (x_test[:, 0] > 0)).mean() >= 0.9
    assert (pred[:, 1] == 0).all() and (pred[:, 2] == 1).all()


def test_read_outs_on_a_tiny_world(tmp_path, bench, capsys):
    manifest, model = tiny_world(tmp_path)
    rows = bench.read_outs(str(model), str(manifest), 32, [0.05], 16)
    assert [r[0] for r in rows] == ["normal report", "features, C=0.05", "pixels, C=0.05"]
    for _, p, r, f, per in rows:
        assert 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0 and 0.0 <= f <= 1.0
        assert len(per) == 14
    # the normal report is right exactly on the studies whose gold label is No Finding
    test = [json.loads(line) for line in manifest.read_text().splitlines()]
    test = [s for s in test if s["split"] == "test"]
    normal = sum(s["labels"]["No Finding"] == 1 for s in test)
    assert rows[0][1] == pytest.approx(normal / len(test))
    assert (
        bench.main(
            [
                "--model",
                str(model),
                "--manifest",
                str(manifest),
                "--n-train",
                "32",
                "--c",
                "0.05",
                "--pixel-side",
                "16",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| features, C=0.05 |" in out and "| Cardiomegaly |" in out


def test_read_outs_refuses_unlabelled_studies(tmp_path, bench):
    manifest, model = tiny_world(tmp_path)
    lines = manifest.read_text().splitlines()
    first = json.loads(lines[0])
    first.pop("labels")
    manifest.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(SystemExit, match="no gold labels"):
        bench.read_outs(str(model), str(manifest), 32, [0.05], 16)
