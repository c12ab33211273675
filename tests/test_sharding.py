"""Which sharding trains (issue 16, item 4): DDP and DeepSpeed ZeRO-1/2 keep whole parameters on
every process; FSDP and ZeRO-3 shard them, which rollouts (``generate`` outside the prepared
module's forward) and scoring (``get_image_features``) cannot use, so they are refused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType

from orapo.train.setup import unsupported_sharding

ACCELERATE_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def _acc(kind, stage=None):
    return SimpleNamespace(
        distributed_type=kind,
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage)),
    )


@pytest.mark.parametrize(
    ("kind", "stage", "refused"),
    [
        (DistributedType.NO, None, False),
        (DistributedType.MULTI_GPU, None, False),
        (DistributedType.MULTI_CPU, None, False),
        (DistributedType.DEEPSPEED, 2, False),
        (DistributedType.DEEPSPEED, 3, True),
        (DistributedType.FSDP, None, True),
    ],
)
def test_sharding_that_splits_parameters_is_refused(kind, stage, refused):
    assert (unsupported_sharding(_acc(kind, stage)) is not None) == refused


def test_shipped_accelerate_configs_are_supported():
    import yaml

    for path in ACCELERATE_CONFIGS.glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert cfg["distributed_type"] != "FSDP", path.name
        assert int(cfg.get("deepspeed_config", {}).get("zero_stage", 0)) < 3, path.name
        # orapo sets DeepSpeed's accumulation from trainer.grad_accum (setup.build_trainer)
        assert "gradient_accumulation_steps" not in cfg.get("deepspeed_config", {}), path.name
