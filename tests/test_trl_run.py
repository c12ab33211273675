"""`orapo train ... trainer.engine=trl` on the tiny synthetic world: TRL's checkpoint and
metrics with the ZRR and w keys, 2 CPU processes, and the fields TRL cannot honour."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

pytest.importorskip("trl")

from helpers import tiny_world  # noqa: E402
from orapo.cli import app  # noqa: E402
from orapo.config_io import ConfigError, apply_overrides, from_dict  # noqa: E402
from orapo.integrations.trl_run import check_trl_fields, trl_config  # noqa: E402
from orapo.train.config import TrainConfig  # noqa: E402
from test_train import overrides as train_overrides  # noqa: E402

KEYS = ("zrr/raw", "zrr/ema", "mix/w")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("trl_world"))


def overrides(world, **extra) -> list[str]:
    """test_train's tiny run, on the TRL engine."""
    trl = {
        "trainer.engine": "trl",
        "model.device": "cpu",
        "trainer.steps": 3,
        "trainer.save_every": 2,
        "trainer.report_to": "[tensorboard]",
        "eval.before": "false",
        "eval.shuffled": "false",
        "eval.examples": 1,
    }
    return train_overrides(world, **{**trl, **extra})


@pytest.mark.slow
def test_train_through_trl_writes_checkpoint_and_zrr_metrics(world, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(out), *overrides(world)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "trl" and summary["steps"] == 3
    assert 0.0 <= summary["final"]["f1"] <= 1.0
    assert (out / "model").is_dir() and (out / "eval-final" / "metrics.json").is_file()
    checkpoint = out / "trl" / "checkpoint-2"
    assert (checkpoint / "model.safetensors").is_file()
    assert set(json.loads((checkpoint / "orapo_zrr.json").read_text())) == {
        "ema", "num_updates", "num_skipped"}  # fmt: skip
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert all(key in history[0] for key in KEYS)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "zrr/raw" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(0.05 <= r["mix/w"] <= 0.15 and 0 <= r["zrr/ema"] <= 1 for r in steps)
    assert list(out.rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_train_through_trl_on_two_processes(world, tmp_path):
    """2 CPU processes (gloo) under torchrun (accelerate's CPU launcher starts only one)."""
    out = tmp_path / "run2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "--module", "orapo", "train", "--out", str(out),
           *overrides(world, **{"trainer.steps": 2, "eval.after": "false",
                                "trainer.report_to": "[]"})]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "mix/w" in r] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["processes"] == 2


def config(world, **extra) -> TrainConfig:
    return from_dict(TrainConfig, apply_overrides({}, overrides(world, **extra)))


@pytest.mark.parametrize(
    "field, value",
    [
        ("algorithm.dynamic_sampling", "true"),
        ("trainer.rollout_budget", "64"),
        ("trainer.eval_every", "20"),
        ("model.logprob_chunk_size", "4"),
    ],
)
def test_fields_trl_cannot_honour_are_errors_naming_them(world, field, value):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        check_trl_fields(config(world, **{field: value}))


def test_sft_is_an_error_on_trl():
    cfg = TrainConfig()
    cfg.trainer.eval_every, cfg.algorithm.mode = 0, "sft"
    with pytest.raises(ConfigError, match="algorithm.mode=sft"):
        check_trl_fields(cfg)


def test_recipe_maps_to_orapo_config(world, tmp_path):
    cfg = config(world, **{"trainer.grad_accum": 2, "algorithm.mode": "grpo",
                           "algorithm.loss_reduction": "token-mean"})  # fmt: skip
    args = trl_config(cfg, tmp_path, num_processes=2, trackers=[])
    assert args.per_device_train_batch_size == 2  # 4 images x K=2 over 2 processes x 2 parts
    assert args.num_generations == 2 and args.loss_type == "dapo" and args.constant_w == 0.0
    assert args.max_completion_length == 12 and args.max_steps == 3
    with pytest.raises(ConfigError, match="split evenly"):
        trl_config(cfg, tmp_path, num_processes=3, trackers=[])
