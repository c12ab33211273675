"""Evaluation with several processes (issue 16, item 5): each process generates the reports of
its share of the studies and the main process scores them all, with the same predictions and
metrics as one process (2 CPU processes, gloo, started by torchrun)."""

from __future__ import annotations

import math

import pytest
import torch

from fixed_step import torchrun
from helpers import tiny_world

pytestmark = pytest.mark.slow


def test_two_processes_validate_like_one(tmp_path):
    manifest, model = map(str, tiny_world(tmp_path / "world"))
    got = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}" / "validate.pt"
        out.parent.mkdir()
        done = torchrun(n, manifest, model, str(out), "validate")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        got[n] = torch.load(out, weights_only=False)
        assert got[n]["processes"] == n
    one, two = got[1]["validate"], got[2]["validate"]
    assert one["metrics"]["n"] == two["metrics"]["n"] == 4  # data.test_size
    assert [p["id"] for p in two["predictions"]] == [p["id"] for p in one["predictions"]]
    assert two["predictions"] == one["predictions"]
    assert two["metrics"]["timing"]["processes"] == 2
    for key, value in one["summary"].items():
        if key == "eval/seconds_per_report":
            continue
        assert two["summary"][key] == value or (
            math.isnan(value) and math.isnan(two["summary"][key])
        ), key
