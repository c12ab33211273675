"""``python -m orapo.model.bench`` times images of the recipe's size (issue 16, item 6): its
images are as large as the processor's ``max_pixels`` (``--max-pixels``, else the recipe's),
never the checkpoint's own bound (12.8 M px on Qwen2.5-VL: ~16k image tokens per image)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from orapo.model import bench, build_demo_model

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "qwen2_5_vl_3b_mimic_1k.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = ["FINDINGS: The lungs are clear. IMPRESSION: Normal."] * 20
    return str(build_demo_model(tmp_path_factory.mktemp("m") / "tiny", texts, preset="tiny"))


def test_recipe_model_section_is_what_is_timed(tiny):
    cfg = bench.model_config(bench.parse_args(["--config", str(RECIPE), "--model", tiny]), tiny)
    assert cfg.name_or_path == tiny
    assert cfg.max_pixels == 200704 and cfg.dtype == "bfloat16"
    assert cfg.lora.enabled and cfg.lora.r == 64 and cfg.gradient_checkpointing
    args = bench.parse_args(["--config", str(RECIPE), "--max-pixels", "12544"])
    assert bench.model_config(args, None).max_pixels == 12544


def test_images_honour_max_pixels(tiny, capsys):
    common = ["--model", tiny, "-b", "1", "-k", "2", "--new-tokens", "2", "--repeats", "1"]
    bench.main([*common, "--max-pixels", str(112 * 112)])
    assert "images 112x112 px" in capsys.readouterr().out
    bench.main(common)  # the tiny checkpoint's own bound: 56 x 56
    assert "images 56x56 px" in capsys.readouterr().out
