"""benchmarks/ablation.py end to end on a tiny world: every row runs as a subprocess, two at a
time; the page is written; finished runs are reused (a second seed runs only the new runs); a
failing run is named. Each run is a fresh `orapo train` process (~8 s even at the tiny size,
mostly imports and labeler set-up), so the rows run with one seed and two rows get a second."""

from __future__ import annotations

import json

import pytest

from helpers import load_benchmark, tiny_world


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("ablation")


def overrides(ablation, row: str, seed: int = 0, steps: int = 5, extra=(), **kw) -> dict:
    return dict(
        x.split("=", 1) for x in ablation.row_overrides(row, seed, steps, list(extra), **kw)
    )


def test_overrides_share_one_configuration(ablation):
    dapo, grpo = overrides(ablation, "dapo-facts", 2), overrides(ablation, "grpo-facts", 2)
    assert dapo.pop("algorithm.dynamic_sampling") == "true"
    assert dapo.pop("trainer.rollout_budget") == str(5 * 16 * 8)  # as many rollouts as GRPO's
    assert dapo == grpo and grpo["trainer.seed"] == "2"
    small = ablation.row_overrides("dapo-facts", 0, 3, ["trainer.batch_size=4", "sampling.k=2"])
    assert "trainer.rollout_budget=24" in small
    shared = overrides(ablation, "orapo-1000", steps=80, test_size=100, threads=1)
    assert shared["trainer.eval_every"] == "20" and shared["trainer.save_every"] == "0"
    assert (shared["eval.shuffled"], shared["eval.before"]) == ("true", "false")
    assert (shared["data.test_size"], shared["trainer.threads"]) == ("100", "1")
    assert "data.test_size" not in overrides(ablation, "orapo-1000")  # the whole test split
    assert overrides(ablation, "orapo-1000", steps=2)["trainer.eval_every"] == "1"
    assert (
        overrides(ablation, "orapo-1000", threads=1, extra=["trainer.threads=3"])["trainer.threads"]
        == "3"
    )  # --set wins
    base = overrides(ablation, "base")
    assert (base["trainer.steps"], base["eval.before"], base["eval.after"]) == (
        "0",
        "true",
        "false",
    )
    with pytest.raises(SystemExit):
        ablation.row_overrides("base", 0, 5, ["no-equals-sign"])


def test_the_new_rows_change_one_thing(ablation):
    orapo = overrides(ablation, "orapo-1000")
    for row, key, value in [
        ("orapo-w-min", "algorithm.constant_w", "0.05"),
        ("orapo-w-max", "algorithm.constant_w", "0.15"),
        ("orapo-beta1", "algorithm.reward_options", "{beta: 1.0}"),
        ("grpo-bleu4", "algorithm.reward", "bleu"),
    ]:
        o = overrides(ablation, row)
        assert o.pop(key) == value and "algorithm.constant_w" not in o, row
        o.pop("algorithm.mode", None)
        assert o == orapo, row
    assert ablation.ROWS["grpo-facts-hizrr"].overrides == {
        **ablation.ROWS["grpo-facts"].overrides,
        **ablation.HIGH_ZRR,
    }
    assert ablation.ROWS["orapo-1000-hizrr"].overrides == ablation.HIGH_ZRR
    assert list(ablation.ROWS)[0] == "base"
    # the overrides are valid configs: constant_w fixes w, beta reaches FactS, bleu is BLEU-4
    from orapo.rewards import make_reward
    from orapo.train.run import load_train_config

    cfg, _ = load_train_config(None, ablation.row_overrides("orapo-beta1", 0, 4, []), None, None)
    assert make_reward(cfg.algorithm.reward, **cfg.algorithm.reward_options).beta == 1.0
    cfg, _ = load_train_config(None, ablation.row_overrides("orapo-w-max", 0, 4, []), None, None)
    assert (cfg.algorithm.mode, cfg.algorithm.constant_w) == ("orapo", 0.15)
    assert make_reward("bleu").max_n == 4


def cli(out, seeds, settings, *more) -> list[str]:
    seeds = [str(s) for s in seeds]
    return ["--out", str(out), "--seeds", *seeds, "--jobs", "2", *more, "--set", *settings]


def run_main(ablation, root, argv) -> tuple[int, str]:
    """``main(argv)`` run in ``root``: its exit status and what it printed."""
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setattr(ablation, "print", lambda *a, **k: lines.append(" ".join(map(str, a))), False)
        status = ablation.main(argv)
    return status, "\n".join(lines)


@pytest.fixture(scope="module")
def finished(ablation, tmp_path_factory):
    """Every row at the tiny size, seed 0, 2 runs at a time: (root, settings, argv, output,
    ablation.json as written)."""
    root = tmp_path_factory.mktemp("ablation")
    manifest, model = tiny_world(root)
    docs = root / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text(
        "# Results\n\nanalysis above\n\n<!-- ablation:begin -->\nold\n"
        "<!-- ablation:end -->\n\nanalysis below\n"
    )
    settings = [
        f"data.manifest={manifest}",
        f"model.name_or_path={model}",
        "model.lora.train_vision=false",
        "data.train_size=null",  # all 32: every run chooses the same image-blind references
        "data.val_size=4",
        "trainer.batch_size=4",
        "sampling.k=2",
        "sampling.max_new_tokens=8",
        "eval.max_new_tokens=8",
        "trainer.threads=1",
    ]
    argv = cli(root / "runs", [0], settings, "--steps", "2", "--docs", str(docs))
    status, output = run_main(ablation, root, argv)
    assert status == 0, output
    record = json.loads((root / "runs" / "ablation.json").read_text())
    return root, settings, argv, output, record


def test_every_row_runs_and_the_page_is_written(ablation, finished):
    root, _, _, output, record = finished
    results = record["runs"]
    assert [r["row"] for r in results] == list(ablation.ROWS)  # in this order, the base first
    assert record["references_agree"] and list(record["references"]) == [
        "best_fixed_report",
        "all_positive",
        "majority",
    ]
    by_row = {r["row"]: r for r in results}
    assert by_row["grpo-facts"]["rollouts"] == 2 * 4 * 2
    assert by_row["dapo-facts"]["rollouts"] >= 2 * 4 * 2  # stopped by the same budget
    assert by_row["sft-1000"]["rollouts"] == 0
    assert by_row["orapo-w-max"]["curves"]["mix/w"] == [[1, 0.15], [2, 0.15]]
    assert by_row["orapo-1000"]["curves"]["val/f1"]  # validated at step 1 = max(1, 2 // 4)
    for r in results:
        assert 0.0 <= r["f1"] <= 1.0 and 1 <= r["distinct_reports"] <= r["n"] == 8
        assert len(r["examples"]) == 3 and {"reference", "generated"} <= set(r["examples"][0])
        if r["row"] != "base":
            assert r["grounding_gap"] == pytest.approx(r["f1"] - r["f1_shuffled"])
    assert (root / "runs" / "grpo-bleu4" / "seed0.log").stat().st_size > 0
    assert output.count("\nstart ") == output.count("\ndone ") == len(results)
    page = (root / "docs" / "results.md").read_text()
    assert page.startswith("# Results\n\nanalysis above") and page.endswith("analysis below\n")
    assert "old" not in page and "2 run(s) at a time" in page
    assert "| F1 seed 0 | shuffled seed 0 |" in page  # the per-seed table
    assert (
        page.index("| image-blind: best fixed report |")
        < page.index("| image-blind: majority |")
        < page.index("| Base model (no training) | 1 |")
    )
    for row in ablation.ROWS.values():
        assert f"| {row.label} |" in page
    for name in ("zrr", "w", "reward", "val_f1"):
        assert f"results/ablation-{name}.png" in page
        assert (root / "docs" / "results" / f"ablation-{name}.png").stat().st_size > 0


def test_finished_runs_are_reused(ablation, finished, tmp_path):
    root, settings, *_ = finished
    files = sorted((root / "runs").glob("*/seed0/summary.json")) + sorted(
        (root / "runs").glob("*/seed0.log")
    )
    before = [p.stat().st_mtime_ns for p in files]
    threads = [*settings, "trainer.threads=2"]  # the thread count aside
    status, output = run_main(ablation, root, cli(root / "runs", [0], threads, "--steps", "2"))
    assert status == 0 and "0 run(s) to run, 13 reused" in output
    # a second seed for two rows: only those two run, the page shows mean ± sd and both seeds
    page = tmp_path / "results.md"
    rows = ["--rows", "base", "grpo-facts", "orapo-w-max"]
    status, output = run_main(
        ablation,
        root,
        cli(root / "runs", [0, 1], settings, "--steps", "2", *rows, "--docs", str(page)),
    )
    assert status == 0 and "2 run(s) to run, 3 reused" in output
    assert [p.stat().st_mtime_ns for p in files] == before
    text = page.read_text()
    assert "| GRPO + FactS (1,000) | 2 |" in text and " ± " in text
    assert "| F1 seed 1 | shuffled seed 1 |" in text
    with pytest.raises(SystemExit, match="other settings"):  # ... but not other settings
        run_main(ablation, root, cli(root / "runs", [0], settings, "--steps", "3"))


def test_a_failing_run_is_named_and_the_exit_is_nonzero(ablation, finished, tmp_path):
    root, settings, *_ = finished
    broken = ablation.Row({"trainer.lr_schedule": "sideways"}, "Broken", "a run that fails")
    docs = root / "docs" / "results.md"
    before = docs.stat().st_mtime_ns
    more = ["--steps", "1", "--rows", "broken", "base", "--docs", str(docs)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(ablation.ROWS, "broken", broken)
        status, output = run_main(ablation, root, cli(tmp_path, [0], settings, *more))
    log = tmp_path / "broken" / "seed0.log"
    assert status == 1 and "FAILED broken seed 0 (exit 1)" in output and str(log) in output
    assert "lr_schedule" in log.read_text()
    record = json.loads((tmp_path / "ablation.json").read_text())
    assert [r["row"] for r in record["runs"]] == ["base"]  # the others still finish
    assert record["failed"] == [{"row": "broken", "seed": 0, "log": str(log)}]
    assert docs.stat().st_mtime_ns == before  # no page from an incomplete ablation


def test_references_that_differ_across_runs_are_named(ablation):
    def ref(f1, labels):
        return {"precision": f1, "recall": f1, "f1": f1, "labels": dict.fromkeys(labels, 1)}

    same = {"all_positive": ref(0.2, ["Edema"])}
    results = [
        {"row": "orapo-1000", "seed": s, "references": {**same, "best_fixed_report": r}}
        for s, r in enumerate([ref(0.3, ["No Finding"]), ref(0.3, ["No Finding"]), ref(0.1, [])])
    ]
    refs, differ = ablation.references(results)
    assert differ == [
        "image-blind: best fixed report: F1 0.300 (No Finding) in orapo-1000 seed 0, "
        "orapo-1000 seed 1; F1 0.100 (nothing positive) in orapo-1000 seed 2"
    ]
    text = ablation.table([], [], refs)
    assert "| image-blind: all positive | - | 0.200 | 0.200 | 0.200 |" in text  # one value
    assert "| image-blind: best fixed report | - | 0.233 ± 0.115 |" in text


def test_the_first_run_goes_alone_when_it_makes_the_world(ablation, finished, tmp_path):
    root, settings, *_ = finished
    run = ablation.Run("base", 0, tmp_path / "run", ablation.row_overrides("base", 0, 1, settings))
    assert not ablation.needs_setup(run)  # the tiny world and model are there
    missing = [*settings, f"data.manifest={tmp_path / 'none.jsonl'}"]
    run.overrides = ablation.row_overrides("base", 0, 1, missing)
    assert ablation.needs_setup(run)
