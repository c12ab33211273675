"""Reduced-precision training keeps small updates (issue 16, item 2).

With ``model.dtype: bfloat16`` a trainable policy keeps float32 master weights and computes its
forward in bfloat16 under autocast (``Policy.autocast``); frozen weights stay in bfloat16. An
AdamW step of lr 5e-5 on weights of ~0.02 is below half a bfloat16 step, so updating bfloat16
weights in place (the old behaviour) rounds most of it away.
"""

from __future__ import annotations

import pytest
import torch

from fixed_step import tiny_trainer
from helpers import tiny_world
from orapo.model.loading import vision_tower

pytestmark = pytest.mark.slow

BF16 = {
    "model.dtype": "bfloat16",
    "trainer.lr": 5e-5,
    "trainer.warmup_steps": 0,
    "algorithm.mode": "sft",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _record_matmul_dtypes(policy) -> list[torch.dtype]:
    """Output dtypes of the language model's first query projection, call by call."""
    seen: list[torch.dtype] = []
    layer = policy.core.model.language_model.layers[0].self_attn.q_proj
    layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def _changed_share(before: list[torch.Tensor], after: list[torch.Tensor]) -> float:
    changed = sum(int((a != b).sum()) for a, b in zip(after, before, strict=True))
    return changed / sum(b.numel() for b in before)


def test_bf16_full_finetuning_keeps_float32_master_weights(world, tmp_path):
    trainer = tiny_trainer(
        *map(str, world), tmp_path / "run", **BF16, **{"model.lora.enabled": "false"}
    )
    policy = trainer.policy
    params = policy.trainable_parameters()
    assert policy.mixed_precision and policy.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in params)
    assert all(p.dtype == torch.bfloat16 for p in vision_tower(policy.core).parameters())
    seen = _record_matmul_dtypes(policy)
    before = [p.detach().clone() for p in params]
    grads: list[torch.Tensor] = []
    step = trainer.optimizer.step

    def keep_grads_then_step(*args, **kwargs):
        grads.extend(p.grad.detach().clone() for p in params)
        return step(*args, **kwargs)

    trainer.optimizer.step = keep_grads_then_step
    trainer.train_step(trainer.next_batch())
    assert seen and all(d == torch.bfloat16 for d in seen)  # the compute is bfloat16
    assert _changed_share(before, [p.detach() for p in params]) >= 0.99

    # Not vacuous: the same AdamW step on bfloat16 weights in place loses most of the update.
    low = [torch.nn.Parameter(b.bfloat16()) for b in before]
    for p, g in zip(low, grads, strict=True):
        p.grad = g.bfloat16()
    torch.optim.AdamW(low, lr=5e-5, weight_decay=0.0).step()
    assert _changed_share([b.bfloat16() for b in before], [p.detach() for p in low]) < 0.9


def test_bf16_lora_adapters_train_in_float32_under_autocast(world, tmp_path):
    extra = {"model.lora.enabled": "true", "model.lora.r": 4, "model.lora.dropout": 0.0}
    trainer = tiny_trainer(*map(str, world), tmp_path / "run", **BF16, **extra)
    policy = trainer.policy
    params = policy.trainable_parameters()
    assert policy.is_lora and policy.mixed_precision
    assert all(p.dtype == torch.float32 for p in params)
    frozen = [p for p in policy.model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    seen = _record_matmul_dtypes(policy)
    before = [p.detach().clone() for p in params]
    for _ in range(2):  # lora_B starts at 0, so lora_A gets its first gradient on step 2
        trainer.train_step(trainer.next_batch())
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert _changed_share(before, [p.detach() for p in params]) >= 0.99


def test_float32_policy_does_not_autocast(world, tmp_path):
    """The default CPU path (dtype auto = float32) runs exactly as before: no autocast."""
    trainer = tiny_trainer(*map(str, world), tmp_path / "run", **{"algorithm.mode": "sft"})
    policy = trainer.policy
    assert not policy.mixed_precision and policy.compute_dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    with policy.autocast():
        assert not torch.is_autocast_enabled("cpu")
