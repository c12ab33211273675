"""The commands written at the top of each 3B recipe run that recipe (issue 16, item 8): the
train command names the recipe itself, and the subset command writes the manifest it reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orapo.config_io import load_yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_documented_commands_run_this_recipe(recipe):
    text = recipe.read_text(encoding="utf-8")
    named = re.findall(r"orapo train\s*\\?\s*#?\s*--config (\S+)", text)
    assert named == [f"configs/{recipe.name}"]
    subset = re.search(r"orapo data subset .*?-o (\S+)", text, flags=re.S)
    if subset:
        assert subset.group(1) == load_yaml(recipe)["data"]["manifest"]
