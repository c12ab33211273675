"""User errors print one line and exit 1; tracebacks are for bugs (``--debug`` shows them)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from orapo.cli import app
from orapo.config_io import ConfigError
from orapo.errors import DEBUG_ENV


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    """Debug off, and ``--debug``'s write to the environment undone after the test."""
    monkeypatch.setenv(DEBUG_ENV, "")


def one_line(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def test_bad_value_and_typo_fail_in_dry_run_with_one_line():
    assert one_line(["train", "trainer.lr=abc", "--dry-run"]) == (
        "error: trainer.lr: expected a number, got 'abc'"
    )
    line = one_line(["train", "algorithm.loss_reduction=dapoo", "--dry-run"])
    assert line.startswith("error: algorithm.loss_reduction: 'dapoo' is not one of ")
    assert "dapo" in line and "dr_grpo" in line
    for override, valid in (
        ("algorithm.dpo_negatives=failed", "zero-reward, all, below"),
        ("algorithm.reward=bleu4", "bleu, facts, rouge_l"),
        ("algorithm.mode=ppo", "orapo, grpo, sft"),
        ("trainer.lr_schedule=step", "constant, linear, cosine"),
        ("trainer.report_to=[tb]", "tensorboard, wandb, mlflow"),
        ("model.dtype=fp8", "auto, float32, bfloat16, float16"),
    ):
        assert one_line(["train", override, "--dry-run"]).endswith(f"is not one of {valid}")


def test_resume_without_a_config_is_one_line(tmp_path):
    line = one_line(["train", "--resume", str(tmp_path)])
    assert line == f"error: --resume {tmp_path}: no config.yaml there (is it a run directory?)"


def test_debug_shows_the_traceback(monkeypatch):
    result = CliRunner().invoke(app, ["--debug", "train", "trainer.lr=abc"])
    assert isinstance(result.exception, ConfigError)
    monkeypatch.setenv(DEBUG_ENV, "")
    assert "Traceback" not in one_line(["train", "trainer.lr=abc"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    result = CliRunner().invoke(app, ["train", "trainer.lr=abc"])
    assert isinstance(result.exception, ConfigError)
