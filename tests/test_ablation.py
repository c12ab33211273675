"""benchmarks/ablation.py end to end on a tiny world: every row runs, the page is written."""

from __future__ import annotations

import json

import pytest

from helpers import load_benchmark, tiny_world


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("ablation")


def test_overrides_share_one_configuration(ablation):
    dapo = dict(x.split("=", 1) for x in ablation.row_overrides("dapo-facts", 2, 5, []))
    grpo = dict(x.split("=", 1) for x in ablation.row_overrides("grpo-facts", 2, 5, []))
    assert dapo.pop("algorithm.dynamic_sampling") == "true"
    assert dapo.pop("trainer.rollout_budget") == str(5 * 16 * 8)  # as many rollouts as GRPO's
    assert dapo == grpo and grpo["trainer.seed"] == "2"
    small = ablation.row_overrides("dapo-facts", 0, 3, ["trainer.batch_size=4", "sampling.k=2"])
    assert "trainer.rollout_budget=24" in small
    base = dict(x.split("=", 1) for x in ablation.row_overrides("base", 0, 5, []))
    assert (base["trainer.steps"], base["eval.before"], base["eval.after"]) == (
        "0",
        "true",
        "false",
    )
    with pytest.raises(SystemExit):
        ablation.row_overrides("base", 0, 5, ["no-equals-sign"])


def test_every_row_runs_and_the_page_is_written(ablation, tmp_path, monkeypatch):
    manifest, model = tiny_world(tmp_path)
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text(
        "# Results\n\nanalysis above\n\n<!-- ablation:begin -->\nold\n"
        "<!-- ablation:end -->\n\nanalysis below\n"
    )
    monkeypatch.chdir(tmp_path)
    settings = [
        f"data.manifest={manifest}",
        f"model.name_or_path={model}",
        "model.lora.train_vision=false",
        "data.train_size=12",
        "data.val_size=4",
        "data.test_size=8",
        "trainer.batch_size=4",
        "sampling.k=2",
        "sampling.max_new_tokens=8",
        "eval.max_new_tokens=8",
        "trainer.threads=1",
    ]
    args = [
        "--out",
        str(tmp_path / "runs"),
        "--seeds",
        "0",
        "1",
        "--steps",
        "2",
        "--docs",
        str(docs),
        "--set",
        *settings,
    ]
    assert ablation.main(args) == 0
    results = json.loads((tmp_path / "runs" / "ablation.json").read_text())
    assert {r["row"] for r in results} == set(ablation.ROWS)
    assert len(results) == 1 + 2 * (len(ablation.ROWS) - 1)  # the base is seed-independent
    by_row = {r["row"]: r for r in results if r["seed"] == 0}
    assert by_row["grpo-facts"]["rollouts"] == 2 * 4 * 2
    assert by_row["dapo-facts"]["rollouts"] >= 2 * 4 * 2  # stopped by the same budget
    assert all(0.0 <= r["f1"] <= 1.0 for r in results)
    page = docs.read_text()
    assert page.startswith("# Results\n\nanalysis above") and page.endswith("analysis below\n")
    assert (
        "old" not in page and "OraPO + FactS (400)" in page and "results/ablation-zrr.png" in page
    )
    assert (docs.parent / "results" / "ablation-w.png").stat().st_size > 0
    # a second invocation reuses the finished runs
    before = (tmp_path / "runs" / "orapo-1000" / "seed0" / "summary.json").stat().st_mtime
    assert ablation.main(args) == 0
    assert (tmp_path / "runs" / "orapo-1000" / "seed0" / "summary.json").stat().st_mtime == before
    # ... but not one made with other settings
    with pytest.raises(SystemExit, match="other settings"):
        ablation.main([*args[:6], "3", *args[7:]])  # --steps 3
