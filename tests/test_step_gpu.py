"""benchmarks/step_gpu.py runs end to end on CPU at reduced size (issue 16, item 7), so it cannot
rot: the three sides (orapo, plain Hugging Face, TRL) on the same batch, the comparison table.
Random weights from the tiny demo model's config, 1 decoder layer; no timing is checked."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from helpers import load_benchmark

pytestmark = pytest.mark.slow


def test_step_gpu_runs_on_cpu_and_prints_the_table(tmp_path, capsys):
    from orapo.model import build_demo_model

    texts = ["FINDINGS: The lungs are clear. IMPRESSION: Normal."] * 20
    model = build_demo_model(tmp_path / "tiny", texts, preset="tiny")
    step_gpu = load_benchmark("step_gpu")
    args = ["--model", str(model), "--layers", "1", "--device", "cpu", "--batch", "2", "--k", "2",
            "--new-tokens", "4", "--max-pixels", "3136", "--steps", "1"]  # fmt: skip
    assert step_gpu.main(args) == 0
    out = capsys.readouterr().out
    assert "random weights, 1 layers" in out and "B=2 x K=2, 4 new tokens" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert {"side", "orapo", "hf", "trl"} <= set(rows)
    for side in ("orapo", "hf", "trl"):
        seconds = [float(x) for x in rows[side][1:7]]  # step, then the five phases
        assert all(x >= 0 for x in seconds) and seconds[0] > 0
        assert seconds[1] > 0  # rollout timed on every side
        assert rows[side][7] == "-"  # no GPU memory on CPU
    assert float(rows["trl"][8]) == 1.0 and float(rows["hf"][9]) == 1.0
