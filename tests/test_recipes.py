"""Every shipped recipe loads into TrainConfig; dry runs name what is missing; overrides work."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orapo.cli import app
from orapo.config_io import ConfigError, apply_overrides, from_dict, load_yaml
from orapo.train.config import TrainConfig
from orapo.train.run import default_recipe

RECIPES = sorted(Path(__file__).parents[1].glob("configs/*.yaml")) + [default_recipe()]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(recipe):
    cfg = from_dict(TrainConfig, load_yaml(recipe))
    assert cfg.sampling.k >= 2
    assert (cfg.algorithm.w_min, cfg.algorithm.w_max, cfg.algorithm.gamma) == (0.05, 0.15, 2.0)
    assert cfg.algorithm.zrr_alpha == 0.5


def test_dry_run_reports_missing_data(tmp_path):
    recipe = Path(__file__).parents[1] / "configs" / "qwen2_5_vl_3b_mimic_1k.yaml"
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(recipe), "--dry-run", f"data.manifest={tmp_path / 'none.jsonl'}"],
    )
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # rich wraps long paths
    assert "none.jsonl does not exist" in output
    assert "name_or_path: Qwen/Qwen2.5-VL-3B-Instruct" in output


def test_overrides_and_errors_name_the_field():
    cfg = from_dict(TrainConfig, apply_overrides({}, ["trainer.lr=2e-3", "sampling.k=4"]))
    assert cfg.trainer.lr == 0.002 and cfg.sampling.k == 4
    with pytest.raises(ConfigError, match=r"unknown field 'trainer.lrr'.*valid fields here"):
        from_dict(TrainConfig, apply_overrides({}, ["trainer.lrr=1"]))
    with pytest.raises(ConfigError, match=r"trainer.steps: expected an integer"):
        from_dict(TrainConfig, apply_overrides({}, ["trainer.steps=many"]))
    with pytest.raises(ConfigError, match="algorithm.mode: 'ppo' is not one of"):
        from_dict(TrainConfig, apply_overrides({}, ["algorithm.mode=ppo"]))
    with pytest.raises(ConfigError, match="sampling.k >= 2"):
        from_dict(TrainConfig, apply_overrides({}, ["sampling.k=1"]))


def test_partial_section_keeps_the_field_default():
    cfg = from_dict(TrainConfig, apply_overrides({}, ["model.lora.train_vision=true"]))
    assert cfg.model.lora.train_vision is True
    assert cfg.model.lora.enabled is False  # ModelConfig's default, not LoraSettings' (True)


def test_describe_lists_every_field():
    result = CliRunner().invoke(app, ["train", "--describe"])
    assert result.exit_code == 0
    for name in ("algorithm.w_min", "trainer.mu", "sampling.k", "model.lora.r"):
        assert name in result.output
